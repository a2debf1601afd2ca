//! The live dashboard on the admin server: `GET /dashboard`, one page of
//! HTML, CSS and vanilla JS embedded in the binary (no CDN, works
//! air-gapped), and `GET /dashboard/data`, the JSON it polls every two
//! seconds, which scripts can use as well.
//!
//! A sampler task reads the [`Metrics`]' readable totals once a second and
//! keeps the per-second differences in a ring of [`HISTORY_SECONDS`]
//! samples, so memory is bounded by the history length and the number of
//! rules, never by traffic. The top-K closest to their limits lives in
//! [`Metrics::top`].
//!
//! # `GET /dashboard/data[?step=S]`
//!
//! All counts are exact integers; rates are per second.
//!
//! | field | meaning |
//! | --- | --- |
//! | `generated_unix_seconds`, `started_unix_seconds` | wall-clock time of this answer and of the server's start |
//! | `window_seconds` | the recent window (60 s) of `per_second` rates, shares and latency quantiles |
//! | `step_seconds`, `history_seconds` | the resolution of `history` (`?step=1..60`, default 5) and how far back it goes (600) |
//! | `serving` | the server accepts traffic (rules loaded, store reachable when required, not shutting down) |
//! | `config` | `version` (hash of the loaded files), `rules` (how many), `loaded_unix_seconds`, `last_outcome` (`success`/`failure`), `last_trigger`, `last_attempt_unix_seconds`, `last_error` (text of the failed load), `successes`, `failures`, and with an xDS source `xds` (the stream: `server`, `connected`, `accepted_version`, `rejected_version`, `last_nack_error`, `acks`, `nacks`, `stream_failures`, ...) |
//! | `store` | `reachable`, `errors_total`, `counters` (held now; `null` when the store does not track them: Redis), `evictions_total` |
//! | `requests` | `totals` and `per_second` of `ok`, `over_limit`, `invalid`, `error` |
//! | `latency` | `count` of decisions in the window and `p50_seconds`, `p90_seconds`, `p99_seconds` (`null` without decisions; log buckets at most 25% wide, interpolated) |
//! | `rules[]` | per rule: `domain`, `rule` (its id), `totals` {`hits`, `over_limit`, `near_limit`, `within_limit`, `shadow_mode`}, `per_second` {`hits`, `over_limit`, `near_limit`, `within_limit`}, `over_limit_share` and `near_limit_share` (of the window's hits; `null` without hits), sorted by over-limit share, then hits |
//! | `request_overrides[]` | hits on request limit overrides (a descriptor's `limit` from Envoy's route config), per domain, as `rules[]` reports them (`rule`: `<domain>.(override)`); they are not configured rules, so not listed among them |
//! | `top` | `capacity` (K), `skipped_total` (offers dropped on a busy lock), `entries[]`: `domain`, `rule`, `entries` [{`key`, `value`}], `used`, `limit`, `remaining`, `usage_ratio` (`used / limit`), `over_limit`, `reset_after_seconds`, `seen_seconds_ago`; closest to the limit first, dropped when their window resets |
//! | `history` | arrays, one element per step, oldest first: `t` (start, Unix seconds), `seconds` (time covered), `ok`, `over_limit`, `invalid`, `error` (counts), `p50_seconds`, `p90_seconds`, `p99_seconds`, `counters`; `rules` maps each rule with hits in the history to {`hits`, `over_limit`, `near_limit`, `within_limit`} counts |
//!
//! Descriptor values in `top` are request values: they appear here, on the
//! loopback admin server, and never in metric labels. Keys and values over
//! 256 bytes are cut there (ending in `…`), and `value_bytes` gives the
//! value's full length.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod report;

use super::AdminState;
use crate::decide::OVERRIDE_RULE_ID;
use crate::decide::RateLimiter;
use crate::limit::NANOS_PER_SECOND;
use crate::observe::live::{LATENCY_BUCKETS, quantile};
use crate::observe::metrics::{Metrics, RequestTotals, RuleCounts, RuleTotals};
use crate::store::CounterStore;
use report::{
    Answers, ConfigReport, EntryReport, HistoryReport, LatencyReport, RequestsReport, RuleHistory,
    RuleRates, RuleReport, RuleTotalsReport, StoreReport, TopEntryReport, TopReport,
};

