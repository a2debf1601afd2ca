//! Builds what a caller receives from a [`Decision`]: the protobuf
//! `RateLimitResponse` (statuses, codes, limits, remaining, reset).
//!
//! Envoy reads `current_limit`, `limit_remaining` and `duration_until_reset`
//! to build its own `x-ratelimit-*` headers, so they are filled for OK
//! answers too.

use crate::limit::{Algorithm, NANOS_PER_SECOND, Nanos, Unit};
use crate::proto::{Code, DescriptorStatus, RateLimit, RateLimitResponse, ResponseUnit};
use crate::service::{Decision, DescriptorDecision};

/// The protobuf response for a decision.
pub fn to_response(decision: &Decision) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: if decision.over_limit {
            Code::OverLimit
        } else {
            Code::Ok
        } as i32,
        statuses: decision.descriptors.iter().map(to_status).collect(),
        ..RateLimitResponse::default()
    }
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
            unit: unit_to_proto(limit.unit) as i32,
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

/// The response's unit for a limit's unit.
pub fn unit_to_proto(unit: Unit) -> ResponseUnit {
    match unit {
        Unit::Second => ResponseUnit::Second,
        Unit::Minute => ResponseUnit::Minute,
        Unit::Hour => ResponseUnit::Hour,
        Unit::Day => ResponseUnit::Day,
        Unit::Week => ResponseUnit::Week,
        Unit::Month => ResponseUnit::Month,
        Unit::Year => ResponseUnit::Year,
    }
}
