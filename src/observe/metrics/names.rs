//! The series' names, and what each means (`help.rs` gives their
//! `# HELP` text):
//!
//! | name | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `floodgate_rule_hits_total` | counter | `domain`, `rule` | hits on a rule's limit (the reference's `total_hits`) |
//! | `floodgate_rule_over_limit_total` | counter | `domain`, `rule` | hits over the limit (`over_limit`) |
//! | `floodgate_rule_near_limit_total` | counter | `domain`, `rule` | hits between `near-limit-ratio × limit` and the limit (`near_limit`) |
//! | `floodgate_rule_within_limit_total` | counter | `domain`, `rule` | hits of descriptors answered OK (`within_limit`) |
//! | `floodgate_rule_shadow_mode_total` | counter | `domain`, `rule` | over-limit hits reported OK by the rule's shadow mode (`shadow_mode`) |
//! | `floodgate_decision_duration_seconds` | histogram | `transport` | time to decide one request |
//! | `floodgate_requests_total` | counter | `transport`, `code` | requests by answer: `ok`, `over_limit`, `invalid`, `error` |
//! | `floodgate_store_errors_total` | counter | | requests the counter store could not answer, under every `--on-store-error` policy |
//! | `floodgate_config_reloads_total` | counter | `outcome` | config loads, `success` or `failure` |
//! | `floodgate_config_last_reload_success` | gauge | | 1 if the last load succeeded, else 0 |
//! | `floodgate_config_last_reload_timestamp_seconds` | gauge | | Unix time of the last load attempt |
//! | `floodgate_config_empty_loads_total` | counter | | config loads that found no rules at all while rules were serving (applied, or refused with `--refuse-empty-config`) |
//! | `floodgate_config_xds_connected` | gauge | | with an xDS rule source: 1 while a stream to the management server is open, else 0 |
//! | `floodgate_config_xds_stream_failures_total` | counter | | with an xDS rule source: connections that failed and streams that broke (each followed by a reconnect) |
//! | `floodgate_counters` | gauge | | counters held by the store (absent with Redis, which floodgate does not count: see [`crate::store::redis::RedisStore`]) |
//! | `floodgate_counter_evictions_total` | counter | | counters evicted to make room |
//! | `floodgate_redis_batches_total` | counter | | with Redis in exact mode: script calls that carried batched requests (absent without Redis) |
//! | `floodgate_redis_batched_requests_total` | counter | | with Redis in exact mode: requests those calls carried; divided by the batches, the mean batch size |
//! | `floodgate_overrides` | gauge | | operators' overrides in force (expired ones until the next change) |
//! | `floodgate_override_changes_total` | counter | `change` | overrides `set` or `deleted` through this instance |

/// Hits on a rule's limit.
pub const RULE_HITS: &str = "floodgate_rule_hits_total";
/// Hits over a rule's limit.
pub const RULE_OVER_LIMIT: &str = "floodgate_rule_over_limit_total";
/// Hits near a rule's limit.
pub const RULE_NEAR_LIMIT: &str = "floodgate_rule_near_limit_total";
/// Hits of descriptors answered OK.
pub const RULE_WITHIN_LIMIT: &str = "floodgate_rule_within_limit_total";
/// Over-limit hits reported OK by a rule's shadow mode.
pub const RULE_SHADOW_MODE: &str = "floodgate_rule_shadow_mode_total";
/// Time to decide one request.
pub const DECISION_DURATION: &str = "floodgate_decision_duration_seconds";
/// Requests by transport and answer.
pub const REQUESTS: &str = "floodgate_requests_total";
/// Requests the counter store could not answer.
pub const STORE_ERRORS: &str = "floodgate_store_errors_total";
/// Config loads by outcome.
pub const CONFIG_RELOADS: &str = "floodgate_config_reloads_total";
/// 1 if the last config load succeeded.
pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "floodgate_config_last_reload_success";
/// Unix time of the last config load attempt.
pub const CONFIG_LAST_RELOAD_TIMESTAMP: &str = "floodgate_config_last_reload_timestamp_seconds";
/// 1 while a stream to the xDS management server is open.
pub const CONFIG_XDS_CONNECTED: &str = "floodgate_config_xds_connected";
/// Failed connections to, and broken streams from, the xDS server.
pub const CONFIG_XDS_STREAM_FAILURES: &str = "floodgate_config_xds_stream_failures_total";
/// Counters held by the store.
pub const COUNTERS: &str = "floodgate_counters";
/// Config loads that found no rules at all (applied, or refused with
/// `--refuse-empty-config`).
pub const CONFIG_EMPTY_LOADS: &str = "floodgate_config_empty_loads_total";
/// Counters evicted to make room.
pub const COUNTER_EVICTIONS: &str = "floodgate_counter_evictions_total";
/// Operators' overrides in force.
pub const OVERRIDES: &str = "floodgate_overrides";
/// Override changes made through this instance, by `change`.
pub const OVERRIDE_CHANGES: &str = "floodgate_override_changes_total";
/// Exact-mode script calls that carried batched requests.
pub const REDIS_BATCHES: &str = "floodgate_redis_batches_total";
/// Requests carried by those calls.
pub const REDIS_BATCHED_REQUESTS: &str = "floodgate_redis_batched_requests_total";
