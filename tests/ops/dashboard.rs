//! The dashboard's JSON (`GET /dashboard/data`) under known traffic sent
//! over real gRPC: exact per-rule counts, the history adding up to them,
//! rules sorted by over-limit share, the bounded top-K of descriptors
//! closest to their limits (and its expiry when the window passes), store
//! health, the config version and the outcome of a bad reload.

use crate::harness;

use floodgate::health::Health;
use floodgate::limit::NANOS_PER_SECOND;
use harness::ops::{Setup, decide, eventually, start};
use harness::{http_get, http_post, request_one};
use serde_json::Value;

const OK: i32 = 1;
const OVER: i32 = 2;

const RULES: &str = "\
domain: dash
descriptors:
  - key: user
    rate_limit:
      unit: minute
      requests_per_unit: 10
  - key: api
    value: search
    rate_limit:
      unit: minute
      requests_per_unit: 5
  - key: api
    value: free
    rate_limit:
      unlimited: true
  - key: tenant
    rate_limit:
      unit: minute
      requests_per_unit: 1000
";

async fn data(server: &harness::ops::Server) -> Value {
    let (code, body) = http_get(server.admin(), "/dashboard/data?step=1").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("the dashboard data is JSON")
}

fn rule<'a>(data: &'a Value, id: &str) -> &'a Value {
    data["rules"]
        .as_array()
        .expect("rules is an array")
        .iter()
        .find(|rule| rule["rule"] == id)
        .unwrap_or_else(|| panic!("rule {id} in {data:#}"))
}

fn history_sum(data: &Value, rule: &str, series: &str) -> u64 {
    data["history"]["rules"][rule][series]
        .as_array()
        .map_or(0, |values| values.iter().filter_map(Value::as_u64).sum())
}

