//! Decisions over real gRPC, one reference rule per test: fixed windows and
//! units, matching precedence and depth, wildcards and shared thresholds,
//! `replaces`, `unlimited`, hits, overrides, shadow and quota modes, the
//! stop-increment switch, request validation, concurrency, health,
//! reflection and hot swaps.
//!
//! The semantics are envoyproxy/ratelimit's (Go); where floodgate differs on
//! purpose (an empty entry key and an UNKNOWN override unit are
//! INVALID_ARGUMENT; wildcards may have `*` anywhere) the test says so.

use crate::harness;

use floodgate::config::LoadOptions;
use floodgate::decide::ServiceOptions;
use floodgate::proto::envoy::r#type::v3::RateLimitUnit;
use floodgate::proto::{Code, ResponseUnit};
use harness::{
    START_SECS, TestServer, codes, descriptor, descriptor_with_hits, descriptor_with_override,
    limit_name, load_yaml, overall, remaining, request, request_of, reset,
};

const OK: Code = Code::Ok;
const OVER: Code = Code::OverLimit;

// ---------------------------------------------------------------- fixed window

#[tokio::test(flavor = "multi_thread")]
async fn fixed_window_admits_n_then_over_limit_with_full_status() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: k
    value: v
    rate_limit:
      name: three_per_minute
      unit: minute
      requests_per_unit: 3
",
    )
    .await;
    for expected_remaining in [2u32, 1, 0] {
        let r = s.should("d", &[&[("k", "v")]]).await;
        assert_eq!(overall(&r), OK);
        assert_eq!(codes(&r), [OK]);
        assert_eq!(remaining(&r), [expected_remaining]);
        let limit = r.statuses[0]
            .current_limit
            .as_ref()
            .expect("OK carries current_limit");
        assert_eq!(limit.name, "three_per_minute");
        assert_eq!(limit.requests_per_unit, 3);
        assert_eq!(limit.unit, ResponseUnit::Minute as i32);
        // At the window start: the whole minute is left.
        assert_eq!(reset(&r, 0), Some((60, 0)));
    }
    let r = s.should("d", &[&[("k", "v")]]).await;
    assert_eq!(overall(&r), OVER);
    assert_eq!(codes(&r), [OVER]);
    assert_eq!(remaining(&r), [0]);
    let limit = r.statuses[0]
        .current_limit
        .as_ref()
        .expect("OVER carries current_limit");
    assert_eq!(
        (limit.requests_per_unit, limit.unit),
        (3, ResponseUnit::Minute as i32)
    );
    assert_eq!(reset(&r, 0), Some((60, 0)));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duration_until_reset_counts_whole_seconds_to_the_aligned_window_end() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: k
    rate_limit: { unit: minute, requests_per_unit: 100 }
",
    )
    .await;
    s.at_secs(30);
    let r = s.should("d", &[&[("k", "a")]]).await;
    assert_eq!(reset(&r, 0), Some((30, 0)));
    s.at_secs(59);
    let r = s.should("d", &[&[("k", "a")]]).await;
    assert_eq!(reset(&r, 0), Some((1, 0)));
    // Sub-second time: the reference works on whole Unix seconds
    // (`60 - now % 60` with now = 12), i.e. 48 s.
    s.clock
        .set(harness::START + harness::secs(72) + 400_000_000);
    let r = s.should("d", &[&[("k", "a")]]).await;
    assert_eq!(reset(&r, 0), Some((48, 0)));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn window_resets_at_the_next_aligned_boundary_not_a_minute_after_the_first_hit() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: k
    rate_limit: { unit: minute, requests_per_unit: 2 }
",
    )
    .await;
    // First hit 40 s into the minute: the window still ends at 60 s.
    s.at_secs(40);
    assert_eq!(overall(&s.should("d", &[&[("k", "x")]]).await), OK);
    assert_eq!(overall(&s.should("d", &[&[("k", "x")]]).await), OK);
    let r = s.should("d", &[&[("k", "x")]]).await;
    assert_eq!(overall(&r), OVER);
    assert_eq!(reset(&r, 0), Some((20, 0)));
    s.at_secs(59);
    assert_eq!(overall(&s.should("d", &[&[("k", "x")]]).await), OVER);
    s.at_secs(60);
    let r = s.should("d", &[&[("k", "x")]]).await;
    assert_eq!(overall(&r), OK);
    assert_eq!(remaining(&r), [1]);
    assert_eq!(reset(&r, 0), Some((60, 0)));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_unit_has_its_reference_length_and_case_insensitive_name() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - { key: u, value: second, rate_limit: { unit: SECOND, requests_per_unit: 1 } }
  - { key: u, value: minute, rate_limit: { unit: MINUTE, requests_per_unit: 1 } }
  - { key: u, value: hour,   rate_limit: { unit: Hour,   requests_per_unit: 1 } }
  - { key: u, value: day,    rate_limit: { unit: day,    requests_per_unit: 1 } }
  - { key: u, value: week,   rate_limit: { unit: wEEk,   requests_per_unit: 1 } }
  - { key: u, value: month,  rate_limit: { unit: Month,  requests_per_unit: 1 } }
  - { key: u, value: year,   rate_limit: { unit: year,   requests_per_unit: 1 } }
