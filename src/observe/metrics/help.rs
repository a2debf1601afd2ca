//! The `# HELP` text and type of every series, registered once per
//! recorder.

use metrics::{KeyName, SharedString};
use metrics_exporter_prometheus::PrometheusRecorder;

use super::*;

pub(super) fn describe(recorder: &PrometheusRecorder) {
    let help: [(&'static str, &'static str); 20] = [
        (RULE_HITS, "Hits on a rule's limit."),
        (RULE_OVER_LIMIT, "Hits over a rule's limit."),
        (
            RULE_NEAR_LIMIT,
            "Hits above the near-limit ratio of a rule's limit.",
        ),
        (
            RULE_WITHIN_LIMIT,
            "Hits of descriptors answered OK under a rule's limit.",
        ),
        (
            RULE_SHADOW_MODE,
            "Over-limit hits reported OK by the rule's shadow mode.",
        ),
        (
            DECISION_DURATION,
            "Time to decide one rate-limit request, in seconds.",
        ),
        (REQUESTS, "Rate-limit requests by transport and answer."),
        (STORE_ERRORS, "Requests the counter store could not answer."),
        (CONFIG_RELOADS, "Config loads by outcome."),
        (
            CONFIG_LAST_RELOAD_SUCCESS,
            "1 if the last config load succeeded, else 0.",
        ),
        (
            CONFIG_LAST_RELOAD_TIMESTAMP,
            "Unix time of the last config load attempt.",
        ),
        (
            CONFIG_EMPTY_LOADS,
            "Config loads that found no rules at all.",
        ),
        (
            CONFIG_XDS_CONNECTED,
            "1 while a stream to the xDS management server is open.",
        ),
        (
            CONFIG_XDS_STREAM_FAILURES,
            "Failed connections to, and broken streams from, the xDS management server.",
        ),
        (COUNTERS, "Counters held by the counter store."),
        (
            COUNTER_EVICTIONS,
            "Counters evicted from the store to make room.",
        ),
        (OVERRIDES, "Operators' overrides in force."),
        (
            REDIS_BATCHES,
            "Exact-mode Redis script calls that carried batched requests.",
        ),
        (
            REDIS_BATCHED_REQUESTS,
            "Requests carried by batched Redis script calls.",
        ),
        (
            OVERRIDE_CHANGES,
            "Overrides set or deleted through this instance.",
        ),
    ];
    for (name, text) in help {
        let name = KeyName::from_const_str(name);
        let text = SharedString::const_str(text);
        match name.as_str() {
            DECISION_DURATION => recorder.describe_histogram(name, None, text),
            CONFIG_LAST_RELOAD_SUCCESS
            | CONFIG_LAST_RELOAD_TIMESTAMP
            | CONFIG_XDS_CONNECTED
            | COUNTERS
            | OVERRIDES => recorder.describe_gauge(name, None, text),
            _ => recorder.describe_counter(name, None, text),
        }
    }
}
