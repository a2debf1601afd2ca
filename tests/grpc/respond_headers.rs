//! Rate-limit headers, Retry-After, 429 bodies, the reference's
//! LIMIT_RESPONSE_HEADERS_ENABLED headers and dynamic metadata, over gRPC
//! with a manual clock so every value is exact.

use crate::harness;

use std::sync::Arc;

use floodgate::decide::ServiceOptions;
use floodgate::proto::Code;
use floodgate::respond::{LimitHeaderNames, ResponseOptions};
use harness::*;
use serde_json::json;

/// 17.25 s into a minute (and into an hour).
const NOW: u64 = secs(HOUR_START + 17) + 250_000_000;

const DESCRIPTORS: &str = "\
descriptors:
  - key: user
    rate_limit: {name: per_user, unit: minute, requests_per_unit: 3}
  - key: ip
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: slow
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: fast
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: bucket
    rate_limit: {name: bucket, algorithm: token_bucket, unit: minute, requests_per_unit: 10}
  - key: shadowed
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: free
    rate_limit: {unlimited: true}
";

fn domain(response: &str) -> String {
    format!("domain: hdr\n{DESCRIPTORS}response:\n{response}")
}

const USER: &[(&str, &str)] = &[("user", "alice")];

#[tokio::test]
async fn x_ratelimit_delta_seconds_agree_with_statuses() {
    let mut h = TestServer::yaml_at(&domain("  headers: x-ratelimit\n"), NOW).await;
    for expected_remaining in ["2", "1", "0"] {
        let r = h.should("hdr", &[USER]).await;
        assert!(!is_over(&r));
        let status = &r.statuses[0];
        assert_eq!(status.limit_remaining.to_string(), expected_remaining);
        assert_eq!(status.duration_until_reset.map(|d| d.seconds), Some(43));
        assert_eq!(
            headers(&r),
            pairs(&[
                ("X-RateLimit-Limit", "3"),
                ("X-RateLimit-Remaining", expected_remaining),
                ("X-RateLimit-Reset", "43"),
            ])
        );
        assert!(r.raw_body.is_empty());
    }
    let r = h.should("hdr", &[USER]).await;
    assert!(is_over(&r));
    assert_eq!(
        headers(&r),
        pairs(&[
            ("X-RateLimit-Limit", "3"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "43"),
            ("Retry-After", "43"),
        ])
    );
    // The next window.
    h.clock.advance(secs(43));
    let r = h.should("hdr", &[USER]).await;
    assert!(!is_over(&r));
    assert_eq!(header(&r, "X-RateLimit-Remaining"), Some("2"));
    assert_eq!(header(&r, "X-RateLimit-Reset"), Some("60"));
    assert_eq!(header(&r, "Retry-After"), None);
    h.shutdown().await;
}

#[tokio::test]
async fn reset_formats_are_exact_instants() {
    let window_end = HOUR_START + 60;
    // A token bucket of 10/min is full again 6 s after one request.
    let bucket_full = NOW + secs(6);
    let cases = [
        (
            "unix_seconds",
            window_end.to_string(),
            (HOUR_START + 24).to_string(),
        ),
        (
            "unix_millis",
            (window_end * 1000).to_string(),
            bucket_full.div_ceil(1_000_000).to_string(),
        ),
        ("delta_seconds", "43".to_owned(), "6".to_owned()),
    ];
    for (format, fixed, bucket) in cases {
        let yaml = domain(&format!("  headers: x-ratelimit\n  reset: {format}\n"));
        let mut h = TestServer::yaml_at(&yaml, NOW).await;
        let r = h.should("hdr", &[USER]).await;
        assert_eq!(
            header(&r, "X-RateLimit-Reset"),
            Some(fixed.as_str()),
            "{format}"
        );
        let r = h.should("hdr", &[&[("bucket", "k")]]).await;
        assert_eq!(header(&r, "X-RateLimit-Limit"), Some("10"));
        assert_eq!(header(&r, "X-RateLimit-Remaining"), Some("9"));
        assert_eq!(
            r.statuses[0].duration_until_reset.map(|d| d.seconds),
            Some(6)
        );
        assert_eq!(
            header(&r, "X-RateLimit-Reset"),
            Some(bucket.as_str()),
            "{format}"
        );
        // Over the limit: Retry-After stays in seconds whatever the format.
        for _ in 0..3 {
            h.should("hdr", &[USER]).await;
        }
        let r = h.should("hdr", &[USER]).await;
        assert!(is_over(&r));
        assert_eq!(header(&r, "X-RateLimit-Reset"), Some(fixed.as_str()));
        assert_eq!(header(&r, "Retry-After"), Some("43"));
        h.shutdown().await;
    }
}

