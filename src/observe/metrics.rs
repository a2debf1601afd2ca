//! Metric names and recording, rendered as Prometheus text on `GET /metrics`.
//!
//! Each server owns one [`Metrics`]: a `metrics-exporter-prometheus`
//! recorder that is never installed globally, so several servers in one
//! process (tests) keep separate numbers. Handles are registered on it
//! directly and cached: the per-rule counters live in a map from rule id to
//! handles, rebuilt on every reload ([`Metrics::set_rules`]). The recorder
//! keeps one series per name and label set, so a rule that survives a reload
//! gets the same series back and its counters never reset.
//!
//! The transports call [`Metrics::observe`] once per request with the
//! [`Decision`]; nothing on that path formats a label.
//!
//! Beside the exporter's handles, which cannot be read back, `observe` also
//! keeps what the dashboard reads (see [`crate::observe::live`]): per-rule totals
//! and requests by answer in plain atomics ([`Metrics::rule_totals`],
//! [`Metrics::request_totals`]), decision latencies in an atomic histogram
//! ([`Metrics::latency_counts`]), and the top-K descriptors closest to
//! their limits ([`Metrics::top`]).
//!
//! The series and what they mean are listed in [`names`].
//!
//! Per-rule counting follows the reference server's stats exactly (its
//! `GetResponseDescriptorStatus`): with `before`/`after` the counter before
//! and after a request's `hits`, `limit` the limit and `near` =
//! `floor(limit × ratio)`, every descriptor with a limit adds `hits` to
//! hits; an over-limit descriptor adds `hits` to over-limit if `before >=
//! limit`, else `after - limit` to over-limit and `limit - max(near,
//! before)` to near-limit; an OK descriptor adds to near-limit what lies
//! above `near` and `hits` to within-limit. Unlimited, replaced and
//! unmatched descriptors record nothing. The `rule` label is the rule's id
//! (its config path, never a request value), so label cardinality is bounded
//! by the rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::decide::{DecideError, Decision, DescriptorDecision, OVERRIDE_RULE_ID, hits_of};
use crate::limit::Algorithm;
pub use crate::observe::counts::RuleCounts;
use crate::observe::live::{LATENCY_BUCKETS, LatencyHistogram, Offer, TopK};
use crate::observe::reference::{ReferenceStats, RuleStats};
use crate::proto::RateLimitRequest;
use crate::rules::RuleSet;
use crate::rules::overrides::ADMIN_OVERRIDE_RULE_ID;

pub mod names;
pub use names::*;

/// Descriptors kept in the top-K closest to their limits.
pub const TOP_K: usize = 10;

/// The reference's `NEAR_LIMIT_RATIO` default.
pub const DEFAULT_NEAR_LIMIT_RATIO: f32 = 0.8;

/// Decision latency buckets in seconds: a memory-store decision takes
/// microseconds, a Redis one a millisecond or more.
const DURATION_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

/// Where a request came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// gRPC `ShouldRateLimit`.
    Grpc,
    /// HTTP `POST /json`.
    Http,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Grpc, Transport::Http];

    /// The `transport` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// How a request was answered, the `code` label of [`REQUESTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestCode {
    Ok,
    OverLimit,
    Invalid,
    Error,
}

impl RequestCode {
    const ALL: [RequestCode; 4] = [
        RequestCode::Ok,
        RequestCode::OverLimit,
        RequestCode::Invalid,
        RequestCode::Error,
    ];

    const fn as_str(self) -> &'static str {
        match self {
            RequestCode::Ok => "ok",
            RequestCode::OverLimit => "over_limit",
            RequestCode::Invalid => "invalid",
            RequestCode::Error => "error",
        }
    }
}

/// One rule's counters.
struct RuleCounters {
    domain: Arc<str>,
    id: Arc<str>,
    hits: Counter,
    over_limit: Counter,
    near_limit: Counter,
    within_limit: Counter,
    shadow_mode: Counter,
    /// The same counts, readable back.
    tally: RuleTally,
    /// The reference-named stats of the rule's key, when they are kept.
    reference: Option<Arc<RuleStats>>,
}

/// A rule's counts in atomics that can be read back.
#[derive(Default)]
struct RuleTally {
    hits: AtomicU64,
    over_limit: AtomicU64,
    near_limit: AtomicU64,
    within_limit: AtomicU64,
    shadow_mode: AtomicU64,
}

