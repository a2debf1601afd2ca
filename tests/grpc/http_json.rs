//! The HTTP transport over a real socket: `POST /json` in protojson (camelCase
//! and snake_case field names), its status codes, and `GET /healthcheck`.

use crate::harness;

use harness::{TestServer, http};

const RULES: &str = r"
domain: web
descriptors:
  - key: client
    rate_limit: { name: per_client, unit: minute, requests_per_unit: 2 }
";

#[tokio::test(flavor = "multi_thread")]
async fn json_camel_case_request_gets_ok_with_statuses() {
    let s = TestServer::start(RULES).await;
    let body = r#"{"domain":"web","descriptors":[{"entries":[{"key":"client","value":"a"}]}],"hitsAddend":1}"#;
    let answer = http(s.http_addr, "POST", "/json", Some(body)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{answer:?}"
    );
    let json = answer.json();
    assert_eq!(json["overallCode"], "OK");
    let status = &json["statuses"][0];
    assert_eq!(status["code"], "OK");
    assert_eq!(status["limitRemaining"], 1);
    assert_eq!(status["currentLimit"]["name"], "per_client");
    assert_eq!(status["currentLimit"]["requestsPerUnit"], 2);
    assert_eq!(status["currentLimit"]["unit"], "MINUTE");
    assert_eq!(status["durationUntilReset"], "60s");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_snake_case_request_is_accepted_and_counts_hits() {
    let s = TestServer::start(RULES).await;
    let body = r#"{"domain":"web","descriptors":[{"entries":[{"key":"client","value":"b"}],"hits_addend":2}],"hits_addend":1}"#;
    let answer = http(s.http_addr, "POST", "/json", Some(body)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let json = answer.json();
    assert_eq!(json["overallCode"], "OK");
    // The descriptor's 2 hits used the whole limit: remaining 0 is a default
    // value, which protojson omits.
    assert!(
        json["statuses"][0].get("limitRemaining").is_none(),
        "{json}"
    );
    let answer = http(
        s.http_addr,
        "POST",
        "/json",
        Some(r#"{"domain":"web","descriptors":[{"entries":[{"key":"client","value":"b"}]}]}"#),
    )
    .await;
    assert_eq!(answer.status, 429, "{answer:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_over_limit_is_429_with_over_limit_code() {
    let s = TestServer::start(RULES).await;
    let body = r#"{"domain":"web","descriptors":[{"entries":[{"key":"client","value":"c"}]},{"entries":[{"key":"other","value":"x"}]}]}"#;
    for _ in 0..2 {
        assert_eq!(
            http(s.http_addr, "POST", "/json", Some(body)).await.status,
            200
        );
    }
    let answer = http(s.http_addr, "POST", "/json", Some(body)).await;
    assert_eq!(answer.status, 429, "{answer:?}");
    let json = answer.json();
    assert_eq!(json["overallCode"], "OVER_LIMIT");
    assert_eq!(json["statuses"][0]["code"], "OVER_LIMIT");
    assert_eq!(json["statuses"][1]["code"], "OK");
    assert!(json["statuses"][1].get("currentLimit").is_none(), "{json}");
    s.shutdown().await;
}

/// The response's `dynamicMetadata`, as the gRPC answer's metadata Struct
/// reads in protojson: numbers as doubles, keys as the module doc of
/// `respond` lists them.
#[tokio::test(flavor = "multi_thread")]
async fn json_carries_the_dynamic_metadata() {
    let s = TestServer::start(RULES).await;
    let body = r#"{"domain":"web","descriptors":[{"entries":[{"key":"client","value":"m"}]},{"entries":[{"key":"other","value":"x"}]}]}"#;
    for _ in 0..2 {
        http(s.http_addr, "POST", "/json", Some(body)).await;
    }
    let answer = http(s.http_addr, "POST", "/json", Some(body)).await;
    assert_eq!(answer.status, 429, "{answer:?}");
    let mut metadata = answer.json()["dynamicMetadata"].take();
    // Seconds to the end of the current minute: the only value that depends
    // on the clock.
    let reset = metadata["descriptors"][0]
        .as_object_mut()
        .and_then(|d| d.remove("reset_seconds"))
        .and_then(|r| r.as_f64());
    assert!(
        reset.is_some_and(|r| (1.0..=60.0).contains(&r)),
        "{reset:?}"
    );
    // The exact text, so integers written as doubles are checked too.
    assert_eq!(
        metadata.to_string(),
        r#"{"descriptors":[{"code":"OVER_LIMIT","limit":"per_client","remaining":0.0,"rule":"web.client","used":3.0},{"code":"OK"}],"domain":"web","overall":"OVER_LIMIT"}"#
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_and_grpc_share_one_counter() {
    let mut s = TestServer::start(RULES).await;
    let body = r#"{"domain":"web","descriptors":[{"entries":[{"key":"client","value":"d"}]}]}"#;
    assert_eq!(
        http(s.http_addr, "POST", "/json", Some(body)).await.status,
        200
    );
    let r = s.should("web", &[&[("client", "d")]]).await;
    assert_eq!(r.statuses[0].limit_remaining, 0);
    assert_eq!(
        http(s.http_addr, "POST", "/json", Some(body)).await.status,
        429
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_request_override_by_unit_name() {
    let s = TestServer::start(RULES).await;
    let body = r#"{"domain":"web","descriptors":[{"entries":[{"key":"client","value":"e"}],"limit":{"requestsPerUnit":7,"unit":"HOUR"}}]}"#;
    let answer = http(s.http_addr, "POST", "/json", Some(body)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let json = answer.json();
    assert_eq!(json["statuses"][0]["currentLimit"]["requestsPerUnit"], 7);
    assert_eq!(json["statuses"][0]["currentLimit"]["unit"], "HOUR");
    assert_eq!(json["statuses"][0]["limitRemaining"], 6);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_json_is_400() {
    let s = TestServer::start(RULES).await;
    for body in [
        "{not json",
        r#"{"domain": 5}"#,
        r#"{"domain":"web","descriptors":[{"entries":[{"key":"client","value":"a"}]}],"hitsAddend":-1}"#,
    ] {
        let answer = http(s.http_addr, "POST", "/json", Some(body)).await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_domain_is_400() {
    let s = TestServer::start(RULES).await;
    let body = r#"{"domain":"","descriptors":[{"entries":[{"key":"client","value":"a"}]}]}"#;
    let answer = http(s.http_addr, "POST", "/json", Some(body)).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("domain"), "{answer:?}");
    let answer = http(s.http_addr, "POST", "/json", Some(r#"{"domain":"web"}"#)).await;
    assert_eq!(answer.status, 400, "no descriptors: {answer:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_is_200_ok() {
    let s = TestServer::start(RULES).await;
    let answer = http(s.http_addr, "GET", "/healthcheck", None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, "OK");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_path_is_404() {
    let s = TestServer::start(RULES).await;
    let answer = http(s.http_addr, "GET", "/nope", None).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    s.shutdown().await;
}

/// Numbers as f64, so that protobuf `Struct` numbers (`99.0`) compare
/// equal to the README's `99`.
fn numbers_as_f64(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_as_f64(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The README's quick-start answer is the real answer to its request (the
/// same as over gRPC, in protobuf JSON), dynamic metadata included, 42 s
/// before the minute ends.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_quick_start_answer_is_the_real_one() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("read README.md");
    let after = readme
        .split("RateLimitService/ShouldRateLimit\n```\n\n```json\n")
        .nth(1)
        .expect("the quick start's answer block");
    let shown: serde_json::Value =
        serde_json::from_str(after.split("\n```").next().expect("the end of the block"))
            .expect("the README's answer is JSON");
    let s = TestServer::shipped_at(harness::secs(harness::HOUR_START + 18)).await;
    let ask = r#"{"domain": "exotel", "descriptors": [{"entries": [
        {"key": "account", "value": "acme"}, {"key": "api_category", "value": "bridges"}]}]}"#;
    let answer = http(s.http_addr, "POST", "/json", Some(ask)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(numbers_as_f64(answer.json()), numbers_as_f64(shown));
    s.shutdown().await;
}
