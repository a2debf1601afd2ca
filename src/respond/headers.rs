//! The headers Envoy adds to the caller's response: the reference's
//! `LIMIT_RESPONSE_HEADERS_ENABLED` headers and a domain's own
//! `response.headers` (and its 429 body); see the module doc of
//! [`crate::respond`] for which descriptor they describe.

use super::LimitHeaderNames;
use crate::decide::{Decision, DescriptorDecision};
use crate::limit::{Algorithm, NANOS_PER_SECOND, Nanos};
use crate::proto::RateLimitResponse;
use crate::proto::envoy::config::core::v3::HeaderValue;
use crate::rules::RuleLimit;
use crate::rules::policy::{
    BodyValues, HeaderStyle, ResetFormat, ResponsePolicy, is_json_content_type,
};

fn header(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.to_owned(),
        value,
        ..HeaderValue::default()
    }
}

/// Seconds in `nanos`, rounded up.
pub(super) fn ceil_seconds(nanos: Nanos) -> u64 {
    nanos.div_ceil(NANOS_PER_SECOND)
}

/// The reference's header choice and values (`ratelimit.go`).
pub(super) fn reference_headers(
    decision: &Decision,
    names: &LimitHeaderNames,
    out: &mut Vec<HeaderValue>,
) {
    let mut chosen: Option<&DescriptorDecision> = None;
    for descriptor in &decision.descriptors {
        if descriptor.limit.is_none() {
            continue;
        }
        let smaller =
            chosen.is_none_or(|best| status_remaining(descriptor) < status_remaining(best));
        if smaller {
            chosen = Some(descriptor);
        }
    }
    // The last OVER_LIMIT status wins over the smallest remaining.
    if let Some(over) = decision
        .descriptors
        .iter()
        .rev()
        .find(|d| d.over_limit && d.limit.is_some())
    {
        chosen = Some(over);
    }
    let Some((descriptor, rule_limit)) = chosen.and_then(|d| d.limit.as_ref().map(|l| (d, l)))
    else {
        return;
    };
    let limit = &rule_limit.limit;
    let reset = match limit.algorithm {
        // `divider - now % divider` on whole seconds, as the reference does.
        Algorithm::FixedWindow if limit.calendar.is_none() => {
            let window = (limit.window() / NANOS_PER_SECOND).max(1);
            window - (decision.context.now / NANOS_PER_SECOND) % window
        }
        // A calendar window ends at its next local boundary.
        Algorithm::FixedWindow | Algorithm::SlidingWindow | Algorithm::TokenBucket => {
            ceil_seconds(descriptor.reset_after.unwrap_or(0))
        }
    };
    out.reserve_exact(3);
    out.push(header(
        &names.limit,
        decimal(u64::from(rpu_u32(limit.requests_per_unit))),
    ));
    out.push(header(
        &names.remaining,
        decimal(u64::from(status_remaining(descriptor))),
    ));
    out.push(header(&names.reset, decimal(reset)));
}

fn rpu_u32(requests_per_unit: u64) -> u32 {
    u32::try_from(requests_per_unit).unwrap_or(u32::MAX)
}

/// `limit_remaining` as the status reports it.
fn status_remaining(descriptor: &DescriptorDecision) -> u32 {
    u32::try_from(descriptor.remaining).unwrap_or(u32::MAX)
}

/// The descriptor whose values a domain's headers and body report: among
/// over-limit descriptors, the one that frees up last (one that can never
/// fit first); else, among those
/// with a limit, the one with the least remaining under the limit its
/// headers describe (the first on a tie).
pub fn headline(decision: &Decision) -> Option<&DescriptorDecision> {
    let mut over: Option<&DescriptorDecision> = None;
    let mut least: Option<(&DescriptorDecision, u64)> = None;
    for descriptor in decision.descriptors.iter().filter(|d| d.limit.is_some()) {
        if descriptor.over_limit {
            // A request that can never fit frees up never.
            let later = |best: &DescriptorDecision| {
                (descriptor.never_fits, descriptor.reset_after)
                    > (best.never_fits, best.reset_after)
            };
            if over.is_none_or(later) {
                over = Some(descriptor);
            }
        } else {
            let remaining = described(descriptor).map_or(descriptor.remaining, |d| d.remaining);
            if least.is_none_or(|(_, best)| remaining < best) {
                least = Some((descriptor, remaining));
            }
        }
    }
    over.or(least.map(|(descriptor, _)| descriptor))
}