/// Seconds of history kept (one sample a second).
pub(crate) const HISTORY_SECONDS: usize = 600;
/// The window of the rates, shares and latency quantiles.
const WINDOW_SECONDS: usize = 60;
/// The default resolution of `history`.
const DEFAULT_STEP: u64 = 5;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");
/// Where the page finds its data inlined on first load.
const DATA_MARKER: &str = "{{INITIAL_DATA}}";

/// The dashboard's state: the history ring.
pub(crate) struct Dashboard {
    started_unix_seconds: f64,
    history: Mutex<History>,
}

struct History {
    samples: VecDeque<Sample>,
    /// Totals at the last sample.
    last: Totals,
    last_unix_seconds: f64,
}

#[derive(Default)]
struct Totals {
    rules: HashMap<Arc<str>, RuleCounts>,
    requests: RequestTotals,
    latency: Vec<u64>,
}

/// What happened in one interval (normally a second).
struct Sample {
    unix_seconds: f64,
    seconds: f64,
    /// Rules with hits in the interval: hits, over, near, within.
    rules: Vec<(Arc<str>, [u64; 4])>,
    /// ok, over_limit, invalid, error.
    requests: [u64; 4],
    /// Non-empty latency buckets: (bucket, count).
    latency: Vec<(u8, u64)>,
    counters: u64,
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn requests_array(r: &RequestTotals) -> [u64; 4] {
    [r.ok, r.over_limit, r.invalid, r.error]
}

impl Dashboard {
    pub(crate) fn new() -> Dashboard {
        let now = unix_seconds();
        Dashboard {
            started_unix_seconds: now,
            history: Mutex::new(History {
                samples: VecDeque::with_capacity(HISTORY_SECONDS),
                last: Totals {
                    latency: vec![0; LATENCY_BUCKETS],
                    ..Totals::default()
                },
                last_unix_seconds: now,
            }),
        }
    }

    /// Records what changed since the last sample.
    fn sample(&self, metrics: &Metrics, counters: u64) {
        let now = unix_seconds();
        let rules = metrics.rule_totals();
        let requests = metrics.request_totals();
        let latency = metrics.latency_counts();
        let mut history = self.history.lock();
        let mut sample = Sample {
            unix_seconds: history.last_unix_seconds,
            seconds: (now - history.last_unix_seconds).max(0.0),
            rules: Vec::new(),
            requests: [0; 4],
            latency: Vec::new(),
            counters,
        };
        let mut next_rules = HashMap::with_capacity(rules.len());
        for total in rules {
            let before = history
                .last
                .rules
                .get(&total.rule)
                .copied()
                .unwrap_or_default();
            let c = &total.counts;
            let delta = [
                c.hits.saturating_sub(before.hits),
                c.over_limit.saturating_sub(before.over_limit),
                c.near_limit.saturating_sub(before.near_limit),
                c.within_limit.saturating_sub(before.within_limit),
            ];
            if delta.iter().any(|&d| d > 0) {
                sample.rules.push((Arc::clone(&total.rule), delta));
            }
            next_rules.insert(total.rule, total.counts);
        }
        let before = requests_array(&history.last.requests);
        for (i, now_count) in requests_array(&requests).into_iter().enumerate() {
            sample.requests[i] = now_count.saturating_sub(before[i]);
        }
        for (bucket, (&now_count, &before)) in
            latency.iter().zip(history.last.latency.iter()).enumerate()
        {
            let delta = now_count.saturating_sub(before);
            if delta > 0 {
                sample.latency.push((bucket as u8, delta));
            }
        }
        history.last = Totals {
            rules: next_rules,
            requests,
            latency: latency.to_vec(),
        };
        history.last_unix_seconds = now;
        if history.samples.len() == HISTORY_SECONDS {
            history.samples.pop_front();
        }
        history.samples.push_back(sample);
    }
}

/// Samples `metrics` once a second until `stop`.
pub(crate) fn spawn_sampler<S: CounterStore>(
    dashboard: Arc<Dashboard>,
    metrics: Arc<Metrics>,
    limiter: Arc<RateLimiter<S>>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: skip it so samples are a second long.
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => dashboard.sample(&metrics, limiter.store().held().unwrap_or(0)),
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        Ok(())
    })
}

