//! What callers are told, as plain data: a domain's `response:` block
//! (rate-limit headers, reset format, 429 body template), its identity
//! `fallbacks:` groups. The service-wide options (the reference server's
//! `LIMIT_RESPONSE_HEADERS_ENABLED` family, dynamic metadata) are
//! [`crate::respond::ResponseOptions`].
//!
//! [`crate::config`] builds these from YAML, [`crate::rules::Domain`] holds
//! the per-domain ones, [`crate::decide`] carries them into a
//! [`crate::decide::Decision`], and [`crate::respond`] renders them. Nothing
//! here does I/O or reads a clock.
//!
//! # Body templates
//!
//! A template is text with placeholders: `{` + a name of ASCII letters,
//! digits and `_` + `}`. Known names are listed in [`Placeholder`]; any other
//! name is a config error. Every other `{` and every `}` is literal, so a
//! JSON body is written as it reads (`{"retry_after": {retry_after}}`);
//! `{{` writes a literal `{` (to put a literal `{limit}` in a body, write
//! `{{limit}`). When the content type is JSON (`application/json` or any
//! `+json` type), string values (`{rule}`, `{domain}`) are JSON-string
//! escaped (without quotes: write `"{rule}"`), and the template must render
//! to valid JSON, which is checked at load time.

use std::fmt::Write as _;
use std::sync::Arc;

/// A domain's `response:` block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponsePolicy {
    /// Which rate-limit headers every answer carries.
    pub headers: HeaderStyle,
    /// How `X-RateLimit-Reset` and `{reset}` express the reset time.
    pub reset: ResetFormat,
    /// The `raw_body` of an OVER_LIMIT answer.
    pub body: Option<BodyTemplate>,
    /// The body's `content-type` (default `application/json`).
    pub content_type: Arc<str>,
}

/// `headers:` in a `response:` block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderStyle {
    /// `none`: no headers of the domain's own (the reference behaviour,
    /// including `LIMIT_RESPONSE_HEADERS_ENABLED` when set).
    #[default]
    None,
    /// `x-ratelimit`: `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
    /// `X-RateLimit-Reset`.
    XRateLimit,
    /// `ietf`: `RateLimit-Policy` and `RateLimit` as in
    /// draft-ietf-httpapi-ratelimit-headers-11.
    Ietf,
}

impl HeaderStyle {
    /// Every style with its config name.
    pub const NAMES: [(&'static str, HeaderStyle); 3] = [
        ("none", HeaderStyle::None),
        ("x-ratelimit", HeaderStyle::XRateLimit),
        ("ietf", HeaderStyle::Ietf),
    ];
}

/// `reset:` in a `response:` block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResetFormat {
    /// `delta_seconds`: seconds from now, rounded up.
    #[default]
    DeltaSeconds,
    /// `unix_seconds`: the instant as seconds since the Unix epoch, rounded up.
    UnixSeconds,
    /// `unix_millis`: the instant as milliseconds since the Unix epoch, rounded up.
    UnixMillis,
}

impl ResetFormat {
    /// Every format with its config name.
    pub const NAMES: [(&'static str, ResetFormat); 3] = [
        ("delta_seconds", ResetFormat::DeltaSeconds),
        ("unix_seconds", ResetFormat::UnixSeconds),
        ("unix_millis", ResetFormat::UnixMillis),
    ];
}

/// A value a body template can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// `{limit}`: the reported limit's `requests_per_unit`.
    Limit,
    /// `{remaining}`: requests left (0 when over).
    Remaining,
    /// `{reset}`: the reset time in the domain's `reset:` format.
    Reset,
    /// `{retry_after}`: seconds to wait, rounded up, at least 1.
    RetryAfter,
    /// `{rule}`: the limit's name, else the rule's id.
    Rule,
    /// `{domain}`: the request's domain.
    Domain,
    /// `{used}`: the count including this request.
    Used,
    /// `{window}`: the limit's window in seconds.
    Window,
}

impl Placeholder {
    /// Every placeholder with its name.
    pub const NAMES: [(&'static str, Placeholder); 8] = [
        ("limit", Placeholder::Limit),
        ("remaining", Placeholder::Remaining),
        ("reset", Placeholder::Reset),
        ("retry_after", Placeholder::RetryAfter),
        ("rule", Placeholder::Rule),
        ("domain", Placeholder::Domain),
        ("used", Placeholder::Used),
        ("window", Placeholder::Window),
    ];

    fn parse(name: &str) -> Option<Placeholder> {
        Placeholder::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, placeholder)| *placeholder)
    }
}