/// The limit a domain's `X-RateLimit-*` or `RateLimit*` headers describe.
struct Described<'d> {
    limit: &'d RuleLimit,
    remaining: u64,
    reset_after: Nanos,
}

/// The rule's `headers: true` limit when it has one, else the limit the
/// status reports (the most restrictive).
fn described(descriptor: &DescriptorDecision) -> Option<Described<'_>> {
    if let Some(chosen) = descriptor.header_limit
        && let Some(limit) = descriptor
            .rule
            .as_ref()
            .and_then(|rule| rule.limits.get(chosen.slot))
    {
        return Some(Described {
            limit,
            remaining: chosen.remaining,
            reset_after: chosen.reset_after,
        });
    }
    descriptor.limit.as_ref().map(|limit| Described {
        limit,
        remaining: descriptor.remaining,
        reset_after: descriptor.reset_after.unwrap_or(0),
    })
}

/// `reset_after` from `now` in a `reset:` format, rounded up.
fn reset_value(format: ResetFormat, now: Nanos, reset_after: Nanos) -> u64 {
    match format {
        ResetFormat::DeltaSeconds => ceil_seconds(reset_after),
        ResetFormat::UnixSeconds => ceil_seconds(now.saturating_add(reset_after)),
        ResetFormat::UnixMillis => now.saturating_add(reset_after).div_ceil(1_000_000),
    }
}

/// A domain's own headers and body.
pub(super) fn apply_policy(
    decision: &Decision,
    policy: &ResponsePolicy,
    response: &mut RateLimitResponse,
) {
    let Some(descriptor) = headline(decision) else {
        return;
    };
    let Some(rule_limit) = descriptor.limit.as_ref() else {
        return;
    };
    let limit = &rule_limit.limit;
    let now = decision.context.now;
    let reset_after = descriptor.reset_after.unwrap_or(0);
    let delta = ceil_seconds(reset_after);
    let reset = reset_value(policy.reset, now, reset_after);
    let retry_after = delta.max(1);
    // The headers describe the rule's `headers: true` limit if it has one;
    // Retry-After and the body always describe the limit that denied.
    let shown = described(descriptor).unwrap_or(Described {
        limit: rule_limit,
        remaining: descriptor.remaining,
        reset_after,
    });
    let headers = &mut response.response_headers_to_add;
    let own_headers = policy.headers != HeaderStyle::None;
    let count = match policy.headers {
        HeaderStyle::None => 0,
        HeaderStyle::XRateLimit => 3,
        HeaderStyle::Ietf => 2,
    } + if decision.over_limit {
        usize::from(own_headers) + usize::from(policy.body.is_some())
    } else {
        0
    };
    headers.reserve_exact(count);
    match policy.headers {
        HeaderStyle::None => {}
        HeaderStyle::XRateLimit => {
            headers.push(header(
                "X-RateLimit-Limit",
                decimal(shown.limit.limit.requests_per_unit),
            ));
            headers.push(header("X-RateLimit-Remaining", decimal(shown.remaining)));
            headers.push(header(
                "X-RateLimit-Reset",
                decimal(reset_value(policy.reset, now, shown.reset_after)),
            ));
        }
        HeaderStyle::Ietf => {
            let name = policy_name(shown.limit, descriptor);
            let window = ceil_seconds(shown.limit.limit.window()).max(1);
            headers.push(header(
                "RateLimit-Policy",
                sf_item(
                    name,
                    [
                        (";q=", shown.limit.limit.requests_per_unit),
                        (";w=", window),
                    ],
                ),
            ));
            headers.push(header(
                "RateLimit",
                sf_item(
                    name,
                    [
                        (";r=", shown.remaining),
                        (";t=", ceil_seconds(shown.reset_after)),
                    ],
                ),
            ));
        }
    }
    if !decision.over_limit {
        return;
    }
    // No wait makes a request that can never fit succeed: no retry time.
    if own_headers && !descriptor.never_fits {
        headers.push(header("Retry-After", decimal(retry_after)));
    }
    if descriptor.never_fits && policy.body.is_some() {
        response.raw_body =
            never_fits_body(rule_limit, is_json_content_type(&policy.content_type)).into_bytes();
        headers.push(header("content-type", String::from(&*policy.content_type)));
    } else if let Some(template) = &policy.body {
        let rule = rule_limit
            .name
            .as_deref()
            .or(descriptor.rule.as_deref().map(|rule| &*rule.id))
            .unwrap_or_default();
        let body = template.render(&BodyValues {
            limit: limit.requests_per_unit,
            remaining: descriptor.remaining,
            reset,
            retry_after,
            rule,
            domain: &decision.context.domain,
            used: descriptor.used,
            window: ceil_seconds(limit.window()),
        });
        response.raw_body = body.into_bytes();
        headers.push(header("content-type", String::from(&*policy.content_type)));
    }
}

