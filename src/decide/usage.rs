//! `/usage`: what a descriptor's counters hold now, without counting:
//! planned by the same code as a decision ([`super::plan`]), evaluated
//! with zero hits (which stores never write).

use std::sync::Arc;

use super::plan::{Counting, Planned, plan};
use super::validate::validate;
use super::{DecideError, RateLimiter};
use crate::limit::Outcome;
use crate::proto::{RateLimitDescriptor, RateLimitRequest};
use crate::rules::{Rule, RuleLimit};
use crate::store::{CounterStore, Outcomes};

/// What a descriptor's counters say now, without counting anything: the
/// answer of [`RateLimiter::peek`].
#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    /// The rule the descriptor matches.
    pub rule: Arc<Rule>,
    /// Each limit of the rule with its counter's current state, in the
    /// rule's order; empty for an unlimited rule.
    pub limits: Vec<LimitUsage>,
}

/// One limit's current state.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitUsage {
    /// The limit.
    pub limit: RuleLimit,
    /// Its outcome for a request of zero hits: `used` is the current count,
    /// `remaining` what is left, `reset_after` the time until it resets.
    pub outcome: Outcome,
}

impl<S: CounterStore> RateLimiter<S> {
    /// Reports what the counters of one descriptor of `domain` hold now,
    /// without consuming anything: the same rule matching and counter keys
    /// as [`RateLimiter::decide`], evaluated with zero hits (which stores
    /// never write). `None` when no rule matches. `replaces` is not applied:
    /// it depends on the other descriptors of a request.
    pub async fn peek(
        &self,
        domain: &str,
        entries: &[crate::proto::Entry],
    ) -> Result<Option<Usage>, DecideError> {
        let descriptor = RateLimitDescriptor {
            entries: entries.to_vec(),
            ..RateLimitDescriptor::default()
        };
        validate(
            &RateLimitRequest {
                domain: domain.to_owned(),
                descriptors: vec![descriptor.clone()],
                hits_addend: 0,
            },
            &self.options.request_limits,
        )?;
        let rules = self.rules.load();
        let overrides = self.overrides.load();
        let now = self.clock.now();
        let mut planned = Planned::new();
        plan(
            &mut planned,
            rules.domain(domain),
            overrides.domain(domain),
            now,
            domain,
            std::slice::from_ref(&descriptor),
            Counting::Peek,
        );
        let Some(rule) = planned.plans.pop().and_then(|plan| plan.rule) else {
            return Ok(None);
        };
        let checks = planned.checks();
        let mut outcomes = Outcomes::new();
        if !checks.is_empty() {
            self.store.apply(&checks, now, &mut outcomes).await?;
        }
        let limits = planned
            .slots
            .iter()
            .zip(outcomes)
            .filter_map(|(&slot, outcome)| {
                Some(LimitUsage {
                    limit: rule.limits.get(slot)?.clone(),
                    outcome,
                })
            })
            .collect();
        Ok(Some(Usage { rule, limits }))
    }
}
