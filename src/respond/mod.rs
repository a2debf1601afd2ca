//! Builds what a caller receives from a [`Decision`]: the protobuf
//! `RateLimitResponse` (statuses, codes, limits, remaining, reset), the
//! headers Envoy adds to the client's response, the 429 body, and the
//! dynamic metadata Envoy's access logs can show.
//!
//! Envoy reads `current_limit`, `limit_remaining` and `duration_until_reset`
//! to build its own `x-ratelimit-*` headers, so they are filled for OK
//! answers too.
//!
//! # Headers (`response_headers_to_add`)
//!
//! Envoy adds these to the upstream's response on OK and to its 429 on
//! OVER_LIMIT.
//! - The reference's `LIMIT_RESPONSE_HEADERS_ENABLED` headers
//!   ([`ResponseOptions::limit_headers`]), exactly as the
//!   reference builds them: the status with the smallest remaining (first on
//!   a tie), except that the last OVER_LIMIT status wins; limit =
//!   `requests_per_unit`, reset = seconds to the end of the window; sent
//!   whatever the global shadow mode says; none when no descriptor has a
//!   limit. A domain whose `response.headers` is not `none` sends its own
//!   headers instead.
//! - A domain's `response.headers`: values from the most restrictive
//!   descriptor, see [`headline`]. `X-RateLimit-Limit` and `q=` are that
//!   limit's `requests_per_unit`, also when its window is several units
//!   (`unit_multiplier`) or its rule has several limits: the limit reported
//!   is the one closest to denying, unless the rule marks one limit
//!   `headers: true`. `Retry-After` (seconds, rounded up, at least 1) is
//!   added when the overall code is OVER_LIMIT, except for a request that
//!   can never fit (more hits than a token bucket's `burst`), which gets a
//!   body saying so in place of the template and no retry time.
//! - With a body: `content-type`, on OVER_LIMIT only (so it never replaces
//!   the upstream's on OK answers).
//!
//! # Dynamic metadata
//!
//! Every answer (unless turned off) carries a `Struct`, which Envoy stores
//! under `envoy.filters.http.ratelimit`:
//!
//! ```json
//! {"domain": "xola", "overall": "OVER_LIMIT",
//!  "descriptors": [
//!    {"code": "OVER_LIMIT", "rule": "xola.user.seller", "limit": "user_seller",
//!     "remaining": 0, "reset_seconds": 296, "used": 905},
//!    {"code": "OK", "fallback": "identity"},
//!    {"code": "OK"}]}
//! ```
//!
//! - `domain`, `overall` (`OK` or `OVER_LIMIT`, after global shadow mode);
//!   `global_shadow: true` when global shadow mode turned an OVER_LIMIT into OK.
//! - `descriptors`: one object per request descriptor, in request order:
//!   `code`; `rule` (the matched rule's id, absent when none matched);
//!   `limit` (the reported limit's name, when it has one); `remaining`,
//!   `reset_seconds` (rounded up) and `used` (count including this request)
//!   when a limit applied; `shadowed: true` when the rule's shadow mode
//!   turned OVER_LIMIT into OK; `never_fits: true` (without
//!   `reset_seconds`) for a request that can never fit; `unlimited: true`
//!   for an unlimited rule;
//!   `fallback: <group>` when a fallback group answered it OK uncounted.
//!
//! In an access log: `%DYNAMIC_METADATA(envoy.filters.http.ratelimit:overall)%`
//! or `%DYNAMIC_METADATA(envoy.filters.http.ratelimit:descriptors)%`.

mod headers;
mod metadata;
pub mod options;

pub use headers::headline;
pub use metadata::metadata;
pub use options::{LimitHeaderNames, ResponseOptions};

use headers::{apply_policy, reference_headers};

use crate::decide::{Decision, DescriptorDecision};
use crate::limit::{Algorithm, Limit, NANOS_PER_SECOND, Nanos, Unit};
use crate::proto::convert::unit_to_proto;
use crate::proto::{Code, DescriptorStatus, RateLimit, RateLimitResponse};
use crate::rules::policy::HeaderStyle;

/// The protobuf response for a decision.
pub fn to_response(decision: &Decision, options: &ResponseOptions) -> RateLimitResponse {
    let context = &decision.context;
    let mut response = RateLimitResponse {
        overall_code: if decision.over_limit {
            Code::OverLimit
        } else {
            Code::Ok
        } as i32,
        statuses: decision.descriptors.iter().map(to_status).collect(),
        ..RateLimitResponse::default()
    };
    let policy = context.policy.as_deref();
    let own_headers = policy.is_some_and(|p| p.headers != HeaderStyle::None);
    if let Some(names) = options.limit_headers.as_deref()
        && !own_headers
    {
        reference_headers(decision, names, &mut response.response_headers_to_add);
    }
    if let Some(policy) = policy {
        apply_policy(decision, policy, &mut response);
    }
    if options.dynamic_metadata {
        response.dynamic_metadata = Some(metadata(decision));
    }
    response
}