#[tokio::test]
async fn per_rule_counts_history_and_closest_descriptors_under_known_traffic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).expect("write");
    let server = start(&path, Setup::default()).await;
    let mut client = server.grpc().await;

    // alice: 12 against 10 (the 9th and 10th near, 2 over); bob: 3;
    // search: 5 against 5 (the 5th near); free: unlimited, not counted.
    for i in 1..=12 {
        let want = if i <= 10 { OK } else { OVER };
        assert_eq!(
            decide(&mut client, request_one("dash", &[("user", "alice")])).await,
            want
        );
    }
    for _ in 0..3 {
        assert_eq!(
            decide(&mut client, request_one("dash", &[("user", "bob")])).await,
            OK
        );
    }
    for _ in 0..5 {
        assert_eq!(
            decide(&mut client, request_one("dash", &[("api", "search")])).await,
            OK
        );
        assert_eq!(
            decide(&mut client, request_one("dash", &[("api", "free")])).await,
            OK
        );
    }

    let now = data(&server).await;
    let user = &rule(&now, "dash.user")["totals"];
    assert_eq!(
        [
            &user["hits"],
            &user["within_limit"],
            &user["near_limit"],
            &user["over_limit"]
        ],
        [15, 13, 2, 2],
        "{now:#}"
    );
    let search = &rule(&now, "dash.api_search")["totals"];
    assert_eq!(
        [
            &search["hits"],
            &search["within_limit"],
            &search["near_limit"],
            &search["over_limit"]
        ],
        [5, 5, 1, 0]
    );
    assert_eq!(rule(&now, "dash.tenant")["totals"]["hits"], 0);
    let totals = &now["requests"]["totals"];
    assert_eq!([&totals["ok"], &totals["over_limit"]], [23, 2], "{now:#}");

    // The top-K: alice over her limit, then search at its limit, then bob.
    let top = &now["top"];
    assert_eq!(top["capacity"], 10);
    let order: Vec<String> = top["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| {
            format!(
                "{}={}",
                entry["entries"][0]["key"].as_str().expect("key"),
                entry["entries"][0]["value"].as_str().expect("value")
            )
        })
        .collect();
    assert_eq!(order, ["user=alice", "api=search", "user=bob"], "{top:#}");
    let alice = &top["entries"][0];
    assert_eq!(alice["rule"], "dash.user");
    assert_eq!(alice["over_limit"], true);
    assert_eq!(alice["limit"], 10);
    assert_eq!(alice["remaining"], 0);
    // The test clock sits 30 s into the minute.
    assert_eq!(alice["reset_after_seconds"], 30.0);
    let search_entry = &top["entries"][1];
    assert_eq!(
        [
            &search_entry["used"],
            &search_entry["usage_ratio"],
            &search_entry["over_limit"]
        ],
        [&Value::from(5), &Value::from(1.0), &Value::from(false)]
    );
    assert_eq!(top["entries"][2]["usage_ratio"], 0.3);

    // Once sampled (every second), the history adds up to the totals and
    // the window's shares sort the limiting rule first.
    eventually("the sampler to record the traffic", || async {
        let sampled = data(&server).await;
        history_sum(&sampled, "dash.user", "hits") == 15
            && history_sum(&sampled, "dash.api_search", "hits") == 5
    })
    .await;
    let sampled = data(&server).await;
    assert_eq!(history_sum(&sampled, "dash.user", "over_limit"), 2);
    assert_eq!(history_sum(&sampled, "dash.user", "near_limit"), 2);
    assert_eq!(history_sum(&sampled, "dash.api_search", "near_limit"), 1);
    let history = &sampled["history"];
    let sum = |series: &str| -> u64 {
        history[series]
            .as_array()
            .expect(series)
            .iter()
            .filter_map(Value::as_u64)
            .sum()
    };
    assert_eq!((sum("ok"), sum("over_limit")), (23, 2), "{history:#}");
    assert_eq!(
        history["t"].as_array().map(Vec::len),
        history["ok"].as_array().map(Vec::len)
    );
    assert!(
        history["p99_seconds"]
            .as_array()
            .expect("p99")
            .iter()
            .any(Value::is_f64),
        "{history:#}"
    );
    let first = &sampled["rules"][0];
    assert_eq!(first["rule"], "dash.user", "{sampled:#}");
    assert_eq!(first["over_limit_share"], 2.0 / 15.0);
    assert_eq!(sampled["rules"][1]["rule"], "dash.api_search");
    assert_eq!(sampled["rules"][1]["near_limit_share"], 0.2);
    assert!(sampled["latency"]["count"].as_u64() >= Some(25));
    let p50 = sampled["latency"]["p50_seconds"].as_f64().expect("p50");
    let p99 = sampled["latency"]["p99_seconds"].as_f64().expect("p99");
    assert!(0.0 < p50 && p50 <= p99, "{:#}", sampled["latency"]);

    // Store health: reachable, no errors, one counter per live key.
    let store = &sampled["store"];
    assert_eq!(store["reachable"], true);
    assert_eq!(store["errors_total"], 0);
    assert_eq!(store["counters"], 3, "alice, bob and search: {store:#}");
    assert_eq!(sampled["serving"], true);

    // The next minute: every window has reset, so the top-K is empty.
    server.clock.advance(31 * NANOS_PER_SECOND);
    let later = data(&server).await;
    assert_eq!(
        later["top"]["entries"],
        Value::Array(Vec::new()),
        "{later:#}"
    );
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn top_k_stays_bounded_and_keeps_the_closest_of_a_flood() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).expect("write");
    let server = start(&path, Setup::default()).await;
    let mut client = server.grpc().await;

    // 50 tenants, tenant-i using i * 10 of its 1000, in a shuffled order.
    let mut order: Vec<u32> = (1..=50).collect();
    order.sort_by_key(|i| (i * 37) % 50);
    for i in order {
        let mut req = request_one("dash", &[("tenant", &format!("tenant-{i}"))]);
        req.hits_addend = i * 10;
        assert_eq!(decide(&mut client, req).await, OK);
    }
    let now = data(&server).await;
    let capacity = now["top"]["capacity"].as_u64().expect("capacity") as u32;
    let kept: Vec<&str> = now["top"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["entries"][0]["value"].as_str().expect("value"))
        .collect();
    let expected: Vec<String> = (0..capacity)
        .map(|k| format!("tenant-{}", 50 - k))
        .collect();
    assert_eq!(kept, expected, "{:#}", now["top"]);
    assert_eq!(now["top"]["entries"][0]["usage_ratio"], 0.5);
    assert_eq!(rule(&now, "dash.tenant")["totals"]["hits"], 12_750);

    // Descriptor values are on the admin page only, never metric labels.
    let metrics = server.metrics().await;
    assert!(!metrics.contains("tenant-"), "{metrics}");
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_bad_reload_and_an_unreachable_store_show_in_the_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).expect("write");
    let health = Health::new();
    let server = start(
        &path,
        Setup {
            watch: false,
            health: health.clone(),
            ..Setup::default()
        },
    )
    .await;

    let before = data(&server).await;
    let config = &before["config"];
    assert_eq!(config["last_outcome"], "success");
    assert_eq!(config["rules"], 4);
    let version = config["version"].as_str().expect("a version").to_owned();
    assert_eq!(version.len(), 16, "{config:#}");
    assert_eq!(config["last_error"], Value::Null);

    std::fs::write(&path, "domain: dash\ndescriptors:\n  - key: user\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n")
        .expect("write a bad config");
    let (code, body) = http_post(server.admin(), "/reload", "").await;
    assert_eq!(code, 422, "{body}");
    let after = data(&server).await;
    let config = &after["config"];
    assert_eq!(config["last_outcome"], "failure", "{config:#}");
    assert_eq!(
        config["version"],
        version.as_str(),
        "the old rules serve on"
    );
    assert_eq!(config["failures"], 1);
    let error = config["last_error"].as_str().expect("the error text");
    assert!(
        error.contains("rules.yaml") && error.contains("fortnight"),
        "{error}"
    );
    assert_eq!(after["store"]["reachable"], true);

    health.set_store_reachable(false);
    let down = data(&server).await;
    assert_eq!(down["store"]["reachable"], false);
    server.running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_the_data_inlined() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).expect("write");
    let server = start(&path, Setup::default()).await;
    let mut client = server.grpc().await;
    decide(
        &mut client,
        request_one("dash", &[("user", "</script><b>x")]),
    )
    .await;

    let (code, page) = http_get(server.admin(), "/dashboard").await;
    assert_eq!(code, 200);
    assert!(page.contains("<script src=\"/dashboard/app.js\""), "{page}");
    assert!(!page.contains("{{INITIAL_DATA}}"));
    // The request value is in the inlined data, escaped.
    assert!(
        page.contains("\\u003c/script\\u003e\\u003cb\\u003ex"),
        "{page}"
    );
    assert!(!page.contains("</script><b>"), "{page}");
    for asset in ["/dashboard/app.js", "/dashboard/app.css"] {
        let (code, body) = http_get(server.admin(), asset).await;
        assert_eq!(code, 200);
        assert!(body.len() > 1000, "{asset}: {body}");
    }
    let (code, body) = http_get(server.admin(), "/dashboard/data?step=x").await;
    assert_eq!(code, 400, "{body}");
    server.running.shutdown().await.expect("clean shutdown");
}

