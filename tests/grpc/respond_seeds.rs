//! The shipped config/ files against the seed documents they were written
//! from: each domain's answers carry exactly the headers and 429 body its
//! provider's documentation promises. Also the courses plans and the
//! negotiated per-key override.

use crate::harness;

use floodgate::proto::{Code, RateLimitRequest, RateLimitResponse};
use harness::*;
use serde_json::json;

fn with_hits(mut request: RateLimitRequest, hits: u32) -> RateLimitRequest {
    request.hits_addend = hits;
    request
}

fn limit_name(r: &RateLimitResponse, index: usize) -> Option<&str> {
    r.statuses
        .get(index)?
        .current_limit
        .as_ref()
        .map(|l| l.name.as_str())
}

/// Seed "API Reference — Rate Limits": X-RateLimit-* with a Unix-timestamp
/// reset on every answer, Retry-After only when limited, and the JSON error
/// with `retry_after`.
#[tokio::test]
async fn courses_headers_and_429_body_match_the_seed() {
    let mut h = TestServer::shipped_at(secs(HOUR_START)).await;
    let key: &[(&str, &str)] = &[("plan", "professional"), ("api_key", "key-acme")];
    // 1000 requests in the first ten minutes of the hour, 100 a minute
    // (the burst allowance refills 100 a minute).
    for minute in 0..10 {
        let r = h.send(with_hits(request("courses", &[key]), 100)).await;
        assert!(!is_over(&r), "minute {minute}");
        assert_eq!(header(&r, "Retry-After"), None);
        assert!(r.raw_body.is_empty());
        h.clock.advance(secs(60));
    }
    let r = h.should("courses", &[key]).await;
    assert!(is_over(&r), "the hourly quota of 1000 is used up");
    let status = &r.statuses[0];
    assert_eq!(limit_name(&r, 0), Some("professional_hourly"));
    // The sliding hour admits one more once the full previous hour weighs
    // less than 999/1000: 3.6 s into the next hour, 3003.6 s from now.
    let duration = status.duration_until_reset.expect("a reset");
    assert_eq!((duration.seconds, duration.nanos), (3003, 600_000_000));
    let wait: u64 = 3004;
    let now = HOUR_START + 600;
    assert_eq!(
        headers(&r),
        pairs(&[
            ("X-RateLimit-Limit", "1000"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", &(now + wait).to_string()),
            ("Retry-After", &wait.to_string()),
            ("content-type", "application/json"),
        ])
    );
    assert_eq!(
        body_json(&r),
        json!({"error": {
            "code": "rate_limit_exceeded",
            "message": format!("API rate limit exceeded. Please retry after {wait} seconds."),
            "retry_after": wait,
        }})
    );
    h.shutdown().await;

    // A fresh key: every answer carries the headers, and they describe the
    // hourly quota ("Maximum requests allowed per hour", `headers: true`),
    // not the burst allowance, which is closer to denying; the status still
    // reports the burst.
    let mut h = TestServer::shipped_at(secs(HOUR_START)).await;
    let r = h.should("courses", &[key]).await;
    assert_eq!(limit_name(&r, 0), Some("professional_burst"));
    let hourly_reset = header(&r, "X-RateLimit-Reset")
        .and_then(|v| v.parse::<u64>().ok())
        .expect("a reset");
    assert!(hourly_reset > HOUR_START + 3600, "{hourly_reset}");
    assert_eq!(
        headers(&r),
        pairs(&[
            ("X-RateLimit-Limit", "1000"),
            ("X-RateLimit-Remaining", "999"),
            ("X-RateLimit-Reset", &hourly_reset.to_string()),
        ])
    );
    // The seed's usage warning: 80% of the hourly quota used shows as such.
    let mut r = r;
    for _ in 0..8 {
        h.clock.advance(secs(60));
        r = h.send(with_hits(request("courses", &[key]), 100)).await;
        assert!(!is_over(&r));
    }
    let limit: f64 = header(&r, "X-RateLimit-Limit")
        .and_then(|v| v.parse().ok())
        .expect("limit");
    let left: f64 = header(&r, "X-RateLimit-Remaining")
        .and_then(|v| v.parse().ok())
        .expect("remaining");
    assert_eq!((limit, left), (1000.0, 199.0), "801 of the hour used");
    assert!((limit - left) / limit * 100.0 > 80.0);
    // Denied by the burst: the headers still describe the hourly quota;
    // Retry-After is the burst's wait.
    let r = h.send(with_hits(request("courses", &[key]), 100)).await;
    assert!(is_over(&r));
    assert_eq!(limit_name(&r, 0), Some("professional_burst"));
    assert_eq!(header(&r, "X-RateLimit-Limit"), Some("1000"));
    assert_eq!(header(&r, "X-RateLimit-Remaining"), Some("199"));
    assert_eq!(header(&r, "Retry-After"), Some("60"));
    h.shutdown().await;
}

/// Plans pick the limit, the API key is what is counted, and the negotiated
/// contract's key gets its own limits.
#[tokio::test]
async fn courses_plans_and_negotiated_override() {
    let mut h = TestServer::shipped_at(secs(HOUR_START)).await;
    let plan = |plan: &'static str, key: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![("plan", plan), ("api_key", key)]
    };
    // X-RateLimit-Limit is the hourly quota, whatever is closer to denying.
    let cases = [
        ("professional", "key-a", 100, "professional_burst", 1000),
        ("enterprise", "key-b", 500, "enterprise_burst", 10_000),
        (
            "custom",
            "key-northwind-trading",
            2000,
            "northwind_burst",
            50_000,
        ),
        // A custom-plan key without a contract gets the professional limits.
        ("custom", "key-unlisted", 100, "custom_default_burst", 1000),
    ];
    for (tier, key, burst, name, hourly) in cases {
        let descriptor = plan(tier, key);
        let r = h
            .send(with_hits(request("courses", &[&descriptor]), burst))
            .await;
        assert!(!is_over(&r), "{tier}/{key}: the whole burst is allowed");
        assert_eq!(remaining(&r), [0]);
        assert_eq!(limit_name(&r, 0), Some(name));
        assert_eq!(
            header(&r, "X-RateLimit-Limit"),
            Some(hourly.to_string().as_str())
        );
        assert_eq!(
            header(&r, "X-RateLimit-Remaining"),
            Some((hourly - burst).to_string().as_str())
        );
        let r = h.should("courses", &[&descriptor]).await;
        assert!(is_over(&r), "{tier}/{key}: one more is too many");
        assert_eq!(header(&r, "Retry-After"), Some("1"));
    }
    // Counted per key: another professional key is untouched.
    let other = plan("professional", "key-c");
    let r = h.should("courses", &[&other]).await;
    assert_eq!(remaining(&r), [99]);
    // The per-key endpoint limits apply alongside the plan.
    let export: &[(&str, &str)] = &[("api_key", "key-c"), ("endpoint", "course_export")];
    for _ in 0..10 {
        let r = h.should("courses", &[&other, export]).await;
        assert!(!is_over(&r));
    }
    let r = h.should("courses", &[&other, export]).await;
    assert_eq!(codes(&r), [Code::Ok, Code::OverLimit]);
    assert_eq!(header(&r, "X-RateLimit-Limit"), Some("10"));
    assert_eq!(header(&r, "Retry-After"), Some("3600"));
    // An override from Envoy's route config replaces the configured limit.
    let mut overridden = request("courses", &[&plan("professional", "key-d")]);
    overridden.descriptors[0].limit = Some(floodgate::proto::RateLimitOverride {
        requests_per_unit: 1,
        unit: floodgate::proto::envoy::r#type::v3::RateLimitUnit::Minute as i32,
    });
    let r = h.send(overridden.clone()).await;
    assert!(!is_over(&r));
    assert_eq!(header(&r, "X-RateLimit-Limit"), Some("1"));
    let r = h.send(overridden).await;
    assert!(is_over(&r));
    h.shutdown().await;
}

