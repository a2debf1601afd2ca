//! The reference server's stats, under its names: what an operator's
//! statsd pipeline, Prometheus alerts and Grafana dashboards built for
//! envoyproxy/ratelimit read.
//!
//! Every stat is a counter with the reference's statsd path, e.g.
//! `ratelimit.service.rate_limit.DOMAIN.KEY.total_hits`, kept in an atomic.
//! Two sinks read them, neither on the request path: [`super::statsd`]
//! sends what each counter gained since its last flush, and
//! [`ReferenceStats::render`] serves them as Prometheus text, each stat
//! named and labelled by the [`Mapper`] (the reference's default
//! statsd-to-Prometheus mapping, or `PROMETHEUS_MAPPER_YAML`) once, when the
//! stat is created. As with statsd_exporter, a stat appears in Prometheus
//! once it has counted something.
//!
//! | statsd path | default Prometheus series |
//! | --- | --- |
//! | `ratelimit.service.rate_limit.D.K.{total_hits,over_limit,near_limit,within_limit,shadow_mode}` | `ratelimit_service_rate_limit_*{domain,key1[,key2]}` |
//! | `ratelimit.service.call.should_rate_limit.{redis_error,service_error}` | `ratelimit_service_should_rate_limit_error{err_type}` |
//! | `ratelimit_server.ShouldRateLimit.total_requests` | `ratelimit_service_total_requests{grpc_method}` |
//! | `ratelimit_server.ShouldRateLimit.response_time` (Prometheus only) | `ratelimit_service_response_time_seconds{grpc_method}` histogram |
//! | `ratelimit.service.config_load_{success,error}` | `ratelimit_service_config_load_{success,error}` |
//! | `ratelimit.service.global_shadow_mode` | `ratelimit_service_global_shadow_mode` |
//!
//! The stat key `D.K` is the reference's: the matched rule's config path
//! (`key_value` for a rule with a value, `key` for one without; levels
//! joined by `.`), sanitised as the reference does (`:` and `|` become `_`,
//! and so do the dots of anything shaped like an IPv4 address). A rule with
//! `detailed_metric: true`, one with `value_to_metric: true` levels and a
//! request's limit override are keyed by the request's own values, as in
//! the reference; those keys are **bounded**:
//! at most `max_dynamic_keys` of them exist over the process's life, and a
//! request value arriving after that counts under the rule's own key (for
//! an override, `D.(override)`), so no request can grow the series without
//! bound (the reference's #275 / #1132).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::observe::counts::RuleCounts;
use crate::observe::mapper::{Mapped, Mapper, StatKind};
use crate::proto::RateLimitDescriptor;
use crate::rules::Rule;

/// The default of `max_dynamic_keys`: keys named after request values
/// (`detailed_metric`, limit overrides), five series each.
pub const DEFAULT_MAX_DYNAMIC_KEYS: usize = 1000;

const RATE_LIMIT_SCOPE: &str = "ratelimit.service.rate_limit.";
const SERVER_SCOPE: &str = "ratelimit_server.ShouldRateLimit.";

/// The default histogram buckets of statsd_exporter (Prometheus's own
/// defaults), in the mapped unit (seconds with the default mapping).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The help text of every family: they are the reference's stats, named
/// by the mapping.
const HELP: &str = "A stat of the reference server (envoyproxy/ratelimit), mapped from statsd.";

/// One counter, by its statsd path.
#[derive(Debug)]
pub struct Stat {
    name: Box<str>,
    value: AtomicU64,
    /// The value at the last statsd flush.
    flushed: AtomicU64,
    /// Its Prometheus identity; `None` when not served (no Prometheus, or a
    /// mapping drops it).
    mapped: Option<Mapped>,
}