impl RuleTally {
    fn read(&self) -> RuleCounts {
        RuleCounts {
            hits: self.hits.load(Ordering::Relaxed),
            over_limit: self.over_limit.load(Ordering::Relaxed),
            near_limit: self.near_limit.load(Ordering::Relaxed),
            within_limit: self.within_limit.load(Ordering::Relaxed),
            shadow_mode: self.shadow_mode.load(Ordering::Relaxed),
        }
    }
}

/// One rule's counts since the server started (or since the rule first
/// appeared in a reload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTotals {
    /// The rule's domain.
    pub domain: Arc<str>,
    /// The rule's id.
    pub rule: Arc<str>,
    /// Its counts.
    pub counts: RuleCounts,
}

/// Requests by answer since the server started, over both transports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestTotals {
    /// Answered OK.
    pub ok: u64,
    /// Answered OVER_LIMIT.
    pub over_limit: u64,
    /// Rejected as invalid.
    pub invalid: u64,
    /// Failed (the counter store could not answer).
    pub error: u64,
}

/// A server's metrics. See the module docs for the names.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    near_limit_ratio: f32,
    rules: ArcSwap<HashMap<Arc<str>, Arc<RuleCounters>>>,
    /// Indexed by `[Transport][RequestCode]`.
    requests: [[Counter; 4]; 2],
    durations: [Histogram; 2],
    store_errors: Counter,
    /// The same count, readable back.
    store_error_total: AtomicU64,
    reload_success: Counter,
    reload_failure: Counter,
    last_reload_success: Gauge,
    last_reload_timestamp: Gauge,
    empty_loads: Counter,
    /// Registered on first use, so that a server without an xDS source has
    /// no xDS series.
    xds: std::sync::OnceLock<(Gauge, Counter)>,
    /// Registered on the first render with a count, so that a store that
    /// does not track its counters (Redis) has no series rather than a 0.
    counters: std::sync::OnceLock<Gauge>,
    /// Registered on the first scrape with a Redis store.
    redis_batches: std::sync::OnceLock<(Counter, Counter)>,
    evictions: Counter,
    overrides: Gauge,
    /// `set`, `deleted`.
    override_changes: [Counter; 2],
    /// Requests by answer, indexed by `RequestCode`, readable back.
    answers: [AtomicU64; 4],
    latency: LatencyHistogram,
    top: TopK,
    /// The reference-named stats, when a sink reads them (statsd,
    /// `USE_PROMETHEUS`).
    reference: Option<Arc<ReferenceStats>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("near_limit_ratio", &self.near_limit_ratio)
            .field("rules", &self.rules.load().len())
            .finish_non_exhaustive()
    }
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

