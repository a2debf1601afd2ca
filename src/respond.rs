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
//!   ([`crate::policy::ResponseOptions::limit_headers`]), exactly as the
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
//!   is the one closest to denying. `Retry-After` (seconds, rounded up, at
//!   least 1) is added when the overall code is OVER_LIMIT.
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
//!   turned OVER_LIMIT into OK; `unlimited: true` for an unlimited rule;
//!   `fallback: <group>` when a fallback group answered it OK uncounted.
//!
//! In an access log: `%DYNAMIC_METADATA(envoy.filters.http.ratelimit:overall)%`
//! or `%DYNAMIC_METADATA(envoy.filters.http.ratelimit:descriptors)%`.

use crate::limit::{Algorithm, Limit, NANOS_PER_SECOND, Nanos, Unit};
use crate::policy::{BodyValues, HeaderStyle, LimitHeaderNames, ResetFormat, ResponsePolicy};
use crate::proto::encoded_struct::{EncodedStruct, StructWriter};
use crate::proto::envoy::config::core::v3::HeaderValue;
use crate::proto::{Code, DescriptorStatus, RateLimit, RateLimitResponse, ResponseUnit};
use crate::service::{Decision, DescriptorDecision};

/// The protobuf response for a decision.
pub fn to_response(decision: &Decision) -> RateLimitResponse {
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
    if let Some(names) = context.options.limit_headers.as_deref()
        && !own_headers
    {
        reference_headers(decision, names, &mut response.response_headers_to_add);
    }
    if let Some(policy) = policy {
        apply_policy(decision, policy, &mut response);
    }
    if context.options.dynamic_metadata {
        response.dynamic_metadata = Some(metadata(decision));
    }
    response
}

fn header(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.to_owned(),
        value,
        ..HeaderValue::default()
    }
}

/// Seconds in `nanos`, rounded up.
fn ceil_seconds(nanos: Nanos) -> u64 {
    nanos.div_ceil(NANOS_PER_SECOND)
}

