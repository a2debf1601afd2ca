//! From a request's descriptors to the store's checks, before any counter
//! is read: match each descriptor to its rule (or an operator's override of
//! that exact descriptor, or the request's own limit override), answer the less preferred shapes of a domain's identity
//! `fallbacks:` uncounted, drop the limits other descriptors `replaces`,
//! and write one counter key per remaining limit ([`crate::store::key`]).
//!
//! A decision and `/usage` ([`super::usage`]) plan with this same code; they
//! differ only in how they count ([`Counting`]).

use std::ops::Range;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::limit::{Limit, Nanos};
use crate::proto::convert::unit_from_proto;
use crate::proto::{RateLimitDescriptor, RateLimitRequest};
use crate::rules::overrides::DomainOverrides;
use crate::rules::policy::fallback_skips;
use crate::rules::{Domain, Rule, RuleLimit};
use crate::store::Check;
use crate::store::key::{KeyBuffer, write_counter_key};

/// Per-request scratch, inline for requests of up to four descriptors (of
/// one limit each), so that deciding the common request allocates nothing.
pub(super) type PerRequest<T> = SmallVec<[T; 4]>;

/// The rule id suffix of a request's limit override on a descriptor that
/// matches no configured rule.
pub const OVERRIDE_RULE_ID: &str = "(override)";

/// How a plan's checks count.
#[derive(Clone, Copy)]
pub(super) enum Counting<'q> {
    /// A decision: each descriptor adds its hits ([`hits_of`]) to the
    /// counters of its limits that other descriptors do not `replace`; a
    /// descriptor's limits are all-or-nothing, or, with `one_group`
    /// (`STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT`), the whole request is.
    Decide {
        request: &'q RateLimitRequest,
        one_group: bool,
    },
    /// A look: every limit of the matched rule, zero hits, no `replaces`
    /// (it depends on the other descriptors of a request).
    Peek,
}

/// One descriptor's part of a plan.
#[derive(Debug)]
pub(super) struct Plan {
    /// The rule that applies, if any (also set for unlimited rules).
    pub rule: Option<Arc<Rule>>,
    /// Its checks: a range of [`Planned::checks`].
    pub checks: Range<usize>,
    /// The fallback group that answers this descriptor OK uncounted.
    pub skipped_by: Option<Arc<str>>,
    /// The hits each of its checks adds.
    pub hits: u64,
}

/// A check before its key is bound: where its key is in the key buffer.
struct Unbound {
    key: Range<usize>,
    limit: Limit,
    hits: u64,
    group: u32,
    count_when_denied: bool,
}

/// A request's plan: per descriptor its rule and checks, and every check's
/// counter key written into one buffer.
pub(super) struct Planned {
    /// One per request descriptor, in order.
    pub plans: PerRequest<Plan>,
    /// For each check, the index of its limit in its rule's `limits`.
    pub slots: PerRequest<usize>,
    keys: KeyBuffer,
    unbound: PerRequest<Unbound>,
}

impl Planned {
    /// An empty plan, to be filled by [`plan`] where it will stay: a plan is
    /// large (its keys are inline), and moving it costs more than planning.
    pub fn new() -> Planned {
        Planned {
            plans: PerRequest::new(),
            slots: PerRequest::new(),
            keys: KeyBuffer::new(),
            unbound: PerRequest::new(),
        }
    }

    /// The store's checks, their keys borrowed from the plan.
    pub fn checks(&self) -> PerRequest<Check<'_>> {
        self.unbound
            .iter()
            .map(|check| Check {
                key: self.keys.get(check.key.clone()).unwrap_or_default(),
                limit: check.limit,
                hits: check.hits,
                group: check.group,
                count_when_denied: check.count_when_denied,
            })
            .collect()
    }
}

