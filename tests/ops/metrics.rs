//! `GET /metrics` after known traffic: exact per-rule counts with the
//! reference's semantics, request codes per transport, and nothing for
//! unlimited or unmatched descriptors.

use crate::harness;

use harness::ops::{Setup, decide, metric, start};
use harness::{http_post, request, request_one};

const OK: i32 = 1;
const OVER: i32 = 2;

const RULES: &str = "\
domain: m
descriptors:
  - key: api
    value: ten
    rate_limit:
      unit: day
      requests_per_unit: 10
  - key: api
    value: shadow
    shadow_mode: true
    rate_limit:
      unit: day
      requests_per_unit: 1
  - key: api
    value: free
    rate_limit:
      unlimited: true
  - key: bulk
    rate_limit:
      unit: day
      requests_per_unit: 4
";

fn rule(id: &str) -> String {
    format!(r#"domain="m",rule="{id}""#)
}

#[tokio::test]
async fn per_rule_counts_follow_the_reference() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).expect("write");
    let server = start(&path, Setup::default()).await;
    let mut client = server.grpc().await;

    // 12 single hits on a limit of 10 (near = 8): the 9th and 10th are
    // near, the 11th and 12th over.
    for i in 1..=12 {
        let expected = if i <= 10 { OK } else { OVER };
        assert_eq!(
            decide(&mut client, request_one("m", &[("api", "ten")])).await,
            expected
        );
    }
    // Shadow mode, limit 1 (near = 0): 3 hits, all answered OK; the first
    // is within (and near, as it passes 0), the others over and shadowed.
    for _ in 0..3 {
        assert_eq!(
            decide(&mut client, request_one("m", &[("api", "shadow")])).await,
            OK
        );
    }
    // One request of 5 hits on a limit of 4 (near = 3): 0 -> 5 crosses
    // near and limit: 1 over, 4 - max(3, 0) = 1 near.
    let mut bulk = request_one("m", &[("bulk", "x")]);
    bulk.hits_addend = 5;
    assert_eq!(decide(&mut client, bulk).await, OVER);
    // Unlimited and unmatched descriptors count nothing.
    let quiet = request("m", &[&[("api", "free")], &[("nothing", "here")]]);
    assert_eq!(decide(&mut client, quiet).await, OK);
    // An invalid request (no domain) is counted by its code only.
    let invalid = client
        .should_rate_limit(request_one("", &[("api", "ten")]))
        .await;
    assert!(invalid.is_err());
    // One request over HTTP.
    let (code, _) = http_post(
        server.running.http_addr,
        "/json",
        r#"{"domain":"m","descriptors":[{"entries":[{"key":"api","value":"free"}]}]}"#,
    )
    .await;
    assert_eq!(code, 200);

    let text = server.metrics().await;
    let value = |name: &str, labels: &str| metric(&text, name, labels).unwrap_or(-1.0);
    let ten = rule("m.api_ten");
    assert_eq!(value("floodgate_rule_hits_total", &ten), 12.0, "{text}");
    assert_eq!(value("floodgate_rule_within_limit_total", &ten), 10.0);
    assert_eq!(value("floodgate_rule_near_limit_total", &ten), 2.0);
    assert_eq!(value("floodgate_rule_over_limit_total", &ten), 2.0);
    assert_eq!(value("floodgate_rule_shadow_mode_total", &ten), 0.0);

    let shadow = rule("m.api_shadow");
    assert_eq!(value("floodgate_rule_hits_total", &shadow), 3.0);
    assert_eq!(value("floodgate_rule_within_limit_total", &shadow), 1.0);
    assert_eq!(value("floodgate_rule_near_limit_total", &shadow), 1.0);
    assert_eq!(value("floodgate_rule_over_limit_total", &shadow), 2.0);
    assert_eq!(value("floodgate_rule_shadow_mode_total", &shadow), 2.0);

    let bulk = rule("m.bulk");
    assert_eq!(value("floodgate_rule_hits_total", &bulk), 5.0);
    assert_eq!(value("floodgate_rule_over_limit_total", &bulk), 1.0);
    assert_eq!(value("floodgate_rule_near_limit_total", &bulk), 1.0);
    assert_eq!(value("floodgate_rule_within_limit_total", &bulk), 0.0);

    // Registered at load, never incremented.
    let free = rule("m.api_free");
    assert_eq!(value("floodgate_rule_hits_total", &free), 0.0);

    let requests_of = |transport: &str, code: &str| {
        value(
            "floodgate_requests_total",
            &format!(r#"transport="{transport}",code="{code}""#),
        )
    };
    // 10 + 3 + 1 OK over gRPC; 2 + 1 over; 1 invalid; 1 OK over HTTP.
    assert_eq!(requests_of("grpc", "ok"), 14.0);
    assert_eq!(requests_of("grpc", "over_limit"), 3.0);
    assert_eq!(requests_of("grpc", "invalid"), 1.0);
    assert_eq!(requests_of("grpc", "error"), 0.0);
    assert_eq!(requests_of("http", "ok"), 1.0);
    assert_eq!(
        value(
            "floodgate_decision_duration_seconds_count",
            r#"transport="grpc""#
        ),
        18.0
    );
    assert!(
        text.contains("# TYPE floodgate_decision_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(value("floodgate_store_errors_total", ""), 0.0);
    // api=ten, api=shadow and bulk=x hold counters; nothing else was counted.
    assert_eq!(value("floodgate_counters", ""), 3.0);
    assert_eq!(value("floodgate_counter_evictions_total", ""), 0.0);
    assert_eq!(
        value("floodgate_config_reloads_total", r#"outcome="success""#),
        1.0
    );
    assert!(value("floodgate_config_last_reload_timestamp_seconds", "") > 1.0e9);
    server.running.shutdown().await.expect("clean shutdown");
}