/// The reference's header choice and values (`ratelimit.go`).
fn reference_headers(decision: &Decision, names: &LimitHeaderNames, out: &mut Vec<HeaderValue>) {
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
        Algorithm::FixedWindow => {
            let window = (limit.window() / NANOS_PER_SECOND).max(1);
            window - (decision.context.now / NANOS_PER_SECOND) % window
        }
        Algorithm::SlidingWindow | Algorithm::TokenBucket => {
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
/// over-limit descriptors, the one that frees up last; else, among those
/// with a limit, the one with the least remaining (the first on a tie).
pub fn headline(decision: &Decision) -> Option<&DescriptorDecision> {
    let mut over: Option<&DescriptorDecision> = None;
    let mut least: Option<&DescriptorDecision> = None;
    for descriptor in decision.descriptors.iter().filter(|d| d.limit.is_some()) {
        if descriptor.over_limit {
            if over.is_none_or(|best| descriptor.reset_after > best.reset_after) {
                over = Some(descriptor);
            }
        } else if least.is_none_or(|best| descriptor.remaining < best.remaining) {
            least = Some(descriptor);
        }
    }
    over.or(least)
}

/// A domain's own headers and body.
fn apply_policy(decision: &Decision, policy: &ResponsePolicy, response: &mut RateLimitResponse) {
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
    let reset = match policy.reset {
        ResetFormat::DeltaSeconds => delta,
        ResetFormat::UnixSeconds => ceil_seconds(now.saturating_add(reset_after)),
        ResetFormat::UnixMillis => now.saturating_add(reset_after).div_ceil(1_000_000),
    };
    let retry_after = delta.max(1);
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
                decimal(limit.requests_per_unit),
            ));
            headers.push(header(
                "X-RateLimit-Remaining",
                decimal(descriptor.remaining),
            ));
            headers.push(header("X-RateLimit-Reset", decimal(reset)));
        }
        HeaderStyle::Ietf => {
            let name = policy_name(descriptor);
            let window = ceil_seconds(limit.window()).max(1);
            headers.push(header(
                "RateLimit-Policy",
                sf_item(name, [(";q=", limit.requests_per_unit), (";w=", window)]),
            ));
            headers.push(header(
                "RateLimit",
                sf_item(name, [(";r=", descriptor.remaining), (";t=", delta)]),
            ));
        }
    }
    if !decision.over_limit {
        return;
    }
    if own_headers {
        headers.push(header("Retry-After", decimal(retry_after)));
    }
    if let Some(template) = &policy.body {
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
fn policy_name(descriptor: &DescriptorDecision) -> &str {
    descriptor
        .limit
        .as_ref()
        .and_then(|l| l.name.as_deref())
        .or(descriptor.rule.as_ref().and_then(|r| r.name.as_deref()))
        .unwrap_or("default")
}

/// A Structured Field item (RFC 9651): `name` as an sf-string, then each
/// parameter's `;key=` and integer value. Written straight into one String:
/// `format!` cost more than the rest of the response together.
fn sf_item(name: &str, params: [(&str, u64); 2]) -> String {
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
fn push_sf_escaped(out: &mut String, value: &str) {
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
fn decimal(n: u64) -> String {
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

fn code_name(over_limit: bool) -> &'static str {
    if over_limit { "OVER_LIMIT" } else { "OK" }
}

/// A count as a protobuf Struct number (a double).
fn number(value: u64) -> f64 {
    // Counts beyond 2^53 lose precision in a protobuf Struct; none are that large.
    #[allow(clippy::cast_precision_loss)]
    let number = value as f64;
    number
}

/// The dynamic metadata of a decision (field names in the module doc),
/// written straight into its encoding: one allocation, sized by
/// `metadata_capacity`. Each Struct's keys are written in ascending
/// order, as the encoding of a `prost_types::Struct` has them.
pub fn metadata(decision: &Decision) -> EncodedStruct {
    let mut out = StructWriter::with_capacity(metadata_capacity(decision));
    let list = out.begin_list("descriptors");
    for descriptor in &decision.descriptors {
        let item = out.begin_list_struct();
        out.string("code", code_name(descriptor.over_limit));
        if let Some(group) = &descriptor.skipped_by {
            out.string("fallback", group);
        }
        let rule_limit = descriptor.limit.as_ref();
        if let Some(rule_limit) = rule_limit {
            if let Some(name) = &rule_limit.name {
                out.string("limit", name);
            }
            out.number("remaining", number(descriptor.remaining));
            out.number(
                "reset_seconds",
                number(ceil_seconds(descriptor.reset_after.unwrap_or(0))),
            );
        }
        if let Some(rule) = &descriptor.rule {
            out.string("rule", &rule.id);
        }
        if descriptor.shadowed {
            out.bool("shadowed", true);
        }
        if descriptor.rule.as_ref().is_some_and(|rule| rule.unlimited) {
            out.bool("unlimited", true);
        }
        if rule_limit.is_some() {
            out.number("used", number(descriptor.used));
        }
        out.end_list_struct(item);
    }
    out.end_list(list);
    out.string("domain", &decision.context.domain);
    if decision.global_shadowed {
        out.bool("global_shadow", true);
    }
    out.string("overall", code_name(decision.over_limit));
    out.finish()
}

/// An upper bound of [`metadata`]'s size for lengths below 2^21 (3-byte
/// varints): per string entry its text plus 24 bytes of keys, name and
/// lengths; per descriptor 200 bytes for everything else (code, numbers,
/// flags, its item's framing); 100 bytes for the top level.
fn metadata_capacity(decision: &Decision) -> usize {
    const STRING_ENTRY: usize = 24;
    let text = |s: Option<&str>| s.map_or(0, |s| s.len() + STRING_ENTRY);
    let descriptors: usize = decision
        .descriptors
        .iter()
        .map(|d| {
            200 + text(d.skipped_by.as_deref())
                + text(d.limit.as_ref().and_then(|l| l.name.as_deref()))
                + text(d.rule.as_ref().map(|r| &*r.id))
        })
        .sum();
    100 + decision.context.domain.len() + STRING_ENTRY + descriptors
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

#[cfg(test)]
mod tests {
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

/// The metadata's bytes against prost's encoding of the same data built as
/// a `prost_types::Struct` (how it was built before it was written directly).
#[cfg(test)]
mod metadata_tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::prelude::*;
    use prost::Message;
    use prost_types::value::Kind;

    use super::*;
    use crate::rules::{Rule, RuleLimit};
    use crate::service::ResponseContext;

    fn string_value(value: &str) -> prost_types::Value {
        prost_types::Value {
            kind: Some(Kind::StringValue(value.to_owned())),
        }
    }

    fn number_value(value: u64) -> prost_types::Value {
        prost_types::Value {
            kind: Some(Kind::NumberValue(number(value))),
        }
    }

    fn bool_value(value: bool) -> prost_types::Value {
        prost_types::Value {
            kind: Some(Kind::BoolValue(value)),
        }
    }

    /// The metadata as a `prost_types::Struct`, field by field as the module
    /// doc lists them.
    fn metadata_struct(decision: &Decision) -> prost_types::Struct {
        let descriptors = decision
            .descriptors
            .iter()
            .map(|descriptor| {
                let mut fields = BTreeMap::new();
                fields.insert(
                    "code".to_owned(),
                    string_value(code_name(descriptor.over_limit)),
                );
                if let Some(rule) = &descriptor.rule {
                    fields.insert("rule".to_owned(), string_value(&rule.id));
                    if rule.unlimited {
                        fields.insert("unlimited".to_owned(), bool_value(true));
                    }
                }
                if let Some(rule_limit) = &descriptor.limit {
                    if let Some(name) = &rule_limit.name {
                        fields.insert("limit".to_owned(), string_value(name));
                    }
                    fields.insert("remaining".to_owned(), number_value(descriptor.remaining));
                    fields.insert(
                        "reset_seconds".to_owned(),
                        number_value(ceil_seconds(descriptor.reset_after.unwrap_or(0))),
                    );
                    fields.insert("used".to_owned(), number_value(descriptor.used));
                }
                if descriptor.shadowed {
                    fields.insert("shadowed".to_owned(), bool_value(true));
                }
                if let Some(group) = &descriptor.skipped_by {
                    fields.insert("fallback".to_owned(), string_value(group));
                }
                prost_types::Value {
                    kind: Some(Kind::StructValue(prost_types::Struct { fields })),
                }
            })
            .collect();
        let mut fields = BTreeMap::new();
        fields.insert("domain".to_owned(), string_value(&decision.context.domain));
        fields.insert(
            "overall".to_owned(),
            string_value(code_name(decision.over_limit)),
        );
        if decision.global_shadowed {
            fields.insert("global_shadow".to_owned(), bool_value(true));
        }
        fields.insert(
            "descriptors".to_owned(),
            prost_types::Value {
                kind: Some(Kind::ListValue(prost_types::ListValue {
                    values: descriptors,
                })),
            },
        );
        prost_types::Struct { fields }
    }

    fn rule(id: &str, unlimited: bool) -> Arc<Rule> {
        Arc::new(Rule {
            id: id.into(),
            limits: Vec::new(),
            unlimited,
            shadow_mode: false,
            quota_mode: false,
            replaces: Vec::new(),
            name: None,
            reference_form: false,
            detailed_metric: false,
            value_to_metric: Vec::new(),
        })
    }

    fn descriptor() -> DescriptorDecision {
        DescriptorDecision::default()
    }

    fn decision(domain: &str, descriptors: Vec<DescriptorDecision>) -> Decision {
        Decision {
            over_limit: descriptors.iter().any(|d| d.over_limit),
            global_shadowed: false,
            descriptors: descriptors.into(),
            context: ResponseContext {
                domain: domain.into(),
                ..ResponseContext::default()
            },
        }
    }

    /// Byte-identical to prost, within the capacity estimate, and read back
    /// as the same Struct (also through an encoded response).
    fn check(decision: &Decision) {
        let expected = metadata_struct(decision);
        let written = metadata(decision);
        assert_eq!(written.as_bytes(), expected.encode_to_vec().as_slice());
        assert!(
            written.as_bytes().len() <= metadata_capacity(decision),
            "{} bytes, estimated {}",
            written.as_bytes().len(),
            metadata_capacity(decision)
        );
        let response = RateLimitResponse {
            dynamic_metadata: Some(written),
            ..RateLimitResponse::default()
        };
        let decoded = RateLimitResponse::decode(response.encode_to_vec().as_slice())
            .expect("the response decodes");
        let read = decoded
            .dynamic_metadata
            .expect("metadata present")
            .to_struct()
            .expect("the metadata decodes");
        assert_eq!(read, expected);
    }

    #[test]
    fn every_field_and_size_class_encodes_as_prost_encodes_it() {
        let limited = |name: Option<&str>| {
            Some(RuleLimit {
                name: name.map(Into::into),
                limit: Limit::fixed(10, Unit::Minute),
            })
        };
        let full = DescriptorDecision {
            over_limit: true,
            limit: limited(Some("user_seller")),
            remaining: 0,
            reset_after: Some(295 * NANOS_PER_SECOND + 1),
            rule: Some(rule("xola.user.seller", false)),
            shadowed: true,
            used: 905,
            skipped_by: Some("identity".into()),
        };
        let unlimited = DescriptorDecision {
            rule: Some(rule("d.unlimited", true)),
            ..descriptor()
        };
        // Every key at once (no real decision has them all).
        let every = DescriptorDecision {
            rule: Some(rule("d.every", true)),
            ..full.clone()
        };
        let huge = DescriptorDecision {
            limit: limited(None),
            remaining: u64::MAX,
            used: (1 << 53) + 1,
            reset_after: Some(u64::MAX),
            ..descriptor()
        };
        let long = |n: usize| DescriptorDecision {
            rule: Some(rule(&"r".repeat(n), false)),
            limit: limited(Some(&"é".repeat(n))),
            ..descriptor()
        };
        check(&decision("", Vec::new()));
        check(&decision(
            "xola",
            vec![full.clone(), unlimited, every, descriptor(), huge],
        ));
        check(&Decision {
            global_shadowed: true,
            ..decision("d", vec![full])
        });
        // Descriptor Structs under 128 bytes, over 127 and over 16383.
        for n in [1, 40, 100, 9000] {
            check(&decision("d", vec![long(n)]));
        }
        let many = decision("many", (0..150).map(|_| long(50)).collect());
        assert!(metadata(&many).as_bytes().len() > 16_383);
        check(&many);
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z_.]{0,20}",
            1 => "\\PC{0,200}",
        ]
    }

    fn arb_descriptor() -> impl Strategy<Value = DescriptorDecision> {
        let limit = proptest::option::of((proptest::option::of(text()), 1..u64::MAX));
        let rules = proptest::option::of((text(), any::<bool>()));
        (
            (any::<bool>(), limit, any::<u64>(), any::<Option<u64>>()),
            (
                rules,
                any::<bool>(),
                any::<u64>(),
                proptest::option::of(text()),
            ),
        )
            .prop_map(
                |(
                    (over_limit, limit, remaining, reset_after),
                    (rule_of, shadowed, used, skipped),
                )| {
                    DescriptorDecision {
                        over_limit,
                        limit: limit.map(|(name, rpu)| RuleLimit {
                            name: name.map(Into::into),
                            limit: Limit::fixed(rpu, Unit::Second),
                        }),
                        remaining,
                        reset_after,
                        rule: rule_of.map(|(id, unlimited)| rule(&id, unlimited)),
                        shadowed,
                        used,
                        skipped_by: skipped.map(Into::into),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn decisions_encode_as_prost_encodes_them(
            domain in text(),
            descriptors in proptest::collection::vec(arb_descriptor(), 0..120),
            over_limit in any::<bool>(),
            global_shadowed in any::<bool>(),
        ) {
            check(&Decision {
                over_limit,
                global_shadowed,
                ..decision(&domain, descriptors)
            });
        }
    }
}