fn to_status(decision: &DescriptorDecision) -> DescriptorStatus {
    let code = if decision.over_limit {
        Code::OverLimit
    } else {
        Code::Ok
    };
    let Some(rule_limit) = decision.limit.as_ref() else {
        // An unlimited rule reports the largest remaining, as the reference does.
        let unlimited = decision.rule.as_ref().is_some_and(|rule| rule.unlimited);
        return DescriptorStatus {
            code: code as i32,
            limit_remaining: if unlimited { u32::MAX } else { 0 },
            ..DescriptorStatus::default()
        };
    };
    let limit = &rule_limit.limit;
    let reset = decision.reset_after.unwrap_or(0);
    DescriptorStatus {
        code: code as i32,
        current_limit: Some(RateLimit {
            name: rule_limit.name.as_deref().unwrap_or_default().to_owned(),
            requests_per_unit: u32::try_from(limit.requests_per_unit).unwrap_or(u32::MAX),
            unit: unit_to_proto(reported_unit(limit)) as i32,
        }),
        limit_remaining: u32::try_from(decision.remaining).unwrap_or(u32::MAX),
        duration_until_reset: Some(duration(reset, limit.algorithm)),
        quota: None,
    }
}

/// A reset as a protobuf duration. Fixed windows report whole seconds rounded
/// up, exactly as the reference computes them (`unit - now % unit` on whole
/// seconds); the other algorithms report the exact time.
fn duration(reset: Nanos, algorithm: Algorithm) -> prost_types::Duration {
    let reset = match algorithm {
        Algorithm::FixedWindow => reset
            .div_ceil(NANOS_PER_SECOND)
            .saturating_mul(NANOS_PER_SECOND),
        Algorithm::SlidingWindow | Algorithm::TokenBucket => reset,
    };
    prost_types::Duration {
        seconds: i64::try_from(reset / NANOS_PER_SECOND).unwrap_or(i64::MAX),
        nanos: i32::try_from(reset % NANOS_PER_SECOND).unwrap_or(0),
    }
}

/// The unit reported for a limit in `current_limit`. The protobuf has no
/// field for a window of several units, so a window that is exactly one
/// larger unit (60 minutes, 24 hours, 7 days) is reported as that unit; any
/// other multiple (`unit_multiplier: 10` minutes) is reported in its
/// configured unit, with `requests_per_unit` unchanged: Envoy's `w=` then shows
/// one unit, while floodgate's own headers (a domain's `response:` block) carry
/// the real window.
pub fn reported_unit(limit: &Limit) -> Unit {
    let window = limit
        .unit
        .seconds()
        .saturating_mul(limit.unit_multiplier.max(1));
    Unit::ALL
        .into_iter()
        .find(|unit| unit.seconds() == window)
        .unwrap_or(limit.unit)
}

#[cfg(test)]
mod tests {
    use super::headers::{decimal, push_sf_escaped, sf_item};
    use super::*;

    #[test]
    fn decimals_and_sf_items_are_written_as_format_writes_them() {
        for n in [0, 7, 10, 99, 100, 4_000_000_000, u64::MAX - 1, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
        }
        assert_eq!(
            sf_item("per_user", [(";q=", 3), (";w=", 60)]),
            "\"per_user\";q=3;w=60"
        );
        assert_eq!(
            sf_item("a\"b\\c é", [(";r=", 0), (";t=", u64::MAX)]),
            format!("\"a\\\"b\\\\c _\";r=0;t={}", u64::MAX)
        );
    }

    proptest::proptest! {
        /// As `format!` wrote them, with the sf-string built char by char.
        #[test]
        fn sf_items_match_the_formatted_form(name in "[ -~]{0,30}|\\PC{0,30}", a: u64, b: u64) {
            let mut quoted = String::from('"');
            push_sf_escaped(&mut quoted, &name);
            quoted.push('"');
            proptest::prop_assert_eq!(
                sf_item(&name, [(";q=", a), (";w=", b)]),
                format!("{quoted};q={a};w={b}")
            );
            proptest::prop_assert_eq!(decimal(a), a.to_string());
        }
    }

    #[test]
    fn whole_larger_units_are_reported_as_that_unit() {
        let minutes = |n| Limit {
            unit_multiplier: n,
            ..Limit::fixed(20, Unit::Minute)
        };
        assert_eq!(reported_unit(&minutes(1)), Unit::Minute);
        assert_eq!(reported_unit(&minutes(60)), Unit::Hour);
        assert_eq!(reported_unit(&minutes(10)), Unit::Minute);
        assert_eq!(reported_unit(&minutes(24 * 60)), Unit::Day);
    }

    #[test]
    fn fixed_windows_report_whole_seconds_rounded_up_like_the_reference() {
        let d = duration(59 * NANOS_PER_SECOND + 1, Algorithm::FixedWindow);
        assert_eq!((d.seconds, d.nanos), (60, 0));
        let d = duration(1_500_000_000, Algorithm::TokenBucket);
        assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
    }
}