#[tokio::test]
async fn ietf_fields_follow_the_draft() {
    let mut h = TestServer::yaml_at(&domain("  headers: ietf\n  reset: unix_seconds\n"), NOW).await;
    let r = h.should("hdr", &[USER]).await;
    assert_eq!(
        headers(&r),
        pairs(&[
            ("RateLimit-Policy", "\"per_user\";q=3;w=60"),
            ("RateLimit", "\"per_user\";r=2;t=43"),
        ])
    );
    // An unnamed limit is the "default" policy; t is always delta seconds.
    let r = h.should("hdr", &[&[("ip", "10.0.0.1")]]).await;
    assert_eq!(
        headers(&r),
        pairs(&[
            ("RateLimit-Policy", "\"default\";q=10;w=60"),
            ("RateLimit", "\"default\";r=9;t=43"),
        ])
    );
    h.should("hdr", &[USER]).await;
    h.should("hdr", &[USER]).await;
    let r = h.should("hdr", &[USER]).await;
    assert!(is_over(&r));
    assert_eq!(
        headers(&r),
        pairs(&[
            ("RateLimit-Policy", "\"per_user\";q=3;w=60"),
            ("RateLimit", "\"per_user\";r=0;t=43"),
            ("Retry-After", "43"),
        ])
    );
    h.shutdown().await;
}