/// Seed "Overview — rate limits": X-RateLimit-* with the reset in Unix
/// milliseconds on 2xx and 429, Retry-After in seconds on 429.
#[tokio::test]
async fn campaigns_headers_match_the_seed() {
    let now = secs(HOUR_START + 30);
    let mut h = TestServer::shipped_at(now).await;
    let route: &[(&str, &str)] = &[
        ("api_key", "k1"),
        ("route", "POST /v1/leads/add_to_campaign"),
    ];
    let r = h.should("campaigns", &[route]).await;
    let status = &r.statuses[0];
    let reset_ns = status
        .duration_until_reset
        .map(|d| d.seconds as u64 * 1_000_000_000 + d.nanos as u64)
        .unwrap_or_default();
    assert_eq!(
        headers(&r),
        pairs(&[
            ("X-RateLimit-Limit", "20"),
            ("X-RateLimit-Remaining", "19"),
            (
                "X-RateLimit-Reset",
                &(now + reset_ns).div_ceil(1_000_000).to_string()
            ),
        ])
    );
    let r = h.send(with_hits(request("campaigns", &[route]), 19)).await;
    assert!(!is_over(&r));
    let r = h.should("campaigns", &[route]).await;
    assert!(is_over(&r));
    let wait_ns = r.statuses[0]
        .duration_until_reset
        .map(|d| d.seconds as u64 * 1_000_000_000 + d.nanos as u64)
        .unwrap_or_default();
    assert_eq!(
        headers(&r),
        pairs(&[
            ("X-RateLimit-Limit", "20"),
            ("X-RateLimit-Remaining", "0"),
            (
                "X-RateLimit-Reset",
                &(now + wait_ns).div_ceil(1_000_000).to_string()
            ),
            ("Retry-After", &wait_ns.div_ceil(1_000_000_000).to_string()),
        ])
    );
    // No body is promised: Envoy sends its own.
    assert!(r.raw_body.is_empty());
    h.shutdown().await;
}