/// The name a `RateLimit-Policy` item carries: the limit's name, else the
/// rule's, else `default` (rule ids are internal config paths).
fn policy_name<'d>(limit: &'d RuleLimit, descriptor: &'d DescriptorDecision) -> &'d str {
    limit
        .name
        .as_deref()
        .or(descriptor.rule.as_ref().and_then(|r| r.name.as_deref()))
        .unwrap_or("default")
}

/// A Structured Field item (RFC 9651): `name` as an sf-string, then each
/// parameter's `;key=` and integer value. Written straight into one String:
/// `format!` cost more than the rest of the response together.
pub(super) fn sf_item(name: &str, params: [(&str, u64); 2]) -> String {
    let mut out = String::with_capacity(name.len() + 2 + 2 * (3 + MAX_DECIMAL));
    out.push('"');
    if name
        .bytes()
        .all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\')
    {
        // Nothing to escape or replace: the common case.
        out.push_str(name);
    } else {
        push_sf_escaped(&mut out, name);
    }
    out.push('"');
    for (key, value) in params {
        out.push_str(key);
        push_decimal(&mut out, value);
    }
    out
}

/// `value`'s characters inside an sf-string: `"` and `\` escaped,
/// anything outside printable ASCII replaced by `_`.
pub(super) fn push_sf_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
}

/// Digits of `u64::MAX`.
const MAX_DECIMAL: usize = 20;

/// `n` in decimal, in one allocation (header values are built for every
/// answer; this skips the formatting machinery).
pub(super) fn decimal(n: u64) -> String {
    let mut out = String::with_capacity(MAX_DECIMAL);
    push_decimal(&mut out, n);
    out
}

fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; MAX_DECIMAL];
    let mut start = MAX_DECIMAL;
    loop {
        start -= 1;
        // n % 10 < 10: the cast keeps it.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: always UTF-8.
    if let Ok(digits) = std::str::from_utf8(&digits[start..]) {
        out.push_str(digits);
    }
}

/// The 429 body for a request that can never fit, in place of the domain's
/// template (whose `{retry_after}` would promise a wait that cannot help).
fn never_fits_body(rule_limit: &RuleLimit, json: bool) -> String {
    let largest = rule_limit.limit.burst;
    let name = rule_limit.name.as_deref().unwrap_or("the limit");
    let message = format!(
        "This request counts as more than the {largest} requests {name} admits at once: \
         it can never succeed, and retrying will not help. Send it in smaller parts."
    );
    if json {
        serde_json::json!({
            "error": "request_too_large",
            "message": message,
            "limit": largest,
            "never_fits": true,
        })
        .to_string()
    } else {
        message
    }
}