",
    )
    .await;
    let cases = [
        ("second", 1u64, ResponseUnit::Second),
        ("minute", 60, ResponseUnit::Minute),
        ("hour", 3_600, ResponseUnit::Hour),
        ("day", 86_400, ResponseUnit::Day),
        ("week", 604_800, ResponseUnit::Week),
        ("month", 2_592_000, ResponseUnit::Month),
        ("year", 31_536_000, ResponseUnit::Year),
    ];
    for (value, divider, unit) in cases {
        s.at_secs(0);
        let left = divider - START_SECS % divider;
        let r = s.should("d", &[&[("u", value)]]).await;
        assert_eq!(codes(&r), [OK], "{value}: first hit");
        let limit = r.statuses[0].current_limit.as_ref().expect("limit");
        assert_eq!(limit.unit, unit as i32, "{value}: reported unit");
        assert_eq!(
            reset(&r, 0),
            Some((i64::try_from(left).unwrap(), 0)),
            "{value}: reset"
        );
        let r = s.should("d", &[&[("u", value)]]).await;
        assert_eq!(codes(&r), [OVER], "{value}: second hit");
        // One second before the epoch-aligned boundary: still the same window.
        s.at_secs(left - 1);
        let r = s.should("d", &[&[("u", value)]]).await;
        assert_eq!(codes(&r), [OVER], "{value}: just before the boundary");
        assert_eq!(reset(&r, 0), Some((1, 0)), "{value}: one second left");
        s.at_secs(left);
        let r = s.should("d", &[&[("u", value)]]).await;
        assert_eq!(codes(&r), [OK], "{value}: new window at the boundary");
        assert_eq!(
            reset(&r, 0),
            Some((i64::try_from(divider).unwrap(), 0)),
            "{value}: a whole new window"
        );
    }
    s.shutdown().await;
}

// ------------------------------------------------------------------- matching

const PRECEDENCE: &str = r"
domain: d
descriptors:
  - key: k
    value: exact
    rate_limit: { name: exact, unit: minute, requests_per_unit: 1 }
  - key: k
    value: ex*
    rate_limit: { name: wildcard, unit: minute, requests_per_unit: 2 }
  - key: k
    rate_limit: { name: default, unit: minute, requests_per_unit: 3 }
";

