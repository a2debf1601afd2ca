//! The answer's dynamic metadata (a `google.protobuf.Struct` under
//! `envoy.filters.http.ratelimit`), written straight into its encoding;
//! the fields are listed in [`crate::respond`]'s module doc.

use super::headers::ceil_seconds;
use crate::decide::Decision;
use crate::proto::encoded_struct::{EncodedStruct, StructWriter};

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
            if descriptor.never_fits {
                out.bool("never_fits", true);
            }
            out.number("remaining", number(descriptor.remaining));
            // A request that can never fit has no time to wait for.
            if !descriptor.never_fits {
                out.number(
                    "reset_seconds",
                    number(ceil_seconds(descriptor.reset_after.unwrap_or(0))),
                );
            }
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

/// The metadata's bytes against prost's encoding of the same data built as
/// a `prost_types::Struct` (how it was built before it was written directly).
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::prelude::*;
    use prost::Message;
    use prost_types::value::Kind;

    use super::*;
    use crate::decide::{DescriptorDecision, ResponseContext};
    use crate::limit::{Limit, NANOS_PER_SECOND, Unit};
    use crate::proto::RateLimitResponse;
    use crate::rules::{Rule, RuleLimit};

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
                    if descriptor.never_fits {
                        fields.insert("never_fits".to_owned(), bool_value(true));
                    } else {
                        fields.insert(
                            "reset_seconds".to_owned(),
                            number_value(ceil_seconds(descriptor.reset_after.unwrap_or(0))),
                        );
                    }
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
            counts_denied_hits: false,
            header_limit: None,
            detailed_metric: false,
            value_to_metric: Vec::new(),
            stat_levels: Vec::new(),
        })
    }

    fn descriptor() -> DescriptorDecision {
        DescriptorDecision::default()
    }

    fn decision(domain: &str, descriptors: Vec<DescriptorDecision>) -> Decision {
        Decision {
            over_limit: descriptors.iter().any(|d| d.over_limit),
            global_shadowed: false,
            store_failed: false,
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
            header_limit: None,
            never_fits: false,
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
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (over_limit, limit, remaining, reset_after),
                    (rule_of, shadowed, used, skipped, never_fits),
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
                        header_limit: None,
                        never_fits,
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
