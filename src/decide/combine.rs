//! From the store's outcomes, one per check, to the answer: per descriptor
//! the most restrictive of its limits, rule and global shadow modes, quota
//! mode, and what a request that committed nothing reports.

use super::decision::{
    Decision, DescriptorDecision, DescriptorDecisions, HeaderLimit, ResponseContext,
};
use super::plan::{PerRequest, Planned};
use crate::limit::Outcome;
use crate::rules::RuleLimit;
use crate::store::Check;

/// An admitted check whose group another check denied committed nothing
/// (groups are all-or-nothing): its outcome is reported as its counter
/// stands, untouched, not as it would stand had the hits been counted. With
/// `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT` the whole request is one group,
/// so a descriptor that was within its limit reports the remaining of its
/// untouched counter, as the reference does.
///
/// `used` and `remaining` are exact for every algorithm (an admitted check's
/// hits are all in both); `reset_after` is kept as evaluated, which for a
/// token bucket is the refill time with the hits taken.
pub(super) fn report_uncounted(checks: &[Check<'_>], outcomes: &mut [Outcome]) {
    let denied: PerRequest<u32> = checks
        .iter()
        .zip(outcomes.iter())
        .filter(|(_, outcome)| !outcome.admitted)
        .map(|(check, _)| check.group)
        .collect();
    if denied.is_empty() {
        return;
    }
    for (check, outcome) in checks.iter().zip(outcomes.iter_mut()) {
        if outcome.admitted && denied.contains(&check.group) {
            outcome.used = outcome.used.saturating_sub(check.hits);
            outcome.remaining = outcome.remaining.saturating_add(check.hits);
        }
    }
}

/// Turns per-check outcomes into per-descriptor and overall answers.
/// `fail_closed`: the store failed under `--on-store-error deny`, and every
/// descriptor with limits is reported over its limit.
pub(super) fn combine(
    planned: &mut Planned,
    outcomes: &[Outcome],
    shadow_mode: bool,
    fail_closed: bool,
) -> Decision {
    // Built in place: a decision is large enough that each move costs.
    let mut decision = Decision {
        over_limit: false,
        global_shadowed: false,
        store_failed: false,
        descriptors: DescriptorDecisions::new(),
        context: ResponseContext::default(),
    };
    let descriptors = &mut decision.descriptors;
    let slots = &planned.slots;
    let mut any_over = false;
    let mut quota_total = 0usize;
    let mut quota_over = 0usize;
    // The rules and fallback names move into the answer (taken, not
    // cloned); the plan is dropped after.
    for plan in planned.plans.iter_mut() {
        let skipped_by = plan.skipped_by.take();
        let Some(rule) = plan.rule.take() else {
            descriptors.push(DescriptorDecision {
                skipped_by,
                ..DescriptorDecision::default()
            });
            continue;
        };
        let limited = !plan.checks.is_empty();
        // The most restrictive limit: one the request can never fit, else a
        // denying one that frees up last, else the one with the least
        // remaining. (The `headers: true` limit is reported on its own; an
        // uncounted one already reads as untouched: `report_uncounted`.)
        let mut chosen: Option<(&RuleLimit, &Outcome)> = None;
        let mut header_limit = None;
        let mut never_fits = false;
        for index in plan.checks.clone() {
            let slot = slots.get(index).copied();
            let (Some(outcome), Some(rule_limit)) = (
                outcomes.get(index),
                slot.and_then(|slot| rule.limits.get(slot)),
            ) else {
                continue;
            };
            if slot.is_some() && slot == rule.header_limit {
                header_limit = slot.map(|slot| HeaderLimit {
                    slot,
                    remaining: outcome.remaining,
                    reset_after: outcome.reset_after,
                });
            }
            // A limit the request can never fit reports itself: waiting
            // for the others would not help.
            let never = !outcome.admitted && rule_limit.limit.never_fits(plan.hits);
            let better = match chosen {
                None => true,
                Some(_) if never_fits => false,
                Some(_) if never => true,
                Some((_, best)) => more_restrictive(outcome, best),
            };
            never_fits |= never;
            if better {
                chosen = Some((rule_limit, outcome));
            }
        }
        let over = chosen.is_some_and(|(_, outcome)| !outcome.admitted);
        // Per-rule shadow mode rewrites the status to OK (remaining 0,
        // limit kept), as the reference does.
        let shadowed = over && rule.shadow_mode;
        let over_limit = over && !shadowed;
        if rule.quota_mode {
            quota_total += 1;
            quota_over += usize::from(over_limit);
        } else if over_limit {
            any_over = true;
        }
        let limit = chosen.map(|(limit, _)| limit.clone());
        let remaining = chosen.map_or(0, |(_, outcome)| outcome.remaining);
        let reset_after = chosen.map(|(_, outcome)| outcome.reset_after);
        let used = chosen.map_or(0, |(_, outcome)| outcome.used);
        descriptors.push(DescriptorDecision {
            // Failing closed marks the descriptor, not the overall code
            // computed below (the caller sets that).
            over_limit: over_limit || (fail_closed && limited),
            limit,
            remaining,
            reset_after,
            used,
            rule: Some(rule),
            shadowed,
            skipped_by,
            header_limit,
            never_fits: never_fits && over_limit,
        });
    }
    // A quota-mode descriptor keeps its OVER_LIMIT status, but denies the
    // request only together with every other quota-mode descriptor.
    let quota_denies = quota_total > 0 && quota_over == quota_total;
    let over_limit = any_over || quota_denies;
    // Global shadow mode rewrites only the overall code, as the
    // reference does: statuses still say which descriptor was over.
    let global_shadowed = over_limit && shadow_mode;
    decision.over_limit = over_limit && !global_shadowed;
    decision.global_shadowed = global_shadowed;
    decision
}

/// `a` is more restrictive than `b`.
fn more_restrictive(a: &Outcome, b: &Outcome) -> bool {
    match (a.admitted, b.admitted) {
        (false, true) => true,
        (true, false) => false,
        (false, false) => a.reset_after > b.reset_after,
        (true, true) => a.remaining < b.remaining,
    }
}