impl Metrics {
    /// Fresh metrics with no rules; `near_limit_ratio` is the reference's
    /// `NEAR_LIMIT_RATIO` (clamped to 0..=1).
    pub fn new(near_limit_ratio: f32) -> Metrics {
        // Buckets make the duration a real Prometheus histogram rather than
        // a summary, so it aggregates across instances. Setting them fails
        // only for an empty list, and ours is a non-empty constant; even
        // then a summary would still be a correct rendering.
        let recorder = match PrometheusBuilder::new().set_buckets_for_metric(
            Matcher::Full(DECISION_DURATION.to_owned()),
            DURATION_BUCKETS,
        ) {
            Ok(builder) => builder.build_recorder(),
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        describe(&recorder);

        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &metadata())
        };
        let gauge =
            |name: &'static str| recorder.register_gauge(&Key::from_name(name), &metadata());
        let requests = Transport::ALL.map(|transport| {
            RequestCode::ALL.map(|code| {
                counter(
                    REQUESTS,
                    vec![
                        Label::from_static_parts("transport", transport.as_str()),
                        Label::from_static_parts("code", code.as_str()),
                    ],
                )
            })
        });
        let durations = Transport::ALL.map(|transport| {
            recorder.register_histogram(
                &Key::from_parts(
                    DECISION_DURATION,
                    vec![Label::from_static_parts("transport", transport.as_str())],
                ),
                &metadata(),
            )
        });
        let outcome = |value: &'static str| vec![Label::from_static_parts("outcome", value)];
        Metrics {
            requests,
            durations,
            store_errors: counter(STORE_ERRORS, Vec::new()),
            store_error_total: AtomicU64::new(0),
            reload_success: counter(CONFIG_RELOADS, outcome("success")),
            reload_failure: counter(CONFIG_RELOADS, outcome("failure")),
            last_reload_success: gauge(CONFIG_LAST_RELOAD_SUCCESS),
            last_reload_timestamp: gauge(CONFIG_LAST_RELOAD_TIMESTAMP),
            empty_loads: counter(CONFIG_EMPTY_LOADS, Vec::new()),
            xds: std::sync::OnceLock::new(),
            counters: std::sync::OnceLock::new(),
            redis_batches: std::sync::OnceLock::new(),
            evictions: counter(COUNTER_EVICTIONS, Vec::new()),
            overrides: gauge(OVERRIDES),
            override_changes: ["set", "deleted"].map(|change| {
                counter(
                    OVERRIDE_CHANGES,
                    vec![Label::from_static_parts("change", change)],
                )
            }),
            rules: ArcSwap::from_pointee(HashMap::new()),
            answers: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: LatencyHistogram::default(),
            top: TopK::new(TOP_K),
            reference: None,
            near_limit_ratio: if near_limit_ratio.is_finite() {
                near_limit_ratio.clamp(0.0, 1.0)
            } else {
                DEFAULT_NEAR_LIMIT_RATIO
            },
            recorder,
            handle,
        }
    }

    /// Also keeps the reference-named stats in `reference` (before
    /// [`Metrics::set_rules`], which registers each rule's).
    pub fn with_reference(mut self, reference: Arc<ReferenceStats>) -> Metrics {
        self.reference = Some(reference);
        self
    }

    /// The reference-named stats, when kept.
    pub fn reference(&self) -> Option<&Arc<ReferenceStats>> {
        self.reference.as_ref()
    }

    /// Registers the counters of every rule of `rules` (and of each
    /// domain's request overrides), replacing the previous map. Rules that
    /// were there before keep their counters (and so their series and
    /// dashboard totals).
    pub fn set_rules(&self, rules: &RuleSet) {
        let old = self.rules.load();
        let mut map = HashMap::new();
        let mut keep = |domain: &str, id: Arc<str>| {
            let counters = match old.get(&id) {
                Some(counters) if &*counters.domain == domain => Arc::clone(counters),
                _ => Arc::new(self.rule_counters(domain, &id)),
            };
            map.insert(id, counters);
        };
        for domain in rules.domains() {
            for (rule, _) in domain.rules() {
                keep(&domain.name, Arc::clone(&rule.id));
            }
            for suffix in [OVERRIDE_RULE_ID, ADMIN_OVERRIDE_RULE_ID] {
                keep(&domain.name, Arc::from(format!("{}.{suffix}", domain.name)));
            }
        }
        // Operators' overrides in domains the config does not name keep
        // theirs ([`Metrics::add_override_domains`]).
        for (id, counters) in old.iter() {
            if id.ends_with(ADMIN_OVERRIDE_RULE_ID) && !map.contains_key(id) {
                map.insert(Arc::clone(id), Arc::clone(counters));
            }
        }
        self.rules.store(Arc::new(map));
    }

    /// Registers the override rule of each of `domains` that has none yet,
    /// so that decisions under an override in a domain the config does not
    /// name do not register it on the spot. Bounded by the overrides'
    /// own bound.
    pub fn add_override_domains<'d>(&self, domains: impl Iterator<Item = &'d str> + Clone) {
        self.rules.rcu(|old| {
            let mut map = HashMap::clone(old);
            for domain in domains.clone() {
                let id: Arc<str> = Arc::from(format!("{domain}.{ADMIN_OVERRIDE_RULE_ID}"));
                map.entry(id)
                    .or_insert_with_key(|id| Arc::new(self.rule_counters(domain, id)));
            }
            map
        });
    }

    /// Every current rule's totals, sorted by rule id.
    pub fn rule_totals(&self) -> Vec<RuleTotals> {
        let mut totals: Vec<RuleTotals> = self
            .rules
            .load()
            .values()
            .map(|counters| RuleTotals {
                domain: Arc::clone(&counters.domain),
                rule: Arc::clone(&counters.id),
                counts: counters.tally.read(),
            })
            .collect();
        totals.sort_by(|a, b| a.rule.cmp(&b.rule));
        totals
    }

    /// Requests by answer since the start.
    pub fn request_totals(&self) -> RequestTotals {
        let count = |code: RequestCode| self.answers[code as usize].load(Ordering::Relaxed);
        RequestTotals {
            ok: count(RequestCode::Ok),
            over_limit: count(RequestCode::OverLimit),
            invalid: count(RequestCode::Invalid),
            error: count(RequestCode::Error),
        }
    }

    /// Decisions by latency bucket since the start (see
    /// [`crate::observe::live::bucket_bounds`]).
    pub fn latency_counts(&self) -> [u64; LATENCY_BUCKETS] {
        self.latency.counts()
    }

    /// The descriptors closest to their limits.
    pub fn top(&self) -> &TopK {
        &self.top
    }

    fn rule_counters(&self, domain: &str, rule: &str) -> RuleCounters {
        let labels = || {
            vec![
                Label::new("domain", domain.to_owned()),
                Label::new("rule", rule.to_owned()),
            ]
        };
        let counter = |name: &'static str| {
            self.recorder
                .register_counter(&Key::from_parts(name, labels()), &metadata())
        };
        RuleCounters {
            domain: Arc::from(domain),
            id: Arc::from(rule),
            hits: counter(RULE_HITS),
            over_limit: counter(RULE_OVER_LIMIT),
            near_limit: counter(RULE_NEAR_LIMIT),
            within_limit: counter(RULE_WITHIN_LIMIT),
            shadow_mode: counter(RULE_SHADOW_MODE),
            tally: RuleTally::default(),
            reference: self.reference.as_ref().map(|r| r.rule_stats(rule)),
        }
    }

    /// Records one request: its latency, its answer and, per descriptor
    /// that a limit applied to, the rule's counters.
    pub fn observe(
        &self,
        transport: Transport,
        request: &RateLimitRequest,
        result: &Result<Decision, DecideError>,
        elapsed: Duration,
    ) {
        let t = transport as usize;
        if let Some(reference) = &self.reference {
            // The reference counts its gRPC methods, not `/json`.
            if transport == Transport::Grpc {
                reference.record_request(elapsed);
            }
            match result {
                Ok(decision) if decision.global_shadowed => reference.record_global_shadow(),
                Err(DecideError::InvalidRequest(_)) => reference.record_service_error(),
                _ => {}
            }
        }
        self.durations[t].record(elapsed.as_secs_f64());
        self.latency
            .record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        let code = match result {
            Ok(decision) => {
                // Failed open (`allow`) or closed (`deny`): answered, but a
                // store error all the same.
                if decision.store_failed {
                    self.count_store_error();
                }
                self.record_rules(request, decision);
                if decision.over_limit {
                    RequestCode::OverLimit
                } else {
                    RequestCode::Ok
                }
            }
            Err(DecideError::InvalidRequest(_)) => RequestCode::Invalid,
            Err(DecideError::Store(_)) => {
                self.count_store_error();
                RequestCode::Error
            }
        };
        self.requests[t][code as usize].increment(1);
        self.answers[code as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn count_store_error(&self) {
        self.store_errors.increment(1);
        self.store_error_total.fetch_add(1, Ordering::Relaxed);
        if let Some(reference) = &self.reference {
            reference.record_store_error();
        }
    }

    /// Requests whose counter store call failed since the start, under
    /// every `--on-store-error` policy (what `floodgate_store_errors_total`
    /// says, readable back for the dashboard).
    pub fn store_errors(&self) -> u64 {
        self.store_error_total.load(Ordering::Relaxed)
    }

    fn record_rules(&self, request: &RateLimitRequest, decision: &Decision) {
        let rules = self.rules.load();
        for (descriptor, answer) in request.descriptors.iter().zip(&decision.descriptors) {
            // Unmatched (no rule), unlimited and replaced (no limit) record
            // nothing, as in the reference.
            let (Some(rule), Some(rule_limit)) = (&answer.rule, &answer.limit) else {
                continue;
            };
            let (threshold, counts) =
                self.counts_of(answer, rule_limit, hits_of(request, descriptor));
            let fresh;
            let counters = match rules.get(&rule.id) {
                Some(counters) => &**counters,
                // A decision made with rules swapped out meanwhile: register
                // the series on the spot (rare, so the allocation is fine).
                None => {
                    fresh = self.rule_counters(&request.domain, &rule.id);
                    &fresh
                }
            };
            add(counters, counts);
            if let (Some(reference), Some(own)) = (&self.reference, &counters.reference) {
                reference.add(own, &request.domain, rule, descriptor, counts);
            }
            // Cheap unless this descriptor is among the closest to a limit.
            self.top.offer(&Offer {
                domain: &request.domain,
                rule: &rule.id,
                entries: &descriptor.entries,
                used: answer.used,
                limit: threshold,
                remaining: answer.remaining,
                over_limit: answer.over_limit || answer.shadowed,
                now: decision.context.now,
                reset_after: answer.reset_after.unwrap_or(0),
            });
        }
    }

    fn counts_of(
        &self,
        answer: &DescriptorDecision,
        rule_limit: &crate::rules::RuleLimit,
        hits: u64,
    ) -> (u64, RuleCounts) {
        let limit = &rule_limit.limit;
        // A token bucket's `used` counts tokens out of its capacity.
        let threshold = match limit.algorithm {
            Algorithm::TokenBucket => limit.burst,
            Algorithm::FixedWindow | Algorithm::SlidingWindow => limit.requests_per_unit,
        };
        // In f32 as the reference computes it, so thresholds agree exactly.
        let near = (threshold as f32 * self.near_limit_ratio).floor() as u64;
        let over = answer.over_limit || answer.shadowed;
        (
            threshold,
            RuleCounts::of(threshold, near, answer.used, hits, over, answer.shadowed),
        )
    }

    /// Records a config load attempt at `unix_seconds`.
    pub fn record_reload(&self, success: bool, unix_seconds: f64) {
        if let Some(reference) = &self.reference {
            reference.record_config_load(success);
        }
        if success {
            self.reload_success.increment(1);
        } else {
            self.reload_failure.increment(1);
        }
        self.last_reload_success
            .set(if success { 1.0 } else { 0.0 });
        self.last_reload_timestamp.set(unix_seconds);
    }

    /// Sets how many overrides are in force.
    pub fn set_override_count(&self, count: usize) {
        self.overrides.set(count as f64);
    }

    /// Counts an override set (`true`) or deleted through this instance.
    pub fn record_override_change(&self, set: bool) {
        self.override_changes[usize::from(!set)].increment(1);
    }

    /// Counts a config load that found no rules at all.
    pub fn record_empty_config(&self) {
        self.empty_loads.increment(1);
    }

    fn xds(&self) -> &(Gauge, Counter) {
        self.xds.get_or_init(|| {
            (
                self.recorder
                    .register_gauge(&Key::from_name(CONFIG_XDS_CONNECTED), &metadata()),
                self.recorder
                    .register_counter(&Key::from_name(CONFIG_XDS_STREAM_FAILURES), &metadata()),
            )
        })
    }

    /// Whether a stream to the xDS management server is open.
    pub fn set_xds_connected(&self, connected: bool) {
        self.xds().0.set(if connected { 1.0 } else { 0.0 });
    }

    /// Counts a failed connection to, or a broken stream from, the xDS
    /// management server.
    pub fn record_xds_stream_failure(&self) {
        self.xds().1.increment(1);
    }

    /// Sets the Redis store's batch counters (exact mode): script calls
    /// that carried batched requests, and the requests they carried. Only
    /// called with a Redis store, so the series are absent without one.
    pub fn set_redis_batches(&self, batches: u64, requests: u64) {
        let (calls, carried) = self.redis_batches.get_or_init(|| {
            (
                self.recorder
                    .register_counter(&Key::from_name(REDIS_BATCHES), &metadata()),
                self.recorder
                    .register_counter(&Key::from_name(REDIS_BATCHED_REQUESTS), &metadata()),
            )
        });
        calls.absolute(batches);
        carried.absolute(requests);
    }

    /// The Prometheus text exposition, with the store's gauges as given;
    /// `counters` is `None` for a store that does not track them, and the
    /// series is then absent (not 0).
    pub fn render(&self, counters: Option<u64>, evictions: u64) -> String {
        if let Some(counters) = counters {
            self.counters
                .get_or_init(|| {
                    self.recorder
                        .register_gauge(&Key::from_name(COUNTERS), &metadata())
                })
                .set(counters as f64);
        }
        self.evictions.absolute(evictions);
        self.handle.render()
    }

    /// Folds recorded latencies into the histogram. Rendering does this
    /// too; calling it periodically bounds memory when nobody scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn add(counters: &RuleCounters, counts: RuleCounts) {
    let tally = &counters.tally;
    counters.hits.increment(counts.hits);
    tally.hits.fetch_add(counts.hits, Ordering::Relaxed);
    if counts.over_limit > 0 {
        counters.over_limit.increment(counts.over_limit);
        tally
            .over_limit
            .fetch_add(counts.over_limit, Ordering::Relaxed);
    }
    if counts.near_limit > 0 {
        counters.near_limit.increment(counts.near_limit);
        tally
            .near_limit
            .fetch_add(counts.near_limit, Ordering::Relaxed);
    }
    if counts.within_limit > 0 {
        counters.within_limit.increment(counts.within_limit);
        tally
            .within_limit
            .fetch_add(counts.within_limit, Ordering::Relaxed);
    }
    if counts.shadow_mode > 0 {
        counters.shadow_mode.increment(counts.shadow_mode);
        tally
            .shadow_mode
            .fetch_add(counts.shadow_mode, Ordering::Relaxed);
    }
}

mod help;
use help::describe;

#[cfg(test)]
mod tests;