impl Stat {
    /// The statsd path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The count since the start.
    pub fn value(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        if n > 0 {
            self.value.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// What the counter gained since the last call (statsd sends deltas).
    pub fn take_delta(&self) -> u64 {
        let now = self.value.load(Ordering::Relaxed);
        let before = self.flushed.swap(now, Ordering::Relaxed);
        now.wrapping_sub(before)
    }
}

/// The five stats of one stat key.
#[derive(Debug)]
pub struct RuleStats {
    total_hits: Arc<Stat>,
    over_limit: Arc<Stat>,
    near_limit: Arc<Stat>,
    within_limit: Arc<Stat>,
    shadow_mode: Arc<Stat>,
}

/// The response-time histogram (Prometheus only: statsd timers would be a
/// datagram per request).
#[derive(Debug, Default)]
struct ResponseTime {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// The reference-named stats of one server. See the module docs.
#[derive(Debug)]
pub struct ReferenceStats {
    mapper: Option<Mapper>,
    max_dynamic_keys: usize,
    stats: Mutex<HashMap<Box<str>, Arc<Stat>>>,
    dynamic: RwLock<HashMap<Box<str>, Arc<RuleStats>>>,
    redis_error: Arc<Stat>,
    service_error: Arc<Stat>,
    total_requests: Arc<Stat>,
    config_load_success: Arc<Stat>,
    config_load_error: Arc<Stat>,
    global_shadow_mode: Arc<Stat>,
    response_time: ResponseTime,
    response_time_mapped: Option<Mapped>,
}

impl ReferenceStats {
    /// Stats served as Prometheus text through `mapper` when it is given;
    /// at most `max_dynamic_keys` keys named after request values.
    pub fn new(mapper: Option<Mapper>, max_dynamic_keys: usize) -> ReferenceStats {
        let response_time_mapped = mapper
            .as_ref()
            .and_then(|m| m.map(&format!("{SERVER_SCOPE}response_time"), StatKind::Observer));
        let stats = Mutex::new(HashMap::new());
        let make = |name: &str| create(&stats, mapper.as_ref(), name);
        ReferenceStats {
            redis_error: make("ratelimit.service.call.should_rate_limit.redis_error"),
            service_error: make("ratelimit.service.call.should_rate_limit.service_error"),
            total_requests: make(&format!("{SERVER_SCOPE}total_requests")),
            config_load_success: make("ratelimit.service.config_load_success"),
            config_load_error: make("ratelimit.service.config_load_error"),
            global_shadow_mode: make("ratelimit.service.global_shadow_mode"),
            response_time: ResponseTime::default(),
            response_time_mapped,
            dynamic: RwLock::new(HashMap::new()),
            max_dynamic_keys,
            stats,
            mapper,
        }
    }

    /// The stats of the stat key `key` (`DOMAIN.KEY...`, sanitised here):
    /// the same ones every time for the same key, so a rule that survives
    /// a reload keeps counting where it was.
    pub fn rule_stats(&self, key: &str) -> Arc<RuleStats> {
        let key = sanitize(key);
        let stat = |suffix: &str| {
            create(
                &self.stats,
                self.mapper.as_ref(),
                &format!("{RATE_LIMIT_SCOPE}{key}.{suffix}"),
            )
        };
        Arc::new(RuleStats {
            total_hits: stat("total_hits"),
            over_limit: stat("over_limit"),
            near_limit: stat("near_limit"),
            within_limit: stat("within_limit"),
            shadow_mode: stat("shadow_mode"),
        })
    }

    /// Adds one descriptor's counts. `own` are the stats of the rule's own
    /// key; a `detailed_metric` or `value_to_metric` rule and a limit
    /// override count under the request's values instead while fewer than
    /// `max_dynamic_keys` such keys exist, else under `own`.
    pub fn add(
        &self,
        own: &RuleStats,
        domain: &str,
        rule: &Rule,
        descriptor: &RateLimitDescriptor,
        counts: RuleCounts,
    ) {
        let dynamic = if descriptor.limit.is_some() {
            self.dynamic(|key| override_key(key, domain, descriptor))
        } else if rule.detailed_metric {
            self.dynamic(|key| detailed_key(key, domain, rule, descriptor))
        } else if rule.value_to_metric.contains(&true) {
            self.dynamic(|key| value_to_metric_key(key, domain, rule, descriptor))
        } else {
            None
        };
        let stats = dynamic.as_deref().unwrap_or(own);
        stats.total_hits.add(counts.hits);
        stats.over_limit.add(counts.over_limit);
        stats.near_limit.add(counts.near_limit);
        stats.within_limit.add(counts.within_limit);
        stats.shadow_mode.add(counts.shadow_mode);
    }

    /// The stats of the key `write` builds, if it exists or there is room
    /// for it.
    fn dynamic(&self, write: impl FnOnce(&mut String)) -> Option<Arc<RuleStats>> {
        let mut key = String::new();
        write(&mut key);
        if let Some(stats) = self.dynamic.read().get(key.as_str()) {
            return Some(Arc::clone(stats));
        }
        if self.dynamic.read().len() >= self.max_dynamic_keys {
            return None;
        }
        // Built outside the write lock; a racing twin is dropped unused.
        let stats = self.rule_stats(&key);
        let mut dynamic = self.dynamic.write();
        if let Some(existing) = dynamic.get(key.as_str()) {
            return Some(Arc::clone(existing));
        }
        if dynamic.len() >= self.max_dynamic_keys {
            return None;
        }
        dynamic.insert(key.into_boxed_str(), Arc::clone(&stats));
        Some(stats)
    }

    /// Keys named after request values so far (at most `max_dynamic_keys`).
    pub fn dynamic_keys(&self) -> usize {
        self.dynamic.read().len()
    }

    /// One gRPC `ShouldRateLimit` call answered in `elapsed`.
    pub fn record_request(&self, elapsed: Duration) {
        self.total_requests.add(1);
        let rt = &self.response_time;
        let scale = self.response_time_mapped.as_ref().map_or(1.0, |m| m.scale);
        // The reference times in milliseconds; the mapping scales them.
        let value = elapsed.as_secs_f64() * 1000.0 * scale;
        for (bucket, bound) in rt.buckets.iter().zip(BUCKETS) {
            if value <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        rt.count.fetch_add(1, Ordering::Relaxed);
        rt.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// A request the counter store failed (`redis_error`).
    pub fn record_store_error(&self) {
        self.redis_error.add(1);
    }

    /// A request refused as malformed (`service_error`).
    pub fn record_service_error(&self) {
        self.service_error.add(1);
    }

    /// A request that global shadow mode answered OK.
    pub fn record_global_shadow(&self) {
        self.global_shadow_mode.add(1);
    }

    /// A config load.
    pub fn record_config_load(&self, success: bool) {
        if success {
            self.config_load_success.add(1);
        } else {
            self.config_load_error.add(1);
        }
    }

    /// Every stat, for a sink to read.
    pub fn stats(&self) -> Vec<Arc<Stat>> {
        let mut all: Vec<Arc<Stat>> = self.stats.lock().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The Prometheus text exposition of the mapped stats that counted
    /// something.
    pub fn render(&self) -> String {
        let mut families: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let stats = self.stats();
        for stat in &stats {
            let (Some(mapped), value) = (&stat.mapped, stat.value()) else {
                continue;
            };
            if value == 0 {
                continue;
            }
            let mut line = mapped.name.clone();
            write_labels(&mut line, &mapped.labels, None);
            let _ = write!(line, " {value}");
            families.entry(&mapped.name).or_default().push(line);
        }
        let mut out = String::new();
        for (name, mut lines) in families {
            lines.sort();
            let _ = writeln!(out, "# HELP {name} {HELP}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for line in lines {
                out.push_str(&line);
                out.push('\n');
            }
        }
        self.render_response_time(&mut out);
        out
    }

    fn render_response_time(&self, out: &mut String) {
        let rt = &self.response_time;
        let count = rt.count.load(Ordering::Relaxed);
        let Some(mapped) = &self.response_time_mapped else {
            return;
        };
        if count == 0 {
            return;
        }
        let name = &mapped.name;
        let _ = writeln!(out, "# HELP {name} {HELP}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bucket, bound) in rt.buckets.iter().zip(BUCKETS) {
            let mut line = format!("{name}_bucket");
            write_labels(&mut line, &mapped.labels, Some(&bound.to_string()));
            let _ = writeln!(out, "{line} {}", bucket.load(Ordering::Relaxed));
        }
        let mut line = format!("{name}_bucket");
        write_labels(&mut line, &mapped.labels, Some("+Inf"));
        let _ = writeln!(out, "{line} {count}");
        let sum = rt.sum_nanos.load(Ordering::Relaxed) as f64 / 1e6 * mapped.scale;
        for (suffix, value) in [("sum", sum.to_string()), ("count", count.to_string())] {
            let mut line = format!("{name}_{suffix}");
            write_labels(&mut line, &mapped.labels, None);
            let _ = writeln!(out, "{line} {value}");
        }
    }
}

/// Gets or creates the stat `name`.
fn create(
    stats: &Mutex<HashMap<Box<str>, Arc<Stat>>>,
    mapper: Option<&Mapper>,
    name: &str,
) -> Arc<Stat> {
    let mut stats = stats.lock();
    if let Some(stat) = stats.get(name) {
        return Arc::clone(stat);
    }
    let stat = Arc::new(Stat {
        name: name.into(),
        value: AtomicU64::new(0),
        flushed: AtomicU64::new(0),
        mapped: mapper.and_then(|m| m.map(name, StatKind::Counter)),
    });
    stats.insert(name.into(), Arc::clone(&stat));
    stat
}

/// `{a="x",b="y"}` (with `le` last for a bucket); nothing without labels.
fn write_labels(out: &mut String, labels: &[(String, String)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let le = le.map(|le| ("le", le));
    let all = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(le);
    for (index, (label, value)) in all.enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(label);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// The reference's key for a limit override: every entry as `key_value`
/// (`key` when the value is empty).
fn override_key(out: &mut String, domain: &str, descriptor: &RateLimitDescriptor) {
    out.push_str(domain);
    for entry in &descriptor.entries {
        out.push('.');
        out.push_str(&entry.key);
        if !entry.value.is_empty() {
            out.push('_');
            out.push_str(&entry.value);
        }
    }
}

/// The reference's `detailed_metric` key: every entry as `key_value`; when
/// the path has `share_threshold` wildcards, those levels keep their
/// pattern and the others drop the `_` of an empty value.
fn detailed_key(out: &mut String, domain: &str, rule: &Rule, descriptor: &RateLimitDescriptor) {
    let shared = rule.stat_levels.iter().any(|level| level.shared);
    out.push_str(domain);
    for (index, entry) in descriptor.entries.iter().enumerate() {
        out.push('.');
        match rule.stat_levels.get(index) {
            Some(level) if level.shared => out.push_str(&level.configured),
            _ => {
                out.push_str(&entry.key);
                if !shared || !entry.value.is_empty() {
                    out.push('_');
                    out.push_str(&entry.value);
                }
            }
        }
    }
}

/// The reference's `value_to_metric` key: each level as configured, except
/// that a `value_to_metric` level (not a `share_threshold` wildcard) takes
/// the request's value: `key_value`, or `key` for an empty value.
fn value_to_metric_key(
    out: &mut String,
    domain: &str,
    rule: &Rule,
    descriptor: &RateLimitDescriptor,
) {
    out.push_str(domain);
    for (level, entry) in rule.stat_levels.iter().zip(&descriptor.entries) {
        out.push('.');
        if level.value_to_metric && !level.shared {
            out.push_str(&entry.key);
            if !entry.value.is_empty() {
                out.push('_');
                out.push_str(&entry.value);
            }
        } else {
            out.push_str(&level.configured);
        }
    }
}

/// The reference's stat name sanitising: `:` and `|` become `_`, and so do
/// the dots of every run shaped like an IPv4 address (1 to 3 digits, four
/// times, joined by dots), found left to right without overlap.
pub fn sanitize(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if let Some(end) = ipv4_at(bytes, at) {
            out.extend(
                bytes[at..end]
                    .iter()
                    .map(|&b| if b == b'.' { b'_' } else { b }),
            );
            at = end;
            continue;
        }
        out.push(match bytes[at] {
            b':' | b'|' => b'_',
            b => b,
        });
        at += 1;
    }
    // Only ASCII bytes were replaced, by ASCII bytes.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The end of an IPv4-shaped run starting at `start`, matched as the
/// reference's regular expression does (greedy digit runs, backtracking).
fn ipv4_at(bytes: &[u8], start: usize) -> Option<usize> {
    fn group(bytes: &[u8], at: usize, left: usize) -> Option<usize> {
        let digits = bytes[at.min(bytes.len())..]
            .iter()
            .take(3)
            .take_while(|b| b.is_ascii_digit())
            .count();
        for len in (1..=digits).rev() {
            let end = at + len;
            if left == 0 {
                return Some(end);
            }
            if bytes.get(end) == Some(&b'.')
                && let Some(found) = group(bytes, end + 1, left - 1)
            {
                return Some(found);
            }
        }
        None
    }
    group(bytes, start, 3)
}

#[cfg(test)]
mod tests;