#[tokio::test(flavor = "multi_thread")]
async fn exact_value_beats_wildcard_beats_key_only_default() {
    let mut s = TestServer::start(PRECEDENCE).await;
    let r = s
        .should(
            "d",
            &[&[("k", "exact")], &[("k", "exa")], &[("k", "other")]],
        )
        .await;
    assert_eq!(limit_name(&r, 0).as_deref(), Some("exact"));
    assert_eq!(limit_name(&r, 1).as_deref(), Some("wildcard"));
    assert_eq!(limit_name(&r, 2).as_deref(), Some("default"));
    assert_eq!(remaining(&r), [0, 1, 2]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wildcards_are_tried_in_config_order_first_match_wins() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - { key: path, value: /api/*,    rate_limit: { name: api, unit: minute, requests_per_unit: 5 } }
  - { key: path, value: /api/v1/*, rate_limit: { name: v1, unit: minute, requests_per_unit: 7 } }
",
    )
    .await;
    let r = s
        .should("d", &[&[("path", "/api/v1/users")], &[("path", "/apx")]])
        .await;
    assert_eq!(limit_name(&r, 0).as_deref(), Some("api"));
    assert_eq!(limit_name(&r, 1), None);
    s.shutdown().await;
}

const NESTED: &str = r"
domain: d
descriptors:
  - key: a
    value: x
    rate_limit: { name: outer, unit: minute, requests_per_unit: 5 }
    descriptors:
      - key: b
        rate_limit: { name: inner, unit: minute, requests_per_unit: 2 }
  - key: c
    value: gate
    descriptors:
      - key: d
        value: e
        rate_limit: { name: leaf, unit: hour, requests_per_unit: 9 }
  - key: w
    value: whitelisted
";

#[tokio::test(flavor = "multi_thread")]
async fn nested_descriptors_apply_the_limit_at_the_request_depth() {
    let mut s = TestServer::start(NESTED).await;
    let r = s
        .should(
            "d",
            &[
                &[("a", "x")],
                &[("a", "x"), ("b", "anything")],
                &[("c", "gate"), ("d", "e")],
            ],
        )
        .await;
    assert_eq!(limit_name(&r, 0).as_deref(), Some("outer"));
    assert_eq!(limit_name(&r, 1).as_deref(), Some("inner"));
    assert_eq!(limit_name(&r, 2).as_deref(), Some("leaf"));
    assert_eq!(remaining(&r), [4, 1, 8]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_deeper_than_the_config_gets_no_limit() {
    let mut s = TestServer::start(NESTED).await;
    for _ in 0..3 {
        let r = s
            .should(
                "d",
                &[
                    &[("a", "x"), ("b", "y"), ("z", "1")],
                    &[("c", "gate"), ("d", "e"), ("f", "g")],
                    &[("w", "whitelisted"), ("x", "y")],
                ],
            )
            .await;
        assert_eq!(overall(&r), OK);
        assert_eq!(codes(&r), [OK, OK, OK]);
        assert!(
            r.statuses.iter().all(|s| s.current_limit.is_none()),
            "{r:?}"
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_ending_at_a_node_without_rate_limit_gets_no_limit() {
    let mut s = TestServer::start(NESTED).await;
    let r = s
        .should(
            "d",
            &[
                &[("c", "gate")],
                &[("w", "whitelisted")],
                &[("b", "y")],
                &[("a", "nope")],
            ],
        )
        .await;
    assert_eq!(codes(&r), [OK, OK, OK, OK]);
    assert!(
        r.statuses.iter().all(|s| s.current_limit.is_none()),
        "{r:?}"
    );
    assert_eq!(remaining(&r), [0, 0, 0, 0]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn key_only_default_counts_each_value_separately() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: user
    rate_limit: { unit: minute, requests_per_unit: 2 }
",
    )
    .await;
    assert_eq!(
        remaining(&s.should("d", &[&[("user", "alice")]]).await),
        [1]
    );
    assert_eq!(
        remaining(&s.should("d", &[&[("user", "alice")]]).await),
        [0]
    );
    assert_eq!(codes(&s.should("d", &[&[("user", "alice")]]).await), [OVER]);
    let r = s.should("d", &[&[("user", "bob")]]).await;
    assert_eq!(codes(&r), [OK]);
    assert_eq!(remaining(&r), [1]);
    // An empty value is a value of its own.
    assert_eq!(remaining(&s.should("d", &[&[("user", "")]]).await), [1]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wildcards_match_prefixes_suffixes_and_several_stars() {
    // Reference: one trailing `*` (prefix match). floodgate also takes `*`
    // anywhere, any number of times.
    let mut s = TestServer::start(
        r#"
domain: d
descriptors:
  - { key: p, value: "foo*",  rate_limit: { name: prefix, unit: minute, requests_per_unit: 10 } }
  - { key: s, value: "*bar",  rate_limit: { name: suffix, unit: minute, requests_per_unit: 10 } }
  - { key: m, value: "a*b*c", rate_limit: { name: multi, unit: minute, requests_per_unit: 10 } }
  - { key: any, value: "*",   rate_limit: { name: any, unit: minute, requests_per_unit: 10 } }
"#,
    )
    .await;
    let matches = [
        ("p", "foo", true),
        ("p", "foobar", true),
        ("p", "fo", false),
        ("p", "xfoo", false),
        ("s", "bar", true),
        ("s", "crowbar", true),
        ("s", "barn", false),
        ("m", "abc", true),
        ("m", "a-b-c", true),
        ("m", "axxbyyc", true),
        ("m", "acb", false),
        ("m", "abcx", false),
        ("any", "", true),
        ("any", "whatever", true),
    ];
    for (key, value, expected) in matches {
        let r = s.should("d", &[&[(key, value)]]).await;
        assert_eq!(
            r.statuses[0].current_limit.is_some(),
            expected,
            "{key}={value:?} should{} match",
            if expected { "" } else { " not" }
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wildcard_values_are_counted_separately_without_share_threshold() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: path
    value: files*
    rate_limit: { unit: minute, requests_per_unit: 2 }
",
    )
    .await;
    for value in ["files/a", "files/b", "files/c"] {
        assert_eq!(
            remaining(&s.should("d", &[&[("path", value)]]).await),
            [1],
            "{value}"
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn share_threshold_makes_all_matching_values_share_one_counter() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: path
    value: files*
    share_threshold: true
    rate_limit: { unit: minute, requests_per_unit: 3 }
  - key: other
    value: x*
    rate_limit: { unit: minute, requests_per_unit: 3 }
",
    )
    .await;
    assert_eq!(
        remaining(&s.should("d", &[&[("path", "files/a")]]).await),
        [2]
    );
    assert_eq!(
        remaining(&s.should("d", &[&[("path", "files/b")]]).await),
        [1]
    );
    assert_eq!(
        remaining(&s.should("d", &[&[("path", "files")]]).await),
        [0]
    );
    assert_eq!(
        codes(&s.should("d", &[&[("path", "files/zzz")]]).await),
        [OVER]
    );
    // The sibling wildcard without share_threshold is unaffected.
    assert_eq!(remaining(&s.should("d", &[&[("other", "x1")]]).await), [2]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn share_threshold_above_the_limit_node_shares_the_nested_counter() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: path
    value: files*
    share_threshold: true
    descriptors:
      - key: user
        rate_limit: { unit: minute, requests_per_unit: 2 }
",
    )
    .await;
    let r = s
        .should("d", &[&[("path", "files/a"), ("user", "u1")]])
        .await;
    assert_eq!(remaining(&r), [1]);
    let r = s
        .should("d", &[&[("path", "files/b"), ("user", "u1")]])
        .await;
    assert_eq!(remaining(&r), [0]);
    let r = s
        .should("d", &[&[("path", "files/c"), ("user", "u1")]])
        .await;
    assert_eq!(codes(&r), [OVER]);
    // Another user value is still its own counter (a key-only default).
    let r = s
        .should("d", &[&[("path", "files/c"), ("user", "u2")]])
        .await;
    assert_eq!(remaining(&r), [1]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scalar_values_match_as_written() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - { key: code, value: 123,  rate_limit: { name: number, unit: minute, requests_per_unit: 5 } }
  - { key: flag, value: true, rate_limit: { name: boolean, unit: minute, requests_per_unit: 5 } }
",
    )
    .await;
    let r = s
        .should(
            "d",
            &[&[("code", "123")], &[("flag", "true")], &[("code", "0123")]],
        )
        .await;
    assert_eq!(limit_name(&r, 0).as_deref(), Some("number"));
    assert_eq!(limit_name(&r, 1).as_deref(), Some("boolean"));
    assert_eq!(limit_name(&r, 2), None);
    s.shutdown().await;
}

// ----------------------------------------------------- replaces and unlimited

const REPLACES: &str = r"
domain: d
descriptors:
  - key: tier
    value: premium
    rate_limit:
      name: premium
      unit: minute
      requests_per_unit: 10
      replaces:
        - name: basic
  - key: user
    rate_limit:
      name: basic
      unit: minute
      requests_per_unit: 1
  - key: vip
    rate_limit:
      name: vip
      unlimited: true
      replaces:
        - name: basic
";

#[tokio::test(flavor = "multi_thread")]
async fn replaces_drops_the_named_limit_and_does_not_count_it() {
    let mut s = TestServer::start(REPLACES).await;
    for round in 0..3 {
        let r = s
            .should("d", &[&[("tier", "premium")], &[("user", "u")]])
            .await;
        assert_eq!(overall(&r), OK, "round {round}");
        assert_eq!(codes(&r), [OK, OK]);
        assert_eq!(limit_name(&r, 0).as_deref(), Some("premium"));
        assert!(r.statuses[1].current_limit.is_none(), "replaced: no limit");
        assert_eq!(r.statuses[1].limit_remaining, 0);
        assert!(r.statuses[1].duration_until_reset.is_none());
    }
    // The replaced limit was never counted: alone, the user gets its one hit.
    let r = s.should("d", &[&[("user", "u")]]).await;
    assert_eq!(codes(&r), [OK]);
    assert_eq!(limit_name(&r, 0).as_deref(), Some("basic"));
    assert_eq!(codes(&s.should("d", &[&[("user", "u")]]).await), [OVER]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unlimited_rule_can_replace_a_limit() {
    let mut s = TestServer::start(REPLACES).await;
    for _ in 0..3 {
        let r = s.should("d", &[&[("vip", "yes")], &[("user", "u2")]]).await;
        assert_eq!(overall(&r), OK);
        assert!(r.statuses[1].current_limit.is_none());
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unlimited_is_ok_with_max_remaining_and_no_limit() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: internal
    rate_limit: { unlimited: true }
",
    )
    .await;
    for _ in 0..5 {
        let r = s
            .send(request_of(
                "d",
                vec![descriptor(&[("internal", "x")])],
                1_000_000,
            ))
            .await;
        assert_eq!(overall(&r), OK);
        assert_eq!(remaining(&r), [u32::MAX]);
        assert!(r.statuses[0].current_limit.is_none());
        assert!(r.statuses[0].duration_until_reset.is_none());
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_requests_per_unit_is_always_over() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: blocked
    rate_limit: { unit: second, requests_per_unit: 0 }
",
    )
    .await;
    for _ in 0..3 {
        let r = s.should("d", &[&[("blocked", "x")]]).await;
        assert_eq!(overall(&r), OVER);
        assert_eq!(remaining(&r), [0]);
        let limit = r.statuses[0].current_limit.as_ref().expect("limit");
        assert_eq!(limit.requests_per_unit, 0);
        s.advance_secs(1);
    }
    s.shutdown().await;
}

// ----------------------------------------------------------------------- hits

const TEN: &str = r"
domain: d
descriptors:
  - key: k
    rate_limit: { unit: minute, requests_per_unit: 10 }
";

#[tokio::test(flavor = "multi_thread")]
async fn request_hits_addend_zero_means_one_and_five_counts_five() {
    let mut s = TestServer::start(TEN).await;
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 0))
        .await;
    assert_eq!(remaining(&r), [9]);
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 5))
        .await;
    assert_eq!(remaining(&r), [4]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_limit_is_decided_on_the_count_after_adding_hits() {
    let mut s = TestServer::start(TEN).await;
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 10))
        .await;
    assert_eq!((overall(&r), remaining(&r)), (OK, vec![0]));
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 1))
        .await;
    assert_eq!(overall(&r), OVER);
    // A fresh key: 11 hits at once are over.
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "b")])], 11))
        .await;
    assert_eq!(overall(&r), OVER);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_hits_still_count_as_in_the_reference() {
    // The reference INCRBYs whatever the answer: 8 then 5 makes 13, so a
    // single hit afterwards is still over.
    let mut s = TestServer::start(TEN).await;
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 8))
        .await;
    assert_eq!(overall(&r), OK);
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 5))
        .await;
    assert_eq!(overall(&r), OVER);
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 1))
        .await;
    assert_eq!(overall(&r), OVER, "the 5 denied hits were counted");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn descriptor_hits_addend_overrides_the_request_and_zero_only_checks() {
    let mut s = TestServer::start(TEN).await;
    let r = s
        .send(request_of(
            "d",
            vec![descriptor_with_hits(&[("k", "a")], 4)],
            1,
        ))
        .await;
    assert_eq!(remaining(&r), [6]);
    for _ in 0..3 {
        let r = s
            .send(request_of(
                "d",
                vec![descriptor_with_hits(&[("k", "a")], 0)],
                7,
            ))
            .await;
        assert_eq!(overall(&r), OK);
        assert_eq!(remaining(&r), [6], "hits_addend 0 checks without counting");
        assert!(r.statuses[0].current_limit.is_some());
    }
    // Per descriptor: each descriptor of one request uses its own.
    let r = s
        .send(request_of(
            "d",
            vec![
                descriptor_with_hits(&[("k", "b")], 3),
                descriptor(&[("k", "c")]),
            ],
            2,
        ))
        .await;
    assert_eq!(remaining(&r), [7, 8]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_hits_on_a_full_counter_reports_ok_with_nothing_remaining() {
    // Reference: over means `after > limit`; with 0 hits at count == limit,
    // after == limit, so the status is OK with remaining 0.
    let mut s = TestServer::start(TEN).await;
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 10))
        .await;
    assert_eq!(overall(&r), OK);
    let r = s
        .send(request_of(
            "d",
            vec![descriptor_with_hits(&[("k", "a")], 0)],
            0,
        ))
        .await;
    assert_eq!((codes(&r), remaining(&r)), (vec![OK], vec![0]));
    s.shutdown().await;
}

// ------------------------------------------------------------------ overrides

#[tokio::test(flavor = "multi_thread")]
async fn request_override_replaces_the_configured_limit() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: k
    rate_limit: { name: configured, unit: hour, requests_per_unit: 100 }
",
    )
    .await;
    let minute = RateLimitUnit::Minute as i32;
    for expected in [1u32, 0] {
        let r = s
            .send(request_of(
                "d",
                vec![descriptor_with_override(&[("k", "v")], 2, minute)],
                0,
            ))
            .await;
        assert_eq!(codes(&r), [OK]);
        assert_eq!(remaining(&r), [expected]);
        let limit = r.statuses[0].current_limit.as_ref().expect("limit");
        assert_eq!(limit.requests_per_unit, 2);
        assert_eq!(limit.unit, ResponseUnit::Minute as i32);
        assert_eq!(limit.name, "", "an override has no name");
        assert_eq!(reset(&r, 0), Some((60, 0)));
    }
    let r = s
        .send(request_of(
            "d",
            vec![descriptor_with_override(&[("k", "v")], 2, minute)],
            0,
        ))
        .await;
    assert_eq!(overall(&r), OVER);
    // Without the override, the configured hourly limit applies (its own counter).
    let r = s.should("d", &[&[("k", "v")]]).await;
    assert_eq!(limit_name(&r, 0).as_deref(), Some("configured"));
    assert_eq!(remaining(&r), [99]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn override_on_an_unmatched_descriptor_of_a_known_domain_applies() {
    let mut s = TestServer::start(TEN).await;
    let second = RateLimitUnit::Second as i32;
    let ask = || {
        request_of(
            "d",
            vec![descriptor_with_override(&[("nothing", "here")], 1, second)],
            0,
        )
    };
    let r = s.send(ask()).await;
    assert_eq!((codes(&r), remaining(&r)), (vec![OK], vec![0]));
    assert_eq!(
        r.statuses[0].current_limit.as_ref().map(|l| l.unit),
        Some(ResponseUnit::Second as i32)
    );
    assert_eq!(overall(&s.send(ask()).await), OVER);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn override_in_an_unknown_domain_is_ignored() {
    let mut s = TestServer::start(TEN).await;
    let minute = RateLimitUnit::Minute as i32;
    for _ in 0..3 {
        let r = s
            .send(request_of(
                "nope",
                vec![descriptor_with_override(&[("k", "v")], 1, minute)],
                0,
            ))
            .await;
        assert_eq!(overall(&r), OK);
        assert!(r.statuses[0].current_limit.is_none());
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn override_shares_the_counter_of_a_configured_limit_with_the_same_unit() {
    // The reference's cache key is the entries plus the window: an override
    // and a configured rule of the same unit count into one key.
    let mut s = TestServer::start(TEN).await;
    for _ in 0..3 {
        s.should("d", &[&[("k", "shared")]]).await;
    }
    let minute = RateLimitUnit::Minute as i32;
    let r = s
        .send(request_of(
            "d",
            vec![descriptor_with_override(&[("k", "shared")], 5, minute)],
            0,
        ))
        .await;
    assert_eq!((codes(&r), remaining(&r)), (vec![OK], vec![1]));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn override_with_unit_unknown_is_invalid_argument() {
    // floodgate's choice: the reference panics on UNKNOWN.
    let mut s = TestServer::start(TEN).await;
    let status = s
        .try_send(request_of(
            "d",
            vec![descriptor_with_override(
                &[("k", "v")],
                1,
                RateLimitUnit::Unknown as i32,
            )],
            0,
        ))
        .await
        .expect_err("UNKNOWN unit is rejected");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("unit"), "{}", status.message());
    s.shutdown().await;
}

// ------------------------------------------------- domains, several descriptors

#[tokio::test(flavor = "multi_thread")]
async fn unknown_domain_is_ok_with_no_limit() {
    let mut s = TestServer::start(TEN).await;
    for _ in 0..20 {
        let r = s.should("other", &[&[("k", "v")], &[("x", "y")]]).await;
        assert_eq!(overall(&r), OK);
        assert_eq!(codes(&r), [OK, OK]);
        assert_eq!(remaining(&r), [0, 0]);
        assert!(r.statuses.iter().all(|s| s.current_limit.is_none()));
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_descriptor_is_ok_with_no_current_limit() {
    let mut s = TestServer::start(TEN).await;
    let r = s.should("d", &[&[("unknown", "v")]]).await;
    assert_eq!(codes(&r), [OK]);
    assert!(r.statuses[0].current_limit.is_none());
    assert!(r.statuses[0].duration_until_reset.is_none());
    assert_eq!(remaining(&r), [0]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn any_over_descriptor_makes_the_request_over_and_statuses_keep_request_order() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - { key: tight, rate_limit: { name: tight, unit: minute, requests_per_unit: 1 } }
  - { key: loose, rate_limit: { name: loose, unit: minute, requests_per_unit: 100 } }
",
    )
    .await;
    let r = s
        .should(
            "d",
            &[&[("loose", "a")], &[("none", "x")], &[("tight", "a")]],
        )
        .await;
    assert_eq!(overall(&r), OK);
    let r = s
        .should(
            "d",
            &[&[("loose", "a")], &[("none", "x")], &[("tight", "a")]],
        )
        .await;
    assert_eq!(overall(&r), OVER);
    assert_eq!(codes(&r), [OK, OK, OVER]);
    assert_eq!(limit_name(&r, 0).as_deref(), Some("loose"));
    assert_eq!(limit_name(&r, 1), None);
    assert_eq!(limit_name(&r, 2).as_deref(), Some("tight"));
    assert_eq!(remaining(&r), [98, 0, 0]);
    s.shutdown().await;
}

// -------------------------------------------------------------- shadow & quota

#[tokio::test(flavor = "multi_thread")]
async fn rule_shadow_mode_reports_ok_but_still_counts() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: k
    shadow_mode: true
    rate_limit: { name: shadowed, unit: minute, requests_per_unit: 2 }
",
    )
    .await;
    for expected in [1u32, 0, 0, 0] {
        let r = s.should("d", &[&[("k", "v")]]).await;
        assert_eq!(overall(&r), OK);
        assert_eq!(codes(&r), [OK]);
        assert_eq!(remaining(&r), [expected]);
        assert_eq!(
            limit_name(&r, 0).as_deref(),
            Some("shadowed"),
            "current_limit is kept"
        );
    }
    // The counter really holds 4: an override of 6/minute on the same
    // entries (the same counter key, as in the reference) has 1 left after
    // this request's hit.
    let minute = RateLimitUnit::Minute as i32;
    let r = s
        .send(request_of(
            "d",
            vec![descriptor_with_override(&[("k", "v")], 6, minute)],
            0,
        ))
        .await;
    assert_eq!((codes(&r), remaining(&r)), (vec![OK], vec![1]));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_shadow_mode_does_not_hide_another_descriptor_over() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - { key: s, shadow_mode: true, rate_limit: { unit: minute, requests_per_unit: 1 } }
  - { key: h, rate_limit: { unit: minute, requests_per_unit: 1 } }
",
    )
    .await;
    s.should("d", &[&[("s", "1")], &[("h", "1")]]).await;
    let r = s.should("d", &[&[("s", "1")], &[("h", "1")]]).await;
    assert_eq!(overall(&r), OVER);
    assert_eq!(codes(&r), [OK, OVER]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn global_shadow_mode_makes_only_the_overall_code_ok() {
    let options = ServiceOptions {
        shadow_mode: true,
        ..ServiceOptions::default()
    };
    let mut s = TestServer::start_with(
        TEN.replace("10", "2").as_str(),
        options,
        LoadOptions::default(),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = s.should("d", &[&[("k", "v")]]).await;
        assert_eq!(overall(&r), OK, "global shadow mode never denies");
        statuses.push((codes(&r)[0], remaining(&r)[0]));
    }
    // Statuses still say OVER_LIMIT once the (still counted) limit is passed.
    assert_eq!(statuses, [(OK, 1), (OK, 0), (OVER, 0), (OVER, 0)]);
    s.shutdown().await;
}

const QUOTA: &str = r"
domain: d
descriptors:
  - { key: q1, quota_mode: true, rate_limit: { unit: minute, requests_per_unit: 1 } }
  - { key: q2, quota_mode: true, rate_limit: { unit: minute, requests_per_unit: 2 } }
  - { key: plain, rate_limit: { unit: minute, requests_per_unit: 100 } }
";

#[tokio::test(flavor = "multi_thread")]
async fn quota_mode_denies_only_when_every_quota_descriptor_is_over() {
    let mut s = TestServer::start(QUOTA).await;
    let ask: &[&[(&str, &str)]] = &[&[("q1", "a")], &[("q2", "a")], &[("plain", "a")]];
    let r = s.should("d", ask).await;
    assert_eq!((overall(&r), codes(&r)), (OK, vec![OK, OK, OK]));
    // q1 is over, q2 is not: not denied; q1's status still says it is over.
    let r = s.should("d", ask).await;
    assert_eq!(overall(&r), OK);
    assert_eq!(codes(&r), [OVER, OK, OK]);
    // Both quota descriptors over: denied.
    let r = s.should("d", ask).await;
    assert_eq!(overall(&r), OVER);
    assert_eq!(codes(&r), [OVER, OVER, OK]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_quota_descriptor_over_denies_regardless_of_quota_descriptors() {
    let mut s =
        TestServer::start(&QUOTA.replace("requests_per_unit: 100", "requests_per_unit: 1")).await;
    let ask: &[&[(&str, &str)]] = &[&[("q2", "b")], &[("plain", "b")]];
    assert_eq!(overall(&s.should("d", ask).await), OK);
    let r = s.should("d", ask).await;
    assert_eq!(overall(&r), OVER);
    assert_eq!(codes(&r), [OK, OVER]);
    s.shutdown().await;
}

// ------------------------------------------------------------- stop increment

const TWO_LIMITS: &str = r"
domain: d
descriptors:
  - { key: tight, rate_limit: { unit: minute, requests_per_unit: 1 } }
  - { key: loose, rate_limit: { unit: minute, requests_per_unit: 5 } }
";

#[tokio::test(flavor = "multi_thread")]
async fn stop_increment_when_over_limit_spares_the_other_descriptors() {
    let options = ServiceOptions {
        stop_increment_when_over_limit: true,
        ..ServiceOptions::default()
    };
    let mut s = TestServer::start_with(TWO_LIMITS, options, LoadOptions::default()).await;
    let both: &[&[(&str, &str)]] = &[&[("tight", "a")], &[("loose", "a")]];
    assert_eq!(overall(&s.should("d", both).await), OK);
    for _ in 0..3 {
        assert_eq!(overall(&s.should("d", both).await), OVER);
    }
    // Only the first request was charged to `loose`: 1 of 5, then this one.
    let r = s.should("d", &[&[("loose", "a")]]).await;
    assert_eq!(remaining(&r), [3]);
    s.shutdown().await;
}

/// The reference's integration case: `key2` 5/hour, `key3` 2/hour. The
/// third request is denied by `key3` and, with the stop-increment switch,
/// counts nothing: `key2` reports its untouched counter (2 used, 3 left),
/// not the 2 left it would have after a hit that was never counted.
#[tokio::test(flavor = "multi_thread")]
async fn stop_increment_reports_the_untouched_counters_remaining() {
    let options = ServiceOptions {
        stop_increment_when_over_limit: true,
        ..ServiceOptions::default()
    };
    let yaml = r"
domain: d
descriptors:
  - { key: key2, rate_limit: { unit: hour, requests_per_unit: 5 } }
  - { key: key3, rate_limit: { unit: hour, requests_per_unit: 2 } }
";
    let mut s = TestServer::start_with(yaml, options, LoadOptions::default()).await;
    let both: &[&[(&str, &str)]] = &[&[("key2", "v")], &[("key3", "v")]];
    let r = s.should("d", both).await;
    assert_eq!((codes(&r), remaining(&r)), (vec![OK, OK], vec![4, 1]));
    let r = s.should("d", both).await;
    assert_eq!((codes(&r), remaining(&r)), (vec![OK, OK], vec![3, 0]));
    let r = s.should("d", both).await;
    assert_eq!((codes(&r), remaining(&r)), (vec![OK, OVER], vec![3, 0]));
    // And the counter really is untouched.
    let r = s.should("d", &[&[("key2", "v")]]).await;
    assert_eq!(remaining(&r), [2]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_stop_increment_a_denied_request_counts_every_descriptor() {
    let mut s = TestServer::start(TWO_LIMITS).await;
    let both: &[&[(&str, &str)]] = &[&[("tight", "a")], &[("loose", "a")]];
    assert_eq!(overall(&s.should("d", both).await), OK);
    for _ in 0..3 {
        assert_eq!(overall(&s.should("d", both).await), OVER);
    }
    // 4 requests charged `loose`, then this one: 5 of 5.
    let r = s.should("d", &[&[("loose", "a")]]).await;
    assert_eq!((codes(&r), remaining(&r)), (vec![OK], vec![0]));
    s.shutdown().await;
}

// ----------------------------------------------------------------- validation

#[tokio::test(flavor = "multi_thread")]
async fn empty_domain_is_invalid_argument() {
    let mut s = TestServer::start(TEN).await;
    let status = s
        .try_send(request("", &[&[("k", "v")]]))
        .await
        .expect_err("rejected");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("domain"), "{}", status.message());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_descriptor_list_is_invalid_argument() {
    let mut s = TestServer::start(TEN).await;
    let status = s.try_send(request("d", &[])).await.expect_err("rejected");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("descriptor"),
        "{}",
        status.message()
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_with_an_empty_key_is_invalid_argument() {
    // floodgate's choice: the reference silently matches nothing.
    let mut s = TestServer::start(TEN).await;
    let status = s
        .try_send(request("d", &[&[("k", "v")], &[("k", "v"), ("", "x")]]))
        .await
        .expect_err("rejected");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("empty key"),
        "{}",
        status.message()
    );
    s.shutdown().await;
}

// ---------------------------------------------------------------- concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_on_one_key_admit_exactly_the_limit() {
    let s = TestServer::start(
        r"
domain: d
descriptors:
  - key: k
    rate_limit: { unit: minute, requests_per_unit: 100 }
",
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(s.new_client().await);
    }
    let mut tasks = Vec::new();
    for task in 0..50 {
        let mut client = clients[task % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u32;
            let mut over = 0u32;
            for _ in 0..20 {
                let r = client
                    .should_rate_limit(request("d", &[&[("k", "hot")]]))
                    .await
                    .expect("answer")
                    .into_inner();
                match overall(&r) {
                    Code::Ok => ok += 1,
                    Code::OverLimit => over += 1,
                    other => panic!("unexpected code {other:?}"),
                }
            }
            (ok, over)
        }));
    }
    let (mut ok, mut over) = (0, 0);
    for task in tasks {
        let (o, v) = task.await.expect("task");
        ok += o;
        over += v;
    }
    assert_eq!((ok, over), (100, 900));
    s.shutdown().await;
}

// ------------------------------------------------------- health and reflection

async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_reports_serving_for_the_server_and_ratelimit() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let s = TestServer::start(TEN).await;
    let mut health = HealthClient::new(channel(s.grpc_addr).await);
    for service in [
        "",
        "ratelimit",
        "envoy.service.ratelimit.v3.RateLimitService",
    ] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    s.shutdown().await;
}

/// The services a reflection client of version `$v` (`v1`, `v1alpha`)
/// lists at `$addr`.
macro_rules! reflected_services {
    ($v:ident, $addr:expr) => {{
        use tonic_reflection::pb::$v::ServerReflectionRequest;
        use tonic_reflection::pb::$v::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$v::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$v::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(channel($addr).await);
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(vec![ask]))
            .await
            .expect("reflection stream")
            .into_inner();
        let answer = answers
            .message()
            .await
            .expect("an answer")
            .expect("one message");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("expected a service list, got {answer:?}");
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_reflection_lists_the_rate_limit_service() {
    let s = TestServer::start(TEN).await;
    let names = reflected_services!(v1, s.grpc_addr);
    let has = |name: &str| names.iter().any(|n| n == name);
    assert!(
        has("envoy.service.ratelimit.v3.RateLimitService"),
        "{names:?}"
    );
    assert!(has("grpc.health.v1.Health"), "{names:?}");
    s.shutdown().await;
}

/// grpcio-reflection, older grpcurl and grpcui, and Postman ask the
/// `v1alpha` reflection service; it answers as `v1` does.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_reflection_v1alpha_lists_the_rate_limit_service() {
    let s = TestServer::start(TEN).await;
    let names = reflected_services!(v1alpha, s.grpc_addr);
    assert!(
        names
            .iter()
            .any(|n| n == "envoy.service.ratelimit.v3.RateLimitService"),
        "{names:?}"
    );
    s.shutdown().await;
}

// ------------------------------------------------------------------- hot swap

#[tokio::test(flavor = "multi_thread")]
async fn replaced_rules_apply_to_the_next_request() {
    let mut s = TestServer::start(TEN).await;
    let r = s.should("d", &[&[("k", "v")], &[("new", "x")]]).await;
    assert_eq!(remaining(&r), [9, 0]);
    assert!(r.statuses[1].current_limit.is_none());
    s.limiter.replace_rules(load_yaml(
        r"
domain: d
descriptors:
  - { key: new, rate_limit: { name: swapped, unit: second, requests_per_unit: 1 } }
",
        &LoadOptions::default(),
    ));
    let r = s.should("d", &[&[("k", "v")], &[("new", "x")]]).await;
    assert!(
        r.statuses[0].current_limit.is_none(),
        "the old rule is gone"
    );
    assert_eq!(limit_name(&r, 1).as_deref(), Some("swapped"));
    let r = s.should("d", &[&[("new", "x")]]).await;
    assert_eq!(overall(&r), OVER);
    s.shutdown().await;
}

// ------------------------------------------------------------------ edge cases

#[tokio::test(flavor = "multi_thread")]
async fn the_same_descriptor_twice_in_one_request_counts_twice_in_order() {
    // The reference pipelines one INCRBY per descriptor: the second sees the
    // first's hit.
    let mut s = TestServer::start(TEN.replace("10", "2").as_str()).await;
    let r = s.should("d", &[&[("k", "v")], &[("k", "v")]]).await;
    assert_eq!((overall(&r), remaining(&r)), (OK, vec![1, 0]));
    let r = s
        .should("d", &[&[("k", "w")], &[("k", "w")], &[("k", "w")]])
        .await;
    assert_eq!(overall(&r), OVER);
    assert_eq!(codes(&r), [OK, OK, OVER]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_descriptor_twice_with_stop_increment_answers() {
    let options = ServiceOptions {
        stop_increment_when_over_limit: true,
        ..ServiceOptions::default()
    };
    let mut s = TestServer::start_with(
        TEN.replace("10", "1").as_str(),
        options,
        LoadOptions::default(),
    )
    .await;
    let r = s.should("d", &[&[("k", "v")], &[("k", "v")]]).await;
    assert_eq!(overall(&r), OVER);
    // Denied: only the exceeding copy is charged, as the reference charges
    // an exceeding key, so the key is now full and a single hit is over.
    // (The reference's pre-check reads the key once and charges both copies;
    // either way the key is over afterwards.)
    let r = s.should("d", &[&[("k", "v")]]).await;
    assert_eq!((overall(&r), remaining(&r)), (OVER, vec![0]));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_override_is_never_shadowed() {
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: k
    shadow_mode: true
    rate_limit: { unit: minute, requests_per_unit: 1 }
",
    )
    .await;
    let minute = RateLimitUnit::Minute as i32;
    let ask = || {
        request_of(
            "d",
            vec![descriptor_with_override(&[("k", "v")], 1, minute)],
            0,
        )
    };
    assert_eq!(overall(&s.send(ask()).await), OK);
    let r = s.send(ask()).await;
    assert_eq!((overall(&r), codes(&r)), (OVER, vec![OVER]));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_requests_per_unit_with_zero_hits_is_ok() {
    // `after > limit` with after = 0 and limit = 0 is false.
    let mut s = TestServer::start(
        r"
domain: d
descriptors:
  - key: blocked
    rate_limit: { unit: minute, requests_per_unit: 0 }
",
    )
    .await;
    let r = s
        .send(request_of(
            "d",
            vec![descriptor_with_hits(&[("blocked", "x")], 0)],
            0,
        ))
        .await;
    assert_eq!((overall(&r), remaining(&r)), (OK, vec![0]));
    assert!(r.statuses[0].current_limit.is_some());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_increment_still_charges_the_exceeding_key_as_in_the_reference() {
    // Reference (redis fixed_cache_impl.go): with the flag, keys are read
    // first; the key that would exceed is incremented by the full addend and
    // only the others get INCRBY 0. So 8 + 5 = 13 is stored, and a single
    // hit afterwards is still over.
    let options = ServiceOptions {
        stop_increment_when_over_limit: true,
        ..ServiceOptions::default()
    };
    let mut s = TestServer::start_with(TEN, options, LoadOptions::default()).await;
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 8))
        .await;
    assert_eq!(overall(&r), OK);
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 5))
        .await;
    assert_eq!(overall(&r), OVER);
    let r = s
        .send(request_of("d", vec![descriptor(&[("k", "a")])], 1))
        .await;
    assert_eq!(overall(&r), OVER, "the exceeding key's 5 hits were counted");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_descriptor_with_no_entries_gets_no_limit_unless_it_has_an_override() {
    // Reference: entries are not validated; an empty descriptor matches
    // nothing, but an override applies without consulting the tree.
    let mut s = TestServer::start(TEN).await;
    let r = s.send(request_of("d", vec![descriptor(&[])], 0)).await;
    assert_eq!((overall(&r), codes(&r)), (OK, vec![OK]));
    assert!(r.statuses[0].current_limit.is_none());
    let minute = RateLimitUnit::Minute as i32;
    let r = s
        .send(request_of(
            "d",
            vec![descriptor_with_override(&[], 3, minute)],
            0,
        ))
        .await;
    assert_eq!(remaining(&r), [2]);
    s.shutdown().await;
}