#[derive(Deserialize)]
pub(crate) struct DataQuery {
    step: Option<u64>,
}

#[derive(Serialize)]
struct Data {
    generated_unix_seconds: f64,
    started_unix_seconds: f64,
    window_seconds: usize,
    step_seconds: u64,
    history_seconds: usize,
    serving: bool,
    config: ConfigReport,
    store: StoreReport,
    requests: RequestsReport,
    latency: LatencyReport,
    rules: Vec<RuleReport>,
    request_overrides: Vec<RuleReport>,
    top: TopReport,
    overrides: super::overrides::DashboardOverrides,
    history: HistoryReport,
}

/// The most of a descriptor key or value the data shows: Envoy sends
/// values of up to 64 KiB, which would swell every poll of the page.
const SHOWN_BYTES: usize = 256;

/// `text` cut to at most [`SHOWN_BYTES`] on a character boundary, with `…`
/// appended, and its original length; unchanged and `None` when it fits.
fn shortened(mut text: String) -> (String, Option<usize>) {
    let bytes = text.len();
    if bytes <= SHOWN_BYTES {
        return (text, None);
    }
    let mut end = SHOWN_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    (text, Some(bytes))
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Builds the JSON answer.
fn data<S: CounterStore>(state: &AdminState<S>, step: u64) -> Data {
    let metrics = &state.metrics;
    let history = state.dashboard.history.lock();
    let samples = &history.samples;

    // The recent window: the last WINDOW_SECONDS samples.
    let recent = samples
        .iter()
        .skip(samples.len().saturating_sub(WINDOW_SECONDS));
    let mut window_seconds = 0.0;
    let mut window_requests = [0u64; 4];
    let mut window_latency = vec![0u64; LATENCY_BUCKETS];
    let mut window_rules: HashMap<&str, [u64; 4]> = HashMap::new();
    for sample in recent {
        window_seconds += sample.seconds;
        for (sum, add) in window_requests.iter_mut().zip(sample.requests) {
            *sum += add;
        }
        for &(bucket, count) in &sample.latency {
            if let Some(sum) = window_latency.get_mut(usize::from(bucket)) {
                *sum += count;
            }
        }
        for (rule, delta) in &sample.rules {
            let sums = window_rules.entry(rule).or_default();
            for (sum, add) in sums.iter_mut().zip(delta) {
                *sum += add;
            }
        }
    }
    let rate = |count: u64| {
        if window_seconds > 0.0 {
            count as f64 / window_seconds
        } else {
            0.0
        }
    };

    // Request limit overrides count under `<domain>.(override)`: not a
    // configured rule, so reported apart from the rules.
    let (override_totals, rule_totals): (Vec<_>, Vec<_>) =
        metrics.rule_totals().into_iter().partition(|total| {
            total
                .rule
                .strip_prefix(&*total.domain)
                .and_then(|rest| rest.strip_prefix('.'))
                == Some(OVERRIDE_RULE_ID)
        });
    let report = |total: RuleTotals| {
        let [hits, over, near, within] =
            window_rules.get(&*total.rule).copied().unwrap_or_default();
        let c = total.counts;
        RuleReport {
            domain: total.domain.to_string(),
            rule: total.rule.to_string(),
            totals: RuleTotalsReport {
                hits: c.hits,
                over_limit: c.over_limit,
                near_limit: c.near_limit,
                within_limit: c.within_limit,
                shadow_mode: c.shadow_mode,
            },
            per_second: RuleRates {
                hits: rate(hits),
                over_limit: rate(over),
                near_limit: rate(near),
                within_limit: rate(within),
            },
            over_limit_share: share(over, hits),
            near_limit_share: share(near, hits),
        }
    };
    let mut rules: Vec<RuleReport> = rule_totals.into_iter().map(report).collect();
    let overrides: Vec<RuleReport> = override_totals.into_iter().map(report).collect();
    // Limiting now first, then closest to limiting, then the busiest.
    let key = |r: &RuleReport| {
        (
            r.over_limit_share.unwrap_or(0.0),
            r.near_limit_share.unwrap_or(0.0),
            r.per_second.hits,
            r.totals.over_limit,
        )
    };
    rules.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.rule.cmp(&b.rule))
    });

    let history_report = history_report(samples, step);
    drop(history);

    let now = state.limiter.now();
    let top = metrics.top();
    let entries = top
        .snapshot(now)
        .into_iter()
        .map(|entry| TopEntryReport {
            usage_ratio: entry.ratio_ppm as f64 / 1e6,
            reset_after_seconds: entry.reset_at.saturating_sub(now) as f64
                / NANOS_PER_SECOND as f64,
            seen_seconds_ago: now.saturating_sub(entry.seen_at) as f64 / NANOS_PER_SECOND as f64,
            domain: entry.domain,
            rule: entry.rule,
            entries: entry
                .entries
                .into_iter()
                .map(|(key, value)| {
                    let (key, _) = shortened(key);
                    let (value, value_bytes) = shortened(value);
                    EntryReport {
                        key,
                        value,
                        value_bytes,
                    }
                })
                .collect(),
            used: entry.used,
            limit: entry.limit,
            remaining: entry.remaining,
            over_limit: entry.over_limit,
        })
        .collect();

    let status = state.reloader.as_ref().map(|reloader| reloader.status());
    let store = state.limiter.store();
    let totals = metrics.request_totals();
    Data {
        generated_unix_seconds: unix_seconds(),
        started_unix_seconds: state.dashboard.started_unix_seconds,
        window_seconds: WINDOW_SECONDS,
        step_seconds: step,
        history_seconds: HISTORY_SECONDS,
        serving: state.health.is_serving(),
        config: ConfigReport {
            rules: state
                .limiter
                .rules()
                .domains()
                .map(|d| d.rules().len())
                .sum(),
            version: status.as_ref().and_then(|s| s.version.clone()),
            loaded_unix_seconds: status.as_ref().and_then(|s| s.last_success_unix_seconds),
            last_outcome: status.as_ref().and_then(|s| s.last_outcome),
            last_trigger: status.as_ref().and_then(|s| s.last_trigger.clone()),
            last_attempt_unix_seconds: status.as_ref().and_then(|s| s.last_attempt_unix_seconds),
            last_error: status.as_ref().and_then(|s| s.last_error.clone()),
            successes: status.as_ref().map_or(0, |s| s.successes),
            failures: status.as_ref().map_or(0, |s| s.failures),
            xds: status.as_ref().and_then(|s| s.xds.clone()),
        },
        store: StoreReport {
            reachable: state.health.store_reachable(),
            errors_total: metrics.store_errors(),
            counters: store.held(),
            evictions_total: store.evictions(),
        },
        requests: RequestsReport {
            totals: Answers {
                ok: totals.ok,
                over_limit: totals.over_limit,
                invalid: totals.invalid,
                error: totals.error,
            },
            per_second: Answers {
                ok: rate(window_requests[0]),
                over_limit: rate(window_requests[1]),
                invalid: rate(window_requests[2]),
                error: rate(window_requests[3]),
            },
        },
        latency: LatencyReport {
            count: window_latency.iter().sum(),
            p50_seconds: quantile(&window_latency, 0.5),
            p90_seconds: quantile(&window_latency, 0.9),
            p99_seconds: quantile(&window_latency, 0.99),
        },
        rules,
        request_overrides: overrides,
        top: TopReport {
            capacity: top.capacity(),
            skipped_total: top.skipped(),
            entries,
        },
        overrides: super::overrides::dashboard(&state.limiter),
        history: history_report,
    }
}