/// The seed's 429 body, 296 s before the window ends at `reset`.
fn xola_body(current: u64, reset: u64) -> serde_json::Value {
    json!({
        "message": "Too many requests, please try again later.",
        "rateLimit": {"limit": 900, "current": current, "remaining": 0,
                      "resetTime": reset, "retryInSeconds": 296}
    })
}

/// Seed "Xola — Rate Limiting": the example 429 (Retry-After: 296) with its
/// JSON body, and the user/seller/IP comparison order.
#[tokio::test]
async fn xola_headers_body_and_identity_order_match_the_seed() {
    // 1504 s into a 30-minute window: 296 s left, as in the seed's example.
    let mut h = TestServer::shipped_at(secs(HOUR_START + 1504)).await;
    let all: [&[(&str, &str)]; 3] = [
        &[("user", "u1"), ("seller", "s1")],
        &[("user", "u1")],
        &[("remote_address", "203.0.113.7")],
    ];
    let r = h.send(with_hits(request("xola", &all), 900)).await;
    assert!(!is_over(&r));
    assert_eq!(remaining(&r), [0, 0, 0]);
    let r = h.should("xola", &all).await;
    assert!(is_over(&r));
    assert_eq!(codes(&r), [Code::OverLimit, Code::Ok, Code::Ok]);
    let reset = HOUR_START + 1800;
    assert_eq!(
        headers(&r),
        pairs(&[
            ("X-RateLimit-Limit", "900"),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", &reset.to_string()),
            ("Retry-After", "296"),
            ("content-type", "application/json"),
        ])
    );
    assert_eq!(body_json(&r), xola_body(901, reset));
    // Without a seller the user is limited on their own counter, which the
    // requests above did not touch; without a user, the IP.
    let r = h.should("xola", &[all[1], all[2]]).await;
    assert_eq!(remaining(&r), [899, 0]);
    assert_eq!(header(&r, "X-RateLimit-Remaining"), Some("899"));
    let r = h.should("xola", &[all[2]]).await;
    assert_eq!(remaining(&r), [899]);
    h.shutdown().await;
}

/// The seed's example body shows `"current": 905`: a fixed-window
/// `rate_limit` counts denied requests whatever its `unit_multiplier`, so the
/// fifth request over the 900 of a 30-minute window reads 905.
#[tokio::test]
async fn xola_body_current_counts_denied_requests_as_in_the_seed() {
    let mut h = TestServer::shipped_at(secs(HOUR_START + 1504)).await;
    let pair: &[(&str, &str)] = &[("user", "u1"), ("seller", "s1")];
    let r = h.send(with_hits(request("xola", &[pair]), 900)).await;
    assert!(!is_over(&r));
    let mut currents = Vec::new();
    for _ in 0..4 {
        let r = h.should("xola", &[pair]).await;
        assert!(is_over(&r));
        currents.push(body_json(&r)["rateLimit"]["current"].clone());
    }
    assert_eq!(currents, [901, 902, 903, 904].map(|n| json!(n)));
    // The fifth denied request: the seed's example body, 296 s before the
    // window ends.
    let r = h.should("xola", &[pair]).await;
    assert_eq!(header(&r, "Retry-After"), Some("296"));
    assert_eq!(body_json(&r), xola_body(905, HOUR_START + 1800));
    h.shutdown().await;
}

