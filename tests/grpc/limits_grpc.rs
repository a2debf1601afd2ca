//! floodgate's limit extensions over real gRPC: sliding windows, token
//! buckets, `unit_multiplier`, multi-limit rules and their all-or-nothing
//! counting, with a manual clock so windows are crossed without sleeping.

use crate::harness;

use std::path::PathBuf;

use floodgate::config::{self, LoadOptions};
use floodgate::decide::ServiceOptions;
use floodgate::proto::{Code, RateLimitDescriptor, RateLimitResponse};
use harness::{START, TestServer, descriptor, request_of, rules};

struct Server(TestServer);

async fn serve(yaml: &str, options: ServiceOptions) -> Server {
    Server(TestServer::serve_at(rules(yaml), options, START).await)
}

impl Server {
    async fn ask(
        &mut self,
        domain: &str,
        descriptors: Vec<RateLimitDescriptor>,
        hits: u32,
    ) -> RateLimitResponse {
        self.0.send(request_of(domain, descriptors, hits)).await
    }

    async fn one(&mut self, entries: &[(&str, &str)]) -> RateLimitResponse {
        self.0.should("d", &[entries]).await
    }

    /// How many of `n` single requests are admitted.
    async fn admitted(&mut self, entries: &[(&str, &str)], n: usize) -> usize {
        let mut ok = 0;
        for _ in 0..n {
            if self.one(entries).await.overall_code == Code::Ok as i32 {
                ok += 1;
            }
        }
        ok
    }

    fn advance_secs(&self, seconds: u64) {
        self.0.advance_secs(seconds);
    }

    async fn stop(self) {
        self.0.shutdown().await;
    }
}

fn reset_nanos(response: &RateLimitResponse, index: usize) -> i128 {
    let d = response.statuses[index]
        .duration_until_reset
        .expect("duration_until_reset is set");
    i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos)
}

#[tokio::test]
async fn unit_multiplier_makes_a_ten_minute_window() {
    let mut s = serve(
        "domain: d\ndescriptors:\n  - key: path\n    value: export\n    rate_limit: {name: export, unit: minute, unit_multiplier: 10, requests_per_unit: 20}\n",
        ServiceOptions::default(),
    )
    .await;
    let export = [("path", "export")];
    assert_eq!(s.admitted(&export, 25).await, 20);
    // Nine minutes later the ten-minute window is still full...
    s.advance_secs(9 * 60);
    let denied = s.one(&export).await;
    assert_eq!(denied.overall_code, Code::OverLimit as i32);
    assert_eq!(reset_nanos(&denied, 0), 60 * 1_000_000_000);
    let limit = denied.statuses[0].current_limit.as_ref().expect("limit");
    assert_eq!(
        (limit.name.as_str(), limit.requests_per_unit),
        ("export", 20)
    );
    // ...and a new one starts at the ten-minute boundary.
    s.advance_secs(60);
    assert_eq!(s.admitted(&export, 25).await, 20);
    s.stop().await;
}

#[tokio::test]
async fn sliding_window_weighs_the_previous_window() {
    let mut s = serve(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {algorithm: sliding_window, unit: minute, requests_per_unit: 10}\n",
        ServiceOptions::default(),
    )
    .await;
    let k = [("k", "a")];
    assert_eq!(s.admitted(&k, 10).await, 10);
    // A fixed window would admit 10 again right after the boundary; the
    // sliding estimate still counts the previous window's 10 hits.
    s.advance_secs(60);
    assert_eq!(s.admitted(&k, 1).await, 0);
    // Half way through, half of the previous window still counts: 5 fit.
    s.advance_secs(30);
    assert_eq!(s.admitted(&k, 10).await, 5);
    // Another key is independent.
    assert_eq!(s.admitted(&[("k", "b")], 3).await, 3);
    s.stop().await;
}

#[tokio::test]
async fn token_bucket_allows_a_burst_then_refills_smoothly() {
    let mut s = serve(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {algorithm: token_bucket, unit: minute, requests_per_unit: 60, burst: 10}\n",
        ServiceOptions::default(),
    )
    .await;
    let k = [("k", "a")];
    assert_eq!(s.admitted(&k, 15).await, 10);
    // Empty: the next token comes one second later, and says so.
    let denied = s.one(&k).await;
    assert_eq!(denied.overall_code, Code::OverLimit as i32);
    assert_eq!(reset_nanos(&denied, 0), 1_000_000_000);
    s.advance_secs(1);
    assert_eq!(s.admitted(&k, 3).await, 1);
    // After the whole bucket's refill time the full burst is back, not more.
    s.advance_secs(3600);
    assert_eq!(s.admitted(&k, 15).await, 10);
    s.stop().await;
}