/// Groups the samples into steps of `step` seconds (by their start time).
fn history_report(samples: &VecDeque<Sample>, step: u64) -> HistoryReport {
    let mut report = HistoryReport::default();
    let mut latency = vec![0u64; LATENCY_BUCKETS];
    let mut current: Option<u64> = None;
    let mut rule_index: HashMap<Arc<str>, usize> = HashMap::new();
    let mut rule_rows: Vec<(Arc<str>, RuleHistory)> = Vec::new();
    let mut point = 0usize;
    for sample in samples {
        let slot = sample.unix_seconds as u64 / step;
        if current != Some(slot) {
            if current.is_some() {
                push_quantiles(&mut report, &latency);
                latency.iter_mut().for_each(|count| *count = 0);
                point += 1;
            }
            current = Some(slot);
            report.t.push((slot * step) as f64);
            report.seconds.push(0.0);
            report.ok.push(0);
            report.over_limit.push(0);
            report.invalid.push(0);
            report.error.push(0);
            report.counters.push(0);
            for (_, row) in &mut rule_rows {
                for series in [
                    &mut row.hits,
                    &mut row.over_limit,
                    &mut row.near_limit,
                    &mut row.within_limit,
                ] {
                    series.push(0);
                }
            }
        }
        report.seconds[point] += sample.seconds;
        report.ok[point] += sample.requests[0];
        report.over_limit[point] += sample.requests[1];
        report.invalid[point] += sample.requests[2];
        report.error[point] += sample.requests[3];
        report.counters[point] = sample.counters;
        for &(bucket, count) in &sample.latency {
            if let Some(sum) = latency.get_mut(usize::from(bucket)) {
                *sum += count;
            }
        }
        for (rule, delta) in &sample.rules {
            let index = *rule_index.entry(Arc::clone(rule)).or_insert_with(|| {
                let zeros = vec![0; point + 1];
                rule_rows.push((
                    Arc::clone(rule),
                    RuleHistory {
                        hits: zeros.clone(),
                        over_limit: zeros.clone(),
                        near_limit: zeros.clone(),
                        within_limit: zeros,
                    },
                ));
                rule_rows.len() - 1
            });
            if let Some((_, row)) = rule_rows.get_mut(index) {
                row.hits[point] += delta[0];
                row.over_limit[point] += delta[1];
                row.near_limit[point] += delta[2];
                row.within_limit[point] += delta[3];
            }
        }
    }
    if current.is_some() {
        push_quantiles(&mut report, &latency);
    }
    report.rules = rule_rows
        .into_iter()
        .map(|(rule, row)| (rule.to_string(), row))
        .collect();
    report
}