/// Seed "Do Explo's API endpoints have a rate limit?": a 429 "with a
/// descriptive message"; no rate-limit headers are promised.
#[tokio::test]
async fn explo_429_body_is_descriptive() {
    let now = secs(HOUR_START + 20);
    let mut h = TestServer::shipped_at(now).await;
    let ip: &[(&str, &str)] = &[("remote_address", "198.51.100.4")];
    let r = h.send(with_hits(request("explo", &[ip]), 180)).await;
    assert!(!is_over(&r));
    assert!(headers(&r).is_empty());
    let r = h.should("explo", &[ip]).await;
    assert!(is_over(&r));
    assert_eq!(headers(&r), pairs(&[("content-type", "application/json")]));
    assert_eq!(
        body_json(&r),
        json!({
            "error": "rate_limit_exceeded",
            "message": "Rate limit exceeded: at most 180 requests per 60 seconds per requestor IP. Retry after 40 seconds.",
            "limit": 180, "window_seconds": 60, "retry_after": 40
        })
    );
    // The PDF export: 20 per 10 minutes.
    let pdf: &[(&str, &str)] = &[
        ("remote_address", "198.51.100.5"),
        ("path", "/embed/export/dashboard/pdf"),
    ];
    h.send(with_hits(request("explo", &[pdf]), 20)).await;
    let r = h.should("explo", &[pdf]).await;
    assert!(is_over(&r));
    let body = body_json(&r);
    assert_eq!(
        body["message"],
        "Rate limit exceeded: at most 20 requests per 600 seconds per requestor IP. Retry after 580 seconds."
    );
    h.shutdown().await;
}

/// Seed "Legs API — Rate Limits": 100 rpm per account, then the sample
/// 429 JSON error; no rate-limit headers are promised.
#[tokio::test]
async fn exotel_429_body_matches_the_seed() {
    let mut h = TestServer::shipped_at(secs(HOUR_START)).await;
    let account: &[(&str, &str)] = &[("account", "acme")];
    let r = h.send(with_hits(request("exotel", &[account]), 100)).await;
    assert!(!is_over(&r));
    assert!(headers(&r).is_empty());
    let r = h.should("exotel", &[account]).await;
    assert!(is_over(&r));
    assert_eq!(headers(&r), pairs(&[("content-type", "application/json")]));
    assert_eq!(
        body_json(&r),
        json!({"http_code": 429, "response": {"error": {
            "code": "rate_limit_exceeded",
            "message": "Rate limit exceeded, please retry after some time."
        }}})
    );
    h.shutdown().await;
}

/// Explo's export route carries both descriptors. A denied export request
/// still counts against the requestor's 180 a minute (each descriptor is
/// counted on its own, as in the reference); with
/// STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT it charges only the export cap
/// it exceeded. The README's explo paragraph says exactly this.
#[tokio::test]
async fn explo_denied_exports_and_the_per_ip_quota() {
    let ip: &[(&str, &str)] = &[("remote_address", "198.51.100.9")];
    let pdf: &[(&str, &str)] = &[
        ("remote_address", "198.51.100.9"),
        ("path", "/embed/export/dashboard/pdf"),
    ];
    for (stop, per_ip_left) in [(false, 180 - 25), (true, 180 - 20)] {
        let options = floodgate::decide::ServiceOptions {
            stop_increment_when_over_limit: stop,
            ..Default::default()
        };
        let mut h = TestServer::serve_at(shipped_rules(), options, secs(HOUR_START)).await;
        for n in 1..=25 {
            let r = h.should("explo", &[ip, pdf]).await;
            assert_eq!(is_over(&r), n > 20, "export {n}");
        }
        // A plain request: its own hit, after those of the exports.
        let r = h.should("explo", &[ip]).await;
        assert_eq!(remaining(&r), [per_ip_left - 1], "stop={stop}");
        h.shutdown().await;
    }
}
