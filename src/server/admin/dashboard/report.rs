//! The shapes of `/dashboard/data`: what the page reads (the fields are
//! listed in the module doc of [`super`]).

use std::collections::HashMap;

use serde::Serialize;

#[derive(Serialize)]
pub(super) struct ConfigReport {
    pub(super) version: Option<String>,
    pub(super) rules: usize,
    pub(super) loaded_unix_seconds: Option<f64>,
    pub(super) last_outcome: Option<crate::server::ReloadOutcome>,
    pub(super) last_trigger: Option<String>,
    pub(super) last_attempt_unix_seconds: Option<f64>,
    pub(super) last_error: Option<String>,
    pub(super) successes: u64,
    pub(super) failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) xds: Option<crate::server::XdsStatus>,
}

#[derive(Serialize)]
pub(super) struct StoreReport {
    pub(super) reachable: bool,
    pub(super) errors_total: u64,
    /// `None` (JSON `null`): the store does not track its counters (Redis).
    pub(super) counters: Option<u64>,
    pub(super) evictions_total: u64,
}

#[derive(Serialize, Default)]
pub(super) struct Answers<T> {
    pub(super) ok: T,
    pub(super) over_limit: T,
    pub(super) invalid: T,
    pub(super) error: T,
}

#[derive(Serialize)]
pub(super) struct RequestsReport {
    pub(super) totals: Answers<u64>,
    pub(super) per_second: Answers<f64>,
}

#[derive(Serialize)]
pub(super) struct LatencyReport {
    pub(super) count: u64,
    pub(super) p50_seconds: Option<f64>,
    pub(super) p90_seconds: Option<f64>,
    pub(super) p99_seconds: Option<f64>,
}

#[derive(Serialize)]
pub(super) struct RuleReport {
    pub(super) domain: String,
    pub(super) rule: String,
    pub(super) totals: RuleTotalsReport,
    pub(super) per_second: RuleRates,
    pub(super) over_limit_share: Option<f64>,
    pub(super) near_limit_share: Option<f64>,
}

#[derive(Serialize)]
pub(super) struct RuleTotalsReport {
    pub(super) hits: u64,
    pub(super) over_limit: u64,
    pub(super) near_limit: u64,
    pub(super) within_limit: u64,
    pub(super) shadow_mode: u64,
}

#[derive(Serialize)]
pub(super) struct RuleRates {
    pub(super) hits: f64,
    pub(super) over_limit: f64,
    pub(super) near_limit: f64,
    pub(super) within_limit: f64,
}

#[derive(Serialize)]
pub(super) struct TopReport {
    pub(super) capacity: usize,
    pub(super) skipped_total: u64,
    pub(super) entries: Vec<TopEntryReport>,
}

#[derive(Serialize)]
pub(super) struct EntryReport {
    pub(super) key: String,
    pub(super) value: String,
    /// The value's full length in bytes, when `value` was shortened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) value_bytes: Option<usize>,
}

#[derive(Serialize)]
pub(super) struct TopEntryReport {
    pub(super) domain: String,
    pub(super) rule: String,
    pub(super) entries: Vec<EntryReport>,
    pub(super) used: u64,
    pub(super) limit: u64,
    pub(super) remaining: u64,
    pub(super) usage_ratio: f64,
    pub(super) over_limit: bool,
    pub(super) reset_after_seconds: f64,
    pub(super) seen_seconds_ago: f64,
}

#[derive(Serialize, Default)]
pub(super) struct HistoryReport {
    pub(super) t: Vec<f64>,
    pub(super) seconds: Vec<f64>,
    pub(super) ok: Vec<u64>,
    pub(super) over_limit: Vec<u64>,
    pub(super) invalid: Vec<u64>,
    pub(super) error: Vec<u64>,
    pub(super) p50_seconds: Vec<Option<f64>>,
    pub(super) p90_seconds: Vec<Option<f64>>,
    pub(super) p99_seconds: Vec<Option<f64>>,
    pub(super) counters: Vec<u64>,
    pub(super) rules: HashMap<String, RuleHistory>,
}

#[derive(Serialize, Default, Clone)]
pub(super) struct RuleHistory {
    pub(super) hits: Vec<u64>,
    pub(super) over_limit: Vec<u64>,
    pub(super) near_limit: Vec<u64>,
    pub(super) within_limit: Vec<u64>,
}