fn push_quantiles(report: &mut HistoryReport, latency: &[u64]) {
    report.p50_seconds.push(quantile(latency, 0.5));
    report.p90_seconds.push(quantile(latency, 0.9));
    report.p99_seconds.push(quantile(latency, 0.99));
}

/// Serializes for embedding in HTML: `<`, `>` and `&` escaped so a value
/// (descriptor values are request values) cannot close the script element.
fn json_for_html<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string(value)?
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026"))
}

fn step_of(query: &DataQuery) -> u64 {
    query.step.unwrap_or(DEFAULT_STEP).clamp(1, 60)
}

/// The page's Content-Security-Policy: only its own script and style, and
/// fetches to the admin server itself.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn internal(e: &serde_json::Error) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("could not serialize the dashboard data: {e}"),
    )
        .into_response()
}

/// `GET /dashboard[?step=S]`: the page, with the current data inlined so it
/// renders at once; it then polls `/dashboard/data` with the same step.
pub(crate) async fn page<S: CounterStore>(
    State(state): State<Arc<AdminState<S>>>,
    query: Result<Query<DataQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let step = query.map_or(DEFAULT_STEP, |Query(query)| step_of(&query));
    match json_for_html(&data(&state, step)) {
        Ok(json) => asset(
            "text/html; charset=utf-8",
            PAGE.replacen(DATA_MARKER, &json, 1),
        ),
        Err(e) => internal(&e),
    }
}

/// `GET /dashboard/app.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT.to_owned())
}

/// `GET /dashboard/app.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE.to_owned())
}

/// `GET /dashboard/data`.
pub(crate) async fn json<S: CounterStore>(
    State(state): State<Arc<AdminState<S>>>,
    query: Result<Query<DataQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let step = match query {
        Ok(Query(query)) => step_of(&query),
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected ?step=1..60 (seconds): {e}"),
            )
                .into_response();
        }
    };
    match serde_json::to_string(&data(&state, step)) {
        Ok(body) => {
            let mut response = (StatusCode::OK, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => internal(&e),
    }
}

#[cfg(test)]
mod tests;