#[tokio::test]
async fn the_most_restrictive_descriptor_is_reported() {
    let mut h = TestServer::yaml_at(&domain("  headers: x-ratelimit\n"), NOW).await;
    // OK: the smallest remaining (user: 2 of 3, ip: 9 of 10).
    let r = h.should("hdr", &[&[("ip", "1")], USER]).await;
    assert_eq!(header(&r, "X-RateLimit-Limit"), Some("3"));
    assert_eq!(header(&r, "X-RateLimit-Remaining"), Some("2"));
    // Over: the one that frees up last, whatever the order.
    h.should("hdr", &[&[("slow", "s")], &[("fast", "f")]]).await;
    for order in [
        [&[("slow", "s")][..], &[("fast", "f")][..]],
        [&[("fast", "f")][..], &[("slow", "s")][..]],
    ] {
        let r = h.should("hdr", &order).await;
        assert_eq!(codes(&r), [Code::OverLimit, Code::OverLimit]);
        assert_eq!(
            headers(&r),
            pairs(&[
                ("X-RateLimit-Limit", "1"),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", "3583"),
                ("Retry-After", "3583"),
            ])
        );
    }
    // A second descriptor that is over wins over one with more remaining.
    let r = h.should("hdr", &[&[("ip", "2")], &[("slow", "s")]]).await;
    assert_eq!(header(&r, "X-RateLimit-Limit"), Some("1"));
    // No limit at all: no headers.
    let r = h
        .should("hdr", &[&[("free", "x")], &[("nomatch", "x")]])
        .await;
    assert!(headers(&r).is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn retry_after_only_when_the_answer_is_over_limit() {
    let options = ServiceOptions {
        shadow_mode: true,
        ..ServiceOptions::default()
    };
    let yaml = domain("  headers: x-ratelimit\n  body: '{\"over\": {used}}'\n");
    let mut h = TestServer::serve_at(rules(&yaml), options, NOW).await;
    h.should("hdr", &[&[("slow", "s")]]).await;
    // Global shadow mode: the status is OVER_LIMIT, the answer OK.
    let r = h.should("hdr", &[&[("slow", "s")]]).await;
    assert!(!is_over(&r));
    assert_eq!(codes(&r), [Code::OverLimit]);
    assert_eq!(
        headers(&r),
        pairs(&[
            ("X-RateLimit-Limit", "1"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "3583"),
        ])
    );
    assert!(r.raw_body.is_empty());
    h.shutdown().await;

    // A rule in shadow mode: OK with remaining 0, no Retry-After.
    let mut h = TestServer::yaml_at(&domain("  headers: x-ratelimit\n"), NOW).await;
    h.should("hdr", &[&[("shadowed", "s")]]).await;
    let r = h.should("hdr", &[&[("shadowed", "s")]]).await;
    assert_eq!(codes(&r), [Code::Ok]);
    assert_eq!(header(&r, "X-RateLimit-Remaining"), Some("0"));
    assert_eq!(header(&r, "Retry-After"), None);
    h.shutdown().await;
}

#[tokio::test]
async fn json_body_has_every_placeholder_and_a_content_type_on_429_only() {
    let yaml = domain(
        "  reset: unix_seconds\n  body: |\n    {\"limit\": {limit}, \"remaining\": {remaining}, \"reset\": {reset},\n     \"retry_after\": {retry_after}, \"rule\": \"{rule}\", \"domain\": \"{domain}\",\n     \"used\": {used}, \"window\": {window}}\n",
    );
    let mut h = TestServer::yaml_at(&yaml, NOW).await;
    for _ in 0..3 {
        let r = h.should("hdr", &[USER]).await;
        assert!(r.raw_body.is_empty());
        // headers: none, so nothing at all, not even content-type.
        assert!(headers(&r).is_empty());
    }
    let r = h.should("hdr", &[USER]).await;
    assert!(is_over(&r));
    assert_eq!(headers(&r), pairs(&[("content-type", "application/json")]));
    assert_eq!(
        body_json(&r),
        json!({"limit": 3, "remaining": 0, "reset": HOUR_START + 60, "retry_after": 43,
               "rule": "per_user", "domain": "hdr", "used": 4, "window": 60})
    );
    // An unnamed limit reports its rule id.
    for _ in 0..10 {
        h.should("hdr", &[&[("ip", "9")]]).await;
    }
    let r = h.should("hdr", &[&[("ip", "9")]]).await;
    assert_eq!(body_json(&r)["rule"], "hdr.ip");
    h.shutdown().await;
}

#[tokio::test]
async fn string_values_are_json_escaped_only_for_json() {
    let named = "domain: esc\ndescriptors:\n  - key: k\n    rate_limit: {name: 'say \"hi\" \\ now', unit: minute, requests_per_unit: 0}\n";
    let json_yaml = format!(
        "{named}response:\n  content_type: application/problem+json\n  body: '{{\"rule\": \"{{rule}}\"}}'\n"
    );
    let mut h = TestServer::yaml_at(&json_yaml, NOW).await;
    let r = h.should("esc", &[&[("k", "v")]]).await;
    assert_eq!(body_json(&r), json!({"rule": "say \"hi\" \\ now"}));
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    h.shutdown().await;

    let text_yaml = format!(
        "{named}response:\n  content_type: text/plain; charset=utf-8\n  body: 'Slow down: {{rule}} allows {{limit}} per {{window}}s ({{used}} used). {{{{rule}}'\n"
    );
    let mut h = TestServer::yaml_at(&text_yaml, NOW).await;
    let r = h.should("esc", &[&[("k", "v")]]).await;
    assert_eq!(
        String::from_utf8_lossy(&r.raw_body),
        "Slow down: say \"hi\" \\ now allows 0 per 60s (1 used). {rule}"
    );
    assert_eq!(
        header(&r, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    h.shutdown().await;
}

const REFERENCE: &str = "\
domain: ref
descriptors:
  - key: a
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: b
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: c
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: free
";

fn reference_options(shadow_mode: bool) -> Options {
    Options {
        service: ServiceOptions {
            shadow_mode,
            ..ServiceOptions::default()
        },
        response: ResponseOptions {
            limit_headers: Some(Arc::new(LimitHeaderNames {
                limit: "X-Lim".into(),
                remaining: "X-Rem".into(),
                reset: "X-Reset".into(),
            })),
            ..ResponseOptions::default()
        },
    }
}

fn reference_headers(limit: &str, remaining: &str, reset: &str) -> Vec<(String, String)> {
    pairs(&[("X-Lim", limit), ("X-Rem", remaining), ("X-Reset", reset)])
}

#[tokio::test]
async fn limit_response_headers_enabled_works_as_in_the_reference() {
    let mut h = TestServer::serve_at(rules(REFERENCE), reference_options(false), NOW).await;
    // The smallest remaining.
    let r = h.should("ref", &[&[("a", "1")], &[("b", "1")]]).await;
    assert_eq!(headers(&r), reference_headers("2", "1", "43"));
    // A tie: the first one (a: 1 of 5 left, b: 1 of 2 left).
    for _ in 0..3 {
        h.should("ref", &[&[("a", "2")]]).await;
    }
    let r = h.should("ref", &[&[("a", "2")], &[("b", "2")]]).await;
    assert_eq!(remaining(&r), [1, 1]);
    assert_eq!(headers(&r), reference_headers("5", "1", "43"));
    // The LAST over-limit status wins, not the longest wait.
    h.should("ref", &[&[("c", "x")], &[("b", "x")], &[("b", "x")]])
        .await;
    let r = h.should("ref", &[&[("c", "x")], &[("b", "x")]]).await;
    assert_eq!(codes(&r), [Code::OverLimit, Code::OverLimit]);
    assert_eq!(headers(&r), reference_headers("2", "0", "43"));
    let r = h.should("ref", &[&[("b", "x")], &[("c", "x")]]).await;
    assert_eq!(headers(&r), reference_headers("1", "0", "3583"));
    // No descriptor with a limit: no headers; and no Retry-After ever.
    let r = h.should("ref", &[&[("free", "x")], &[("none", "x")]]).await;
    assert!(headers(&r).is_empty());
    // A domain with its own headers sends those instead.
    h.shutdown().await;

    let mut sources = vec![(std::path::PathBuf::from("ref.yaml"), REFERENCE.to_owned())];
    sources.push((
        std::path::PathBuf::from("hdr.yaml"),
        domain("  headers: x-ratelimit\n"),
    ));
    let both = floodgate::config::load_sources(&sources, &Default::default()).expect("loads");
    let mut h = TestServer::serve_at(both, reference_options(false), NOW).await;
    let r = h.should("hdr", &[USER]).await;
    assert_eq!(
        headers(&r),
        pairs(&[
            ("X-RateLimit-Limit", "3"),
            ("X-RateLimit-Remaining", "2"),
            ("X-RateLimit-Reset", "43"),
        ])
    );
    h.shutdown().await;
}

#[tokio::test]
async fn limit_response_headers_are_added_before_global_shadow_mode() {
    let mut h = TestServer::serve_at(rules(REFERENCE), reference_options(true), NOW).await;
    h.should("ref", &[&[("c", "x")]]).await;
    let r = h.should("ref", &[&[("c", "x")]]).await;
    assert!(!is_over(&r));
    assert_eq!(codes(&r), [Code::OverLimit]);
    assert_eq!(headers(&r), reference_headers("1", "0", "3583"));
    let meta = metadata(&r);
    assert_eq!(meta["overall"], "OK");
    assert_eq!(meta["global_shadow"], true);
    assert_eq!(meta["descriptors"][0]["code"], "OVER_LIMIT");
    h.shutdown().await;
}

#[tokio::test]
async fn dynamic_metadata_names_rules_and_counts() {
    let mut h = TestServer::serve_at(
        rules(&domain("  headers: none\n")),
        ServiceOptions::default(),
        NOW,
    )
    .await;
    let r = h
        .should(
            "hdr",
            &[USER, &[("ip", "1")], &[("nomatch", "x")], &[("free", "x")]],
        )
        .await;
    assert_eq!(
        metadata(&r),
        json!({"domain": "hdr", "overall": "OK", "descriptors": [
            {"code": "OK", "rule": "hdr.user", "limit": "per_user", "remaining": 2, "reset_seconds": 43, "used": 1},
            {"code": "OK", "rule": "hdr.ip", "remaining": 9, "reset_seconds": 43, "used": 1},
            {"code": "OK"},
            {"code": "OK", "rule": "hdr.free", "unlimited": true},
        ]})
    );
    h.should("hdr", &[&[("slow", "s")], &[("shadowed", "s")]])
        .await;
    let r = h
        .should("hdr", &[&[("slow", "s")], &[("shadowed", "s")]])
        .await;
    assert_eq!(
        metadata(&r),
        json!({"domain": "hdr", "overall": "OVER_LIMIT", "descriptors": [
            {"code": "OVER_LIMIT", "rule": "hdr.slow", "remaining": 0, "reset_seconds": 3583, "used": 2},
            {"code": "OK", "rule": "hdr.shadowed", "remaining": 0, "reset_seconds": 43, "used": 2, "shadowed": true},
        ]})
    );
    // An unknown domain still says what happened.
    let r = h.should("nope", &[USER]).await;
    assert_eq!(
        metadata(&r),
        json!({"domain": "nope", "overall": "OK", "descriptors": [{"code": "OK"}]})
    );
    h.shutdown().await;

    let options = Options {
        service: ServiceOptions {
            shadow_mode: true,
            ..ServiceOptions::default()
        },
        response: ResponseOptions {
            dynamic_metadata: false,
            ..ResponseOptions::default()
        },
    };
    let mut h = TestServer::serve_at(rules(&domain("  headers: none\n")), options, NOW).await;
    let r = h.should("hdr", &[USER]).await;
    assert!(r.dynamic_metadata.is_none());
    h.shutdown().await;
}

/// A request larger than a token bucket's burst can never be admitted: the
/// answer says so (body and metadata) and offers no retry time, where it
/// used to say `Retry-After: 60`. A request that merely has to wait still
/// gets its Retry-After.
#[tokio::test]
async fn a_request_larger_than_the_bucket_is_told_it_can_never_fit() {
    let yaml = domain("  headers: x-ratelimit\n  body: '{\"retry_after\": {retry_after}}'\n");
    let mut h = TestServer::yaml_at(&yaml, NOW).await;
    let bucket: &[(&str, &str)] = &[("bucket", "b1")];
    let mut too_large = request("hdr", &[bucket]);
    too_large.hits_addend = 11;
    let r = h.send(too_large).await;
    assert!(is_over(&r));
    assert_eq!(header(&r, "Retry-After"), None);
    assert_eq!(header(&r, "X-RateLimit-Limit"), Some("10"));
    let body = body_json(&r);
    assert_eq!(body["never_fits"], json!(true), "{body}");
    assert_eq!(body["limit"], json!(10));
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("can never succeed")),
        "{body}"
    );
    let meta = metadata(&r);
    assert_eq!(meta["descriptors"][0]["never_fits"], json!(true), "{meta}");
    assert_eq!(meta["descriptors"][0].get("reset_seconds"), None, "{meta}");

    // The whole bucket fits once; then one more must wait 6 s.
    let mut whole = request("hdr", &[bucket]);
    whole.hits_addend = 10;
    assert!(!is_over(&h.send(whole).await));
    let r = h.should("hdr", &[bucket]).await;
    assert!(is_over(&r));
    assert_eq!(header(&r, "Retry-After"), Some("6"));
    assert_eq!(body_json(&r), json!({"retry_after": 6}));
    assert_eq!(metadata(&r)["descriptors"][0].get("never_fits"), None);
    h.shutdown().await;
}