#[tokio::test]
async fn token_bucket_reports_time_until_full_when_ok() {
    let mut s = serve(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {algorithm: token_bucket, unit: second, requests_per_unit: 10, burst: 10}\n",
        ServiceOptions::default(),
    )
    .await;
    let first = s.one(&[("k", "a")]).await;
    assert_eq!(first.statuses[0].limit_remaining, 9);
    // One token taken refills in 100 ms.
    assert_eq!(reset_nanos(&first, 0), 100_000_000);
    s.stop().await;
}

const BURST_AND_SUSTAINED: &str = "domain: d
descriptors:
  - key: api_key
    rate_limits:
      - {name: burst, algorithm: token_bucket, unit: minute, requests_per_unit: 5, burst: 5}
      - {name: sustained, algorithm: sliding_window, unit: hour, requests_per_unit: 8}
";

#[tokio::test]
async fn every_limit_of_a_rule_must_admit_and_the_tightest_is_reported() {
    let mut s = serve(BURST_AND_SUSTAINED, ServiceOptions::default()).await;
    let key = [("api_key", "k1")];
    // The burst limit binds first.
    let first = s.one(&key).await;
    let limit = first.statuses[0].current_limit.as_ref().expect("limit");
    assert_eq!(limit.name, "burst");
    assert_eq!(first.statuses[0].limit_remaining, 4);
    assert_eq!(s.admitted(&key, 10).await, 4);
    let denied = s.one(&key).await;
    assert_eq!(
        denied.statuses[0]
            .current_limit
            .as_ref()
            .expect("limit")
            .name,
        "burst"
    );
    // A minute later the bucket is full again, but only 3 of the hour's 8
    // remain: now the sustained limit is the tightest and binds.
    s.advance_secs(60);
    let next = s.one(&key).await;
    assert_eq!(next.overall_code, Code::Ok as i32);
    let status = &next.statuses[0];
    assert_eq!(
        status.current_limit.as_ref().expect("limit").name,
        "sustained"
    );
    assert_eq!(status.limit_remaining, 2);
    assert_eq!(s.admitted(&key, 5).await, 2);
    let denied = s.one(&key).await;
    assert_eq!(denied.overall_code, Code::OverLimit as i32);
    assert_eq!(
        denied.statuses[0]
            .current_limit
            .as_ref()
            .expect("limit")
            .name,
        "sustained"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_request_denied_by_one_limit_consumes_nothing_from_the_others() {
    let mut s = serve(BURST_AND_SUSTAINED, ServiceOptions::default()).await;
    let key = [("api_key", "k1")];
    assert_eq!(s.admitted(&key, 5).await, 5);
    // 100 requests denied by the empty bucket must not eat the hourly quota.
    assert_eq!(s.admitted(&key, 100).await, 0);
    s.advance_secs(60);
    // 3 of the hour's 8 are left, exactly as if the denied ones never came.
    assert_eq!(s.admitted(&key, 10).await, 3);
    s.stop().await;
}

#[tokio::test]
async fn hits_addend_counts_as_that_many_requests_for_every_algorithm() {
    for algorithm in ["fixed_window", "sliding_window", "token_bucket"] {
        let yaml = format!(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {{algorithm: {algorithm}, unit: hour, requests_per_unit: 10}}\n"
        );
        let mut s = serve(&yaml, ServiceOptions::default()).await;
        let ok = s.ask("d", vec![descriptor(&[("k", "v")])], 7).await;
        assert_eq!(ok.overall_code, Code::Ok as i32, "{algorithm}");
        assert_eq!(ok.statuses[0].limit_remaining, 3, "{algorithm}");
        let over = s.ask("d", vec![descriptor(&[("k", "v")])], 4).await;
        assert_eq!(over.overall_code, Code::OverLimit as i32, "{algorithm}");
        // The denied 4 hits are not counted, except by a reference-form fixed
        // window, which keeps counting over-limit hits as the reference does.
        let expected = if algorithm == "fixed_window" {
            Code::OverLimit
        } else {
            Code::Ok
        };
        let fits = s.ask("d", vec![descriptor(&[("k", "v")])], 3).await;
        assert_eq!(fits.overall_code, expected as i32, "{algorithm}");
        s.stop().await;
    }
}

#[tokio::test]
async fn stop_increment_when_over_limit_makes_the_whole_request_all_or_nothing() {
    let yaml = "domain: d
descriptors:
  - key: a
    rate_limit: {algorithm: token_bucket, unit: hour, requests_per_unit: 10}
  - key: b
    rate_limit: {unit: hour, requests_per_unit: 1}
";
    for (stop, a_left_after) in [(false, 8), (true, 9)] {
        let options = ServiceOptions {
            stop_increment_when_over_limit: stop,
            ..ServiceOptions::default()
        };
        let mut s = serve(yaml, options).await;
        let both = || vec![descriptor(&[("a", "x")]), descriptor(&[("b", "y")])];
        assert_eq!(s.ask("d", both(), 0).await.overall_code, Code::Ok as i32);
        // b is now over; a is charged only when the flag is off.
        assert_eq!(
            s.ask("d", both(), 0).await.overall_code,
            Code::OverLimit as i32
        );
        let a = s.one(&[("a", "x")]).await;
        assert_eq!(
            a.statuses[0].limit_remaining,
            a_left_after - 1,
            "stop_increment_when_over_limit = {stop}"
        );
        s.stop().await;
    }
}

#[test]
fn the_shipped_config_and_the_documented_example_load() {
    let shipped = config::load_path(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config"),
        &LoadOptions::default(),
    )
    .expect("config/ loads");
    for domain in ["campaigns", "courses", "exotel", "explo", "xola"] {
        assert!(
            shipped.domain(domain).is_some(),
            "config/ has domain {domain}"
        );
    }
    let example = "domain: d
descriptors:
  - key: api_key
    rate_limits:
      - {name: burst, algorithm: token_bucket, unit: minute, requests_per_unit: 100, burst: 100}
      - {name: sustained, algorithm: sliding_window, unit: hour, requests_per_unit: 1000}
";
    let rules = config::load_sources(
        &[(PathBuf::from("example.yaml"), example.to_owned())],
        &LoadOptions::default(),
    )
    .expect("the README example loads as written");
    let matched = rules
        .lookup("d", &[("api_key", "any")])
        .expect("api_key matches");
    assert_eq!(matched.rule.limits.len(), 2);
}

fn response_header<'r>(response: &'r RateLimitResponse, name: &str) -> Option<&'r str> {
    response
        .response_headers_to_add
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

#[tokio::test]
async fn a_calendar_month_resets_at_the_zones_local_midnight() {
    // 2026-02-28 18:00 UTC is 23:30 on 28 February in Kolkata: half an
    // hour before the local month ends (18:30 UTC).
    let now = 1_772_301_600 * 1_000_000_000;
    let yaml = "domain: d\nresponse:\n  headers: x-ratelimit\ndescriptors:\n  - key: plan\n    rate_limit: {unit: month, requests_per_unit: 3, calendar: true, time_zone: Asia/Kolkata}\n";
    let mut s = Server(TestServer::serve_at(rules(yaml), ServiceOptions::default(), now).await);
    let plan = [("plan", "pro")];
    assert_eq!(s.admitted(&plan, 5).await, 3);
    let denied = s.one(&plan).await;
    assert_eq!(reset_nanos(&denied, 0), 1_800 * 1_000_000_000);
    assert_eq!(response_header(&denied, "X-RateLimit-Reset"), Some("1800"));
    // At local midnight a new month starts, 31 days long (March).
    s.advance_secs(1_800);
    let fresh = s.one(&plan).await;
    assert_eq!(fresh.overall_code, Code::Ok as i32);
    assert_eq!(reset_nanos(&fresh, 0), 31 * 86_400 * 1_000_000_000);
    assert_eq!(
        response_header(&fresh, "X-RateLimit-Reset"),
        Some((31 * 86_400).to_string().as_str())
    );
    s.stop().await;
}

#[tokio::test]
async fn use_calendar_month_counts_month_limits_in_utc_months() {
    // 2026-02-28 23:00 UTC: one hour before March.
    let now = 1_772_319_600 * 1_000_000_000;
    let yaml = "domain: d\ndescriptors:\n  - key: plan\n    rate_limit: {unit: month, requests_per_unit: 2}\n";
    let load = LoadOptions {
        calendar_month: true,
        ..LoadOptions::default()
    };
    let mut s = Server(
        TestServer::serve_at(
            harness::load_yaml(yaml, &load),
            ServiceOptions::default(),
            now,
        )
        .await,
    );
    let plan = [("plan", "x")];
    assert_eq!(s.admitted(&plan, 3).await, 2);
    assert_eq!(reset_nanos(&s.one(&plan).await, 0), 3_600 * 1_000_000_000);
    s.advance_secs(3_600);
    assert_eq!(s.admitted(&plan, 3).await, 2);
    s.stop().await;
}