/// A parsed body template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyTemplate {
    parts: Vec<Part>,
    /// String values are JSON-string escaped.
    json: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A template that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// 0-based line within the template text where the problem is.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The values substituted into a body template.
#[derive(Clone, Copy, Debug)]
pub struct BodyValues<'a> {
    pub limit: u64,
    pub remaining: u64,
    pub reset: u64,
    pub retry_after: u64,
    pub rule: &'a str,
    pub domain: &'a str,
    pub used: u64,
    pub window: u64,
}

/// Whether a content type is JSON: `application/json` or `*/*+json`,
/// parameters ignored, case-insensitive.
pub fn is_json_content_type(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json")
}

impl BodyTemplate {
    /// Parses `text`; `json` escapes string values and requires the rendered
    /// body to be valid JSON.
    pub fn parse(text: &str, json: bool) -> Result<BodyTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let line_of = |rest: &str| text[..text.len() - rest.len()].matches('\n').count();
        while let Some(at) = rest.find('{') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('{') {
                literal.push('{');
                rest = tail;
                continue;
            }
            let name_len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            let name = &after[..name_len];
            if name_len == 0 || !after[name_len..].starts_with('}') {
                // Not a placeholder: a literal brace (JSON's objects).
                literal.push('{');
                rest = after;
                continue;
            }
            let Some(placeholder) = Placeholder::parse(name) else {
                let known: Vec<String> = Placeholder::NAMES
                    .iter()
                    .map(|(known, _)| format!("{{{known}}}"))
                    .collect();
                return Err(TemplateError {
                    line: line_of(after),
                    message: format!(
                        "unknown placeholder '{{{name}}}' in the body (known: {}; write '{{{{' for a literal '{{')",
                        known.join(", ")
                    ),
                });
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Value(placeholder));
            rest = &after[name_len + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        let template = BodyTemplate { parts, json };
        if json {
            let sample = template.render(&BodyValues {
                limit: 1,
                remaining: 0,
                reset: 1,
                retry_after: 1,
                rule: "rule",
                domain: "domain",
                used: 2,
                window: 60,
            });
            if let Err(error) = serde_json::from_str::<serde_json::Value>(&sample) {
                return Err(TemplateError {
                    line: error.line().saturating_sub(1),
                    message: format!(
                        "the body is not valid JSON once rendered ({error}); put string placeholders in quotes (\"{{rule}}\"), or set a non-JSON content_type"
                    ),
                });
            }
        }
        Ok(template)
    }

    /// The placeholders the template uses, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.parts.iter().filter_map(|part| match part {
            Part::Value(placeholder) => Some(*placeholder),
            Part::Text(_) => None,
        })
    }

    /// The body for `values`.
    pub fn render(&self, values: &BodyValues<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(placeholder) => {
                    let number = match placeholder {
                        Placeholder::Limit => values.limit,
                        Placeholder::Remaining => values.remaining,
                        Placeholder::Reset => values.reset,
                        Placeholder::RetryAfter => values.retry_after,
                        Placeholder::Used => values.used,
                        Placeholder::Window => values.window,
                        Placeholder::Rule => {
                            self.push_string(&mut out, values.rule);
                            continue;
                        }
                        Placeholder::Domain => {
                            self.push_string(&mut out, values.domain);
                            continue;
                        }
                    };
                    let _ = write!(out, "{number}");
                }
            }
        }
        out
    }

    fn push_string(&self, out: &mut String, value: &str) {
        if !self.json {
            out.push_str(value);
            return;
        }
        // serde_json's string form, without its quotes.
        let quoted = serde_json::Value::from(value).to_string();
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or(&quoted);
        out.push_str(inner);
    }
}

/// One `fallbacks:` group: descriptor shapes (key lists) in order of
/// preference. Of the descriptors of a request that have one of these
/// shapes, only those with the first shape present are counted; the others
/// are answered OK without counting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackGroup {
    /// The group's name, reported in dynamic metadata.
    pub name: Arc<str>,
    /// The shapes, most preferred first; each is a descriptor's entry keys
    /// in order.
    pub order: Vec<Vec<String>>,
}