/// Plans `descriptors` of `domain` into `planned` (empty: [`Planned::new`]);
/// `known`: the domain's rules, if it is configured; `overrides`: the
/// domain's operator overrides, if it has any, applying when live at `now`.
pub(super) fn plan(
    planned: &mut Planned,
    known: Option<&Domain>,
    overrides: Option<&DomainOverrides>,
    now: Nanos,
    domain: &str,
    descriptors: &[RateLimitDescriptor],
    counting: Counting<'_>,
) {
    // Identity fallbacks: descriptors of a less preferred shape are answered
    // as if they matched nothing. Most domains have none.
    let fallbacks = known.map_or(&[][..], |d| d.fallbacks());
    let skips = (!fallbacks.is_empty()).then(|| {
        fallback_skips(
            fallbacks,
            descriptors
                .iter()
                .map(|d| d.entries.iter().map(|e| e.key.as_str())),
        )
    });
    // Match every descriptor first: `replaces` works across descriptors.
    let mut matched: PerRequest<Option<Applied<'_>>> = descriptors
        .iter()
        .map(|descriptor| {
            // An operator's override of this exact descriptor wins over the
            // config and the request's own limit; most domains have none.
            match overrides.and_then(|o| o.lookup(&descriptor.entries, now)) {
                Some(found) => Some(Applied {
                    rule: Arc::clone(&found.rule),
                    shared: Vec::new(),
                }),
                None => match_descriptor(known, domain, descriptor),
            }
        })
        .collect();
    for (found, skip) in matched.iter_mut().zip(skips.iter().flatten()) {
        if skip.is_some() {
            *found = None;
        }
    }
    // Few rules replace others: a list beats a hash set here.
    let replaced: PerRequest<&str> = match counting {
        Counting::Decide { .. } => matched
            .iter()
            .flatten()
            .flat_map(|applied| applied.rule.replaces.iter().map(String::as_str))
            .collect(),
        Counting::Peek => PerRequest::new(),
    };

    for (index, (descriptor, found)) in descriptors.iter().zip(&matched).enumerate() {
        let first = planned.unbound.len();
        let skipped_by = skips
            .as_ref()
            .and_then(|skips| skips.get(index).cloned().flatten());
        let Some(Applied { rule, shared }) = found else {
            planned.plans.push(Plan {
                rule: None,
                checks: first..first,
                skipped_by,
                hits: 0,
            });
            continue;
        };
        let (hits, group, count_when_denied) = match counting {
            Counting::Decide { request, one_group } => (
                hits_of(request, descriptor),
                if one_group {
                    0
                } else {
                    u32::try_from(index).unwrap_or(u32::MAX)
                },
                rule.counts_denied_hits,
            ),
            Counting::Peek => (0, 0, false),
        };
        let multi = rule.limits.len() > 1;
        for (slot, rule_limit) in rule.limits.iter().enumerate() {
            let is_replaced = rule_limit
                .name
                .as_deref()
                .is_some_and(|name| replaced.contains(&name));
            if is_replaced || rule.unlimited {
                continue;
            }
            let start = planned.keys.len();
            write_counter_key(
                &mut planned.keys,
                domain,
                &descriptor.entries,
                shared,
                &rule_limit.limit,
                slot,
                multi,
            );
            planned.slots.push(slot);
            planned.unbound.push(Unbound {
                key: start..planned.keys.len(),
                limit: rule_limit.limit,
                hits,
                group,
                count_when_denied,
            });
        }
        planned.plans.push(Plan {
            rule: Some(Arc::clone(rule)),
            checks: first..planned.unbound.len(),
            skipped_by,
            hits,
        });
    }
}

/// The hits a descriptor adds: its own `hits_addend` if set (0 checks
/// without counting), else the request's, where 0 means 1. Public so that
/// metrics count exactly what the decision counted.
pub fn hits_of(request: &RateLimitRequest, descriptor: &RateLimitDescriptor) -> u64 {
    descriptor.hits_addend.unwrap_or(match request.hits_addend {
        0 => 1,
        n => u64::from(n),
    })
}

/// The rule that applies to one descriptor, and the entries (by index) whose
/// value the counter key replaces by a shared wildcard pattern (borrowed
/// from the rule set).
struct Applied<'r> {
    rule: Arc<Rule>,
    shared: Vec<(usize, &'r str)>,
}

/// The rule for one descriptor: the request's override if it has one, else
/// the configured rule. Returns the rule and the entries whose value the
/// counter key replaces by a shared wildcard pattern.
fn match_descriptor<'r>(
    known: Option<&'r Domain>,
    domain: &str,
    descriptor: &RateLimitDescriptor,
) -> Option<Applied<'r>> {
    // As in the reference, an override applies only in a known domain, and
    // replaces the config tree's answer without consulting it.
    let known = known?;
    if let Some(limit) = descriptor.limit.as_ref() {
        let unit = unit_from_proto(limit.unit)?;
        let rule = Rule {
            // Not the request's values: ids label metrics, whose cardinality
            // must stay bounded by the rules.
            id: Arc::from(format!("{domain}.{OVERRIDE_RULE_ID}")),
            limits: vec![RuleLimit {
                name: None,
                limit: Limit::fixed(u64::from(limit.requests_per_unit), unit),
            }],
            unlimited: false,
            // An override from Envoy's route config is always enforced.
            shadow_mode: false,
            quota_mode: false,
            replaces: Vec::new(),
            name: None,
            reference_form: true,
            counts_denied_hits: true,
            header_limit: None,
            detailed_metric: false,
            value_to_metric: Vec::new(),
            stat_levels: Vec::new(),
        };
        return Some(Applied {
            rule: Arc::new(rule),
            shared: Vec::new(),
        });
    }
    let matched = known.lookup(&descriptor.entries)?;
    Some(Applied {
        rule: Arc::clone(matched.rule),
        shared: matched.shared,
    })
}