/// Envoy sends descriptor values of up to 64 KiB; the dashboard's data
/// shows the first 256 bytes of one and its full length, so a page that
/// polls every 2 s does not carry it in full.
#[tokio::test]
async fn a_64_kib_descriptor_value_is_shortened_in_the_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, RULES).expect("write");
    let server = start(&path, Setup::default()).await;
    let mut client = server.grpc().await;
    // Multi-byte characters, so the cut has to find a character boundary.
    let huge = "é".repeat(32 * 1024);
    assert_eq!(huge.len(), 64 * 1024);
    assert_eq!(
        decide(&mut client, request_one("dash", &[("user", &huge)])).await,
        OK
    );
    let (code, body) = http_get(server.admin(), "/dashboard/data").await;
    assert_eq!(code, 200);
    assert!(body.len() < 16 * 1024, "{} bytes of data", body.len());
    let data: Value = serde_json::from_str(&body).expect("JSON");
    let entry = &data["top"]["entries"][0]["entries"][0];
    assert_eq!(entry["key"], "user");
    assert_eq!(entry["value_bytes"], 64 * 1024);
    let value = entry["value"].as_str().expect("a value");
    assert!(value.ends_with('…'), "{value}");
    assert!(value.len() <= 256 + '…'.len_utf8(), "{}", value.len());
    assert!(huge.starts_with(value.trim_end_matches('…')));
    server.running.shutdown().await.expect("clean shutdown");
}