/// For each request descriptor (given by its entry keys), the group that
/// skips it, if any. Groups never share a shape (the config loader rejects
/// that), so each descriptor belongs to at most one group.
pub fn fallback_skips<'g, K, I>(
    groups: &'g [FallbackGroup],
    descriptors: I,
) -> Vec<Option<Arc<str>>>
where
    I: IntoIterator<Item = K>,
    K: IntoIterator,
    K::Item: AsRef<str>,
{
    // Most domains declare no fallbacks: answer without collecting every
    // descriptor's keys, which would allocate on each request.
    if groups.is_empty() {
        return vec![None; descriptors.into_iter().count()];
    }
    let keys: Vec<Vec<K::Item>> = descriptors
        .into_iter()
        .map(|d| d.into_iter().collect())
        .collect();
    let mut out: Vec<Option<Arc<str>>> = vec![None; keys.len()];
    let shape_of = |group: &'g FallbackGroup, descriptor: &[K::Item]| {
        group.order.iter().position(|shape| {
            shape.len() == descriptor.len()
                && shape.iter().zip(descriptor).all(|(a, b)| a == b.as_ref())
        })
    };
    for group in groups {
        let ranks: Vec<Option<usize>> = keys.iter().map(|d| shape_of(group, d)).collect();
        let Some(best) = ranks.iter().flatten().min().copied() else {
            continue;
        };
        for (slot, rank) in out.iter_mut().zip(&ranks) {
            if rank.is_some_and(|rank| rank != best) {
                *slot = Some(Arc::clone(&group.name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BodyValues<'static> {
        BodyValues {
            limit: 900,
            remaining: 0,
            reset: 1_612_197_197,
            retry_after: 296,
            rule: "ip \"v4\"",
            domain: "xola",
            used: 905,
            window: 1800,
        }
    }

    #[test]
    fn renders_json_with_literal_braces_and_escaped_strings() {
        let template = BodyTemplate::parse(
            r#"{"rateLimit": {"limit": {limit}, "current": {used}, "rule": "{rule}"}}"#,
            true,
        )
        .expect("valid");
        let body = template.render(&values());
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["rateLimit"]["limit"], 900);
        assert_eq!(json["rateLimit"]["current"], 905);
        assert_eq!(json["rateLimit"]["rule"], "ip \"v4\"");
    }

    #[test]
    fn double_brace_is_a_literal_brace_and_text_is_not_escaped() {
        let template = BodyTemplate::parse("{{limit} is {limit}; {rule} { x }", false).expect("ok");
        assert_eq!(
            template.render(&values()),
            "{limit} is 900; ip \"v4\" { x }"
        );
    }

    #[test]
    fn unknown_placeholder_names_its_line() {
        let error = BodyTemplate::parse("a\nb {limit}\nc {limits}", false).expect_err("unknown");
        assert_eq!(error.line, 2);
        assert!(error.message.contains("{limits}"), "{}", error.message);
    }

    #[test]
    fn json_body_must_render_to_json() {
        let error = BodyTemplate::parse(r#"{"rule": {rule}}"#, true).expect_err("unquoted string");
        assert!(
            error.message.contains("not valid JSON"),
            "{}",
            error.message
        );
        assert!(BodyTemplate::parse(r#"{"rule": {rule}}"#, false).is_ok());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/problem+json"));
        assert!(!is_json_content_type("text/plain"));
    }

    #[test]
    fn fallback_keeps_only_the_first_present_shape() {
        let group = FallbackGroup {
            name: Arc::from("identity"),
            order: vec![
                vec!["user".into(), "seller".into()],
                vec!["user".into()],
                vec!["remote_address".into()],
            ],
        };
        let groups = [group];
        let request = [
            vec!["user"],
            vec!["remote_address"],
            vec!["path"],
            vec!["user", "seller"],
        ];
        let skips = fallback_skips(&groups, request.iter().map(|d| d.iter()));
        let names: Vec<Option<&str>> = skips.iter().map(|s| s.as_deref()).collect();
        assert_eq!(names, [Some("identity"), Some("identity"), None, None]);
        let only_ip = [vec!["remote_address"]];
        assert_eq!(
            fallback_skips(&groups, only_ip.iter().map(|d| d.iter())),
            vec![None]
        );
    }
}
