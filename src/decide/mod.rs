//! The one decision path: validate a request, match its descriptors to rules,
//! apply the limits through the counter store, and say what happened.
//!
//! gRPC and the HTTP JSON endpoint both call [`RateLimiter::decide`]; turning
//! a [`Decision`] into a protobuf response is [`crate::respond`]'s job.
//!
//! The decision allocates nothing for a request of up to two descriptors
//! whose counter keys fit in 256 bytes (a known domain, no limit override),
//! and once (the answer's list) for up to four: its scratch lists are inline
//! ([`smallvec`]), every counter key is written into one request buffer
//! that the [`Check`]s borrow, rules and patterns are borrowed or shared
//! (`Arc`), and the answer's descriptor list is inline for two
//! ([`DescriptorDecisions`]).
//!
//! The semantics are the reference server's (envoyproxy/ratelimit):
//! - a request's `hits_addend` of 0 means 1; a descriptor's own `hits_addend`
//!   overrides it, and 0 there checks without counting;
//! - a descriptor's `limit` override replaces the configured limit;
//! - `replaces` drops the named limits of other descriptors of the request;
//! - `unlimited` rules and unmatched descriptors are OK with nothing counted;
//! - a rule's shadow mode reports its descriptor OK but still counts; global
//!   shadow mode makes only the overall code OK;
//! - quota-mode descriptors deny the request only when all of them are over.
//!
//! floodgate's addition: a domain's identity `fallbacks:` groups answer the
//! less preferred shapes of a request OK, uncounted, before any check is
//! built ([`crate::rules::policy::fallback_skips`]).
//!
//! Where floodgate differs on purpose: an entry with an empty key and a limit
//! override with unit UNKNOWN are `INVALID_ARGUMENT` (the reference matches
//! nothing, or panics), and malformed requests get `INVALID_ARGUMENT` where the
//! reference answers `UNKNOWN`.

pub mod validate;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use smallvec::SmallVec;

use crate::clock::Clock;
pub use crate::decide::validate::RequestLimits;
use crate::limit::{Algorithm, Limit, Nanos, Outcome, Unit};
use crate::proto::{RateLimitDescriptor, RateLimitRequest};
use crate::rules::policy::{ResponsePolicy, fallback_skips};
use crate::rules::{Domain, EntryLike, Rule, RuleLimit, RuleSet};
use crate::store::{Check, CounterStore, Outcomes, StoreError};

/// Behaviour switches of the decision path (the reference's environment
/// variables of the same meaning).
#[derive(Clone, Debug, Default)]
pub struct ServiceOptions {
    /// `SHADOW_MODE=true`: the overall code is OK even when a descriptor is
    /// over (its status still says OVER_LIMIT); counting goes on.
    pub shadow_mode: bool,
    /// `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT=true`: a request denied by any
    /// descriptor consumes nothing from any counter.
    pub stop_increment_when_over_limit: bool,
    /// The largest request accepted (descriptors, entries, key, value and
    /// message sizes).
    pub request_limits: RequestLimits,
    /// What a request gets when the counter store cannot answer.
    pub on_store_error: StoreErrorPolicy,
}

/// What [`RateLimiter::decide`] answers when the counter store fails (Redis
/// down or slower than its timeout). Every failure is counted
/// ([`RateLimiter::store_errors`]) whatever the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreErrorPolicy {
    /// Fail open: OK, with no limit reported and nothing counted.
    #[default]
    Allow,
    /// Fail closed: OVER_LIMIT for every descriptor that has limits.
    Deny,
    /// Return the error (gRPC `UNAVAILABLE`), leaving the choice to Envoy's
    /// `failure_mode_deny`.
    Error,
}

/// Why a request could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The request is malformed; the message names the problem.
    #[error("{0}")]
    InvalidRequest(String),
    /// The counter store could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer for one request descriptor. The default is a descriptor that
/// matched no rule: OK, nothing counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DescriptorDecision {
    /// The descriptor is over its limit (and not in shadow mode).
    pub over_limit: bool,
    /// The most restrictive limit that applied, if any.
    pub limit: Option<RuleLimit>,
    /// Requests of size one still admissible under that limit.
    pub remaining: u64,
    /// Time until the limit resets (OK) or until the request could be
    /// admitted (over limit); `None` when no limit applied.
    pub reset_after: Option<Nanos>,
    /// The rule that matched, if any (also set for unlimited rules).
    pub rule: Option<Arc<Rule>>,
    /// The limit was over but the rule's shadow mode reported OK.
    pub shadowed: bool,
    /// Usage after this request under the reported limit.
    pub used: u64,
    /// The fallback group that answered this descriptor OK without counting
    /// it, because a more preferred shape of the group is in the request.
    pub skipped_by: Option<Arc<str>>,
    /// The rule's `headers: true` limit, when it has one that was checked:
    /// what a domain's response headers describe instead of `limit`.
    pub header_limit: Option<HeaderLimit>,
    /// The request asks for more hits than `limit`, a token bucket, ever
    /// holds (its `burst`): no wait makes it fit, so no retry time is
    /// offered.
    pub never_fits: bool,
}

/// The state of a rule's `headers: true` limit after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderLimit {
    /// Its index in the rule's limits.
    pub slot: usize,
    /// Requests of size one it still admits.
    pub remaining: u64,
    /// Time until it resets (admitted) or admits this request (denied).
    pub reset_after: Nanos,
}

/// The answers for a request's descriptors, in order: inline for up to two
/// descriptors. Not four: a [`Decision`] is moved several times on its way
/// out of the decide future, and each move copies the whole inline list.
/// Measured (callgrind, one descriptor): 2 741 instructions with four inline,
/// 2 552 with two; with four descriptors, the one allocation two inline then
/// cost is about what moving the larger list costs (9 034 vs 9 080).
pub type DescriptorDecisions = SmallVec<[DescriptorDecision; 2]>;

/// The answer for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The request must be denied.
    pub over_limit: bool,
    /// The request would have been denied, but global shadow mode is on.
    pub global_shadowed: bool,
    /// One entry per request descriptor, in order.
    pub descriptors: DescriptorDecisions,
    /// What [`crate::respond`] needs besides the statuses.
    pub context: ResponseContext,
}

/// The request's domain, the decision's time and the response settings
/// that apply to it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseContext {
    /// The request's domain (the rule set's copy when the domain is known,
    /// so that cloning it never allocates).
    pub domain: Arc<str>,
    /// The time the limits were evaluated at.
    pub now: Nanos,
    /// The domain's `response:` block, if any.
    pub policy: Option<Arc<ResponsePolicy>>,
}

/// The rate limiter: current rules, a counter store and a clock.
pub struct RateLimiter<S> {
    rules: ArcSwap<RuleSet>,
    store: S,
    clock: Arc<dyn Clock>,
    options: ServiceOptions,
    store_errors: AtomicU64,
    /// When the last store-failure warning was logged (the clock's time; 0:
    /// never), and the failures not logged since.
    last_store_warning: AtomicU64,
    unlogged_store_errors: AtomicU64,
}

/// Store failures are logged at most once per this interval (the clock's
/// time), each line saying how many were not logged before it; every failure
/// is counted ([`RateLimiter::store_errors`], `floodgate_store_errors_total`).
/// During an outage every request fails, so one line per failure would be
/// thousands of lines per second.
pub const STORE_WARNING_INTERVAL: Nanos = crate::limit::NANOS_PER_SECOND;

/// Per-request scratch, inline for requests of up to four descriptors (of
/// one limit each), so that deciding the common request allocates nothing.
type PerRequest<T> = SmallVec<[T; 4]>;

/// Every counter key of one request, back to back: inline up to 256 bytes
/// (a one-entry descriptor's key is typically 40–70 bytes), one allocation
/// beyond. Larger inline buffers make the decision's future, which is moved
/// as a whole, costlier to move than the allocation they save.
type KeyBuffer = SmallVec<[u8; 256]>;

/// The rule that applies to one descriptor, and the entries (by index) whose
/// value the counter key replaces by a shared wildcard pattern (borrowed
/// from the rule set).
struct Applied<'r> {
    rule: Arc<Rule>,
    shared: Vec<(usize, &'r str)>,
}

/// Per descriptor: the rule, and the checks (a range of `checks`) of its
/// limits that survived `replaces`.
struct Plan {
    rule: Option<Arc<Rule>>,
    checks: Range<usize>,
    /// The hits each of those checks adds.
    hits: u64,
}

impl<S: CounterStore> RateLimiter<S> {
    /// A limiter serving `rules` with counters in `store`.
    pub fn new(
        rules: RuleSet,
        store: S,
        clock: Arc<dyn Clock>,
        options: ServiceOptions,
    ) -> RateLimiter<S> {
        RateLimiter {
            rules: ArcSwap::from_pointee(rules),
            store,
            clock,
            options,
            store_errors: AtomicU64::new(0),
            last_store_warning: AtomicU64::new(0),
            unlogged_store_errors: AtomicU64::new(0),
        }
    }

    /// Counts a store failure and logs it, unless one was logged less than
    /// [`STORE_WARNING_INTERVAL`] ago (either way round: a clock stepped
    /// back by more than that logs again).
    fn store_failed(&self, error: &StoreError, now: Nanos) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
        let last = self.last_store_warning.load(Ordering::Relaxed);
        let due = last == 0 || now.abs_diff(last) >= STORE_WARNING_INTERVAL;
        // One caller wins the right to log; the others count themselves.
        if !due
            || self
                .last_store_warning
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.unlogged_store_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let unlogged = self.unlogged_store_errors.swap(0, Ordering::Relaxed);
        tracing::warn!(
            %error,
            policy = ?self.options.on_store_error,
            not_logged_since_last = unlogged,
            "counter store failed (failures are logged at most once a second; all are counted)"
        );
    }

    /// Requests whose counter store call failed since the limiter started.
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    /// Swaps in a new rule set atomically: each request sees either the old
    /// or the new rules, never a mix.
    pub fn replace_rules(&self, rules: RuleSet) {
        self.rules.store(Arc::new(rules));
    }

    /// The counter store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The time on the limiter's clock, for reports on the decisions' time
    /// scale (windows, resets).
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// The largest request accepted; the transports enforce its message size.
    pub fn request_limits(&self) -> &RequestLimits {
        &self.options.request_limits
    }

    /// Decides one request.
    pub async fn decide(&self, request: &RateLimitRequest) -> Result<Decision, DecideError> {
        validate(request, &self.options.request_limits)?;
        let rules = self.rules.load();
        let domain = request.domain.as_str();
        let known = rules.domain(domain);

        // Every key is written into `keys`; each check's key is set to its
        // range of it once all are written, and `slots` says which of its
        // rule's limits each check is. Only these outlive the block below
        // (the future holds what lives across its await).
        let mut keys = KeyBuffer::new();
        let mut slots: PerRequest<usize> = PerRequest::new();
        let mut checks: PerRequest<Check<'_>> = PerRequest::new();
        let mut plans: PerRequest<Plan> = PerRequest::with_capacity(request.descriptors.len());
        let fallbacks = known.map_or(&[][..], |d| d.fallbacks());
        // Identity fallbacks: descriptors of a less preferred shape are
        // answered as if they matched nothing. Most domains have none.
        let skips = (!fallbacks.is_empty()).then(|| {
            fallback_skips(
                fallbacks,
                request
                    .descriptors
                    .iter()
                    .map(|d| d.entries.iter().map(|e| e.key.as_str())),
            )
        });
        {
            // Match every descriptor first: `replaces` works across descriptors.
            let mut matched: PerRequest<Option<Applied<'_>>> = request
                .descriptors
                .iter()
                .map(|descriptor| match_descriptor(known, domain, descriptor))
                .collect();
            for (found, skip) in matched.iter_mut().zip(skips.iter().flatten()) {
                if skip.is_some() {
                    *found = None;
                }
            }
            // Few rules replace others: a list beats a hash set here.
            let replaced: PerRequest<&str> = matched
                .iter()
                .flatten()
                .flat_map(|applied| applied.rule.replaces.iter().map(String::as_str))
                .collect();

            // Where each check's key is in `keys`, in check order.
            let mut key_ranges: PerRequest<Range<usize>> = PerRequest::new();
            for (index, (descriptor, found)) in request.descriptors.iter().zip(&matched).enumerate()
            {
                let first = checks.len();
                let Some(Applied { rule, shared }) = found else {
                    plans.push(Plan {
                        rule: None,
                        checks: first..first,
                        hits: 0,
                    });
                    continue;
                };
                let hits = hits_of(request, descriptor);
                let group = if self.options.stop_increment_when_over_limit {
                    0
                } else {
                    u32::try_from(index).unwrap_or(u32::MAX)
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
                    let start = keys.len();
                    write_counter_key(
                        &mut keys,
                        domain,
                        &descriptor.entries,
                        shared,
                        &rule_limit.limit,
                        slot,
                        multi,
                    );
                    key_ranges.push(start..keys.len());
                    slots.push(slot);
                    checks.push(Check {
                        key: &[],
                        limit: rule_limit.limit,
                        hits,
                        group,
                        count_when_denied: rule.counts_denied_hits,
                    });
                }
                plans.push(Plan {
                    rule: Some(Arc::clone(rule)),
                    checks: first..checks.len(),
                    hits,
                });
            }
            for (check, range) in checks.iter_mut().zip(key_ranges) {
                check.key = keys.get(range).unwrap_or_default();
            }
        }

        let now = self.clock.now();
        let mut outcomes = Outcomes::new();
        let mut fail_closed = None;
        if !checks.is_empty()
            && let Err(error) = self.store.apply(&checks, now, &mut outcomes).await
        {
            self.store_failed(&error, now);
            outcomes.clear();
            match self.options.on_store_error {
                StoreErrorPolicy::Error => return Err(error.into()),
                StoreErrorPolicy::Allow => {}
                StoreErrorPolicy::Deny => {
                    fail_closed = Some(
                        plans
                            .iter()
                            .map(|p| !p.checks.is_empty())
                            .collect::<PerRequest<_>>(),
                    );
                }
            }
        }
        let mut decision = self.combine(plans, &slots, &outcomes);
        if let Some(limited) = fail_closed {
            for (descriptor, limited) in decision.descriptors.iter_mut().zip(limited) {
                descriptor.over_limit |= limited;
            }
            decision.over_limit = !self.options.shadow_mode;
        }
        if let Some(skips) = skips {
            for (descriptor, skip) in decision.descriptors.iter_mut().zip(skips) {
                descriptor.skipped_by = skip;
            }
        }
        decision.context = ResponseContext {
            // A known domain's name is shared; an unknown one is copied.
            domain: known.map_or_else(|| Arc::from(domain), |d| Arc::clone(d.shared_name())),
            now,
            policy: known.and_then(|d| d.response().cloned()),
        };
        Ok(decision)
    }

    /// Turns per-limit outcomes into per-descriptor and overall answers.
    /// `slots[i]` is the index, in its rule's limits, of check `i`.
    fn combine(&self, plans: PerRequest<Plan>, slots: &[usize], outcomes: &[Outcome]) -> Decision {
        // Built in place: a decision is large enough that each move costs.
        let mut decision = Decision {
            over_limit: false,
            global_shadowed: false,
            descriptors: DescriptorDecisions::new(),
            context: ResponseContext::default(),
        };
        let descriptors = &mut decision.descriptors;
        let mut any_over = false;
        let mut quota_total = 0usize;
        let mut quota_over = 0usize;
        for plan in plans {
            let Some(rule) = plan.rule else {
                descriptors.push(DescriptorDecision::default());
                continue;
            };
            // The most restrictive limit: a denying one that frees up last,
            // else the one with the least remaining.
            let mut chosen: Option<(&RuleLimit, &Outcome)> = None;
            let mut header_limit = None;
            let mut header_admitted = false;
            let mut never_fits = false;
            for index in plan.checks {
                let slot = slots.get(index).copied();
                let (Some(outcome), Some(rule_limit)) = (
                    outcomes.get(index),
                    slot.and_then(|slot| rule.limits.get(slot)),
                ) else {
                    continue;
                };
                if slot.is_some() && slot == rule.header_limit {
                    header_admitted = outcome.admitted;
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
            if over && let Some(header_limit) = header_limit.as_mut() {
                // An admitting limit of a denied descriptor reports its
                // remaining as if the hits were counted; they were not.
                if header_admitted {
                    header_limit.remaining = header_limit.remaining.saturating_add(plan.hits);
                }
            }
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
                over_limit,
                limit,
                remaining,
                reset_after,
                used,
                rule: Some(rule),
                shadowed,
                skipped_by: None,
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
        let global_shadowed = over_limit && self.options.shadow_mode;
        decision.over_limit = over_limit && !global_shadowed;
        decision.global_shadowed = global_shadowed;
        decision
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

/// `a` is more restrictive than `b`.
fn more_restrictive(a: &Outcome, b: &Outcome) -> bool {
    match (a.admitted, b.admitted) {
        (false, true) => true,
        (true, false) => false,
        (false, false) => a.reset_after > b.reset_after,
        (true, true) => a.remaining < b.remaining,
    }
}

/// Rejects what the reference rejects, what would make a counter key
/// ambiguous, and what is larger than `limits` allow.
fn validate(request: &RateLimitRequest, limits: &RequestLimits) -> Result<(), DecideError> {
    if request.domain.is_empty() {
        return Err(DecideError::InvalidRequest(
            "rate limit domain must not be empty".into(),
        ));
    }
    if request.descriptors.is_empty() {
        return Err(DecideError::InvalidRequest(
            "rate limit descriptor list must not be empty".into(),
        ));
    }
    limits.check(request).map_err(DecideError::InvalidRequest)?;
    for (index, descriptor) in request.descriptors.iter().enumerate() {
        if let Some(limit) = &descriptor.limit
            && unit_from_proto(limit.unit).is_none()
        {
            return Err(DecideError::InvalidRequest(format!(
                "descriptor {index} has a limit override with unit {} (expected SECOND to YEAR)",
                limit.unit
            )));
        }
        if let Some(entry) = descriptor.entries.iter().position(|e| e.key.is_empty()) {
            return Err(DecideError::InvalidRequest(format!(
                "descriptor {index} entry {entry} has an empty key"
            )));
        }
    }
    Ok(())
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

/// The rule id suffix of a request's limit override on a descriptor that
/// matches no configured rule.
pub const OVERRIDE_RULE_ID: &str = "(override)";

/// Maps Envoy's `envoy.type.v3.RateLimitUnit` to a unit; `None` for UNKNOWN.
pub fn unit_from_proto(unit: i32) -> Option<Unit> {
    use crate::proto::envoy::r#type::v3::RateLimitUnit as P;
    match P::try_from(unit).ok()? {
        P::Unknown => None,
        P::Second => Some(Unit::Second),
        P::Minute => Some(Unit::Minute),
        P::Hour => Some(Unit::Hour),
        P::Day => Some(Unit::Day),
        P::Week => Some(Unit::Week),
        P::Month => Some(Unit::Month),
        P::Year => Some(Unit::Year),
    }
}

/// Appends to `buf` the counter key of one limit of one descriptor: the
/// domain, each entry's key and value (or shared pattern), and the limit's
/// identity (algorithm, window, and its slot when a rule has several limits).
/// Strings are length prefixed so no two descriptors share a key by
/// accident. Changing a limit's `requests_per_unit` keeps its key, so a
/// reload keeps its count, as the reference's keys do.
fn write_counter_key<E: EntryLike, P: AsRef<str>>(
    buf: &mut KeyBuffer,
    domain: &str,
    entries: &[E],
    shared: &[(usize, P)],
    limit: &Limit,
    slot: usize,
    multi: bool,
) {
    /// Keys up to this size are assembled on the stack and appended in one
    /// copy: cheaper than growing `buf` piece by piece.
    const STAGE_BYTES: usize = 128;
    /// Entry `index`'s value, or the shared pattern that replaces it.
    fn value_of<'a, E: EntryLike, P: AsRef<str>>(
        shared: &'a [(usize, P)],
        index: usize,
        entry: &'a E,
    ) -> &'a str {
        shared
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(entry.value(), |(_, pattern)| pattern.as_ref())
    }
    /// Passes the key's pieces, in order, to `emit`.
    fn pieces<E: EntryLike, P: AsRef<str>>(
        mut emit: impl FnMut(&[u8]),
        domain: &str,
        entries: &[E],
        shared: &[(usize, P)],
        limit: &Limit,
        slot: usize,
        multi: bool,
    ) {
        let mut put = |bytes: &[u8]| {
            emit(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
            emit(bytes);
        };
        put(domain.as_bytes());
        for (index, entry) in entries.iter().enumerate() {
            put(entry.key().as_bytes());
            put(value_of(shared, index, entry).as_bytes());
        }
        emit(&[match limit.algorithm {
            Algorithm::FixedWindow => b'f',
            Algorithm::SlidingWindow => b's',
            Algorithm::TokenBucket => b't',
        }]);
        emit(&limit.window().to_le_bytes());
        if multi {
            emit(&u32::try_from(slot).unwrap_or(u32::MAX).to_le_bytes());
        }
    }
    // The exact length, so the buffer grows at most once.
    let mut size = 4 + domain.len() + 1 + 8 + if multi { 4 } else { 0 };
    for (index, entry) in entries.iter().enumerate() {
        size += 8 + entry.key().len() + value_of(shared, index, entry).len();
    }
    let start = buf.len();
    if size <= STAGE_BYTES {
        let mut stage = [0u8; STAGE_BYTES];
        let mut at = 0;
        pieces(
            |bytes| {
                if let Some(to) = stage.get_mut(at..at + bytes.len()) {
                    to.copy_from_slice(bytes);
                }
                at += bytes.len();
            },
            domain,
            entries,
            shared,
            limit,
            slot,
            multi,
        );
        buf.extend_from_slice(stage.get(..size).unwrap_or_default());
    } else {
        buf.reserve(size);
        pieces(
            |bytes| buf.extend_from_slice(bytes),
            domain,
            entries,
            shared,
            limit,
            slot,
            multi,
        );
    }
    debug_assert_eq!(buf.len() - start, size);
}

/// One counter key on its own (the tests' view of [`write_counter_key`]).
#[cfg(test)]
fn counter_key<E: EntryLike>(
    domain: &str,
    entries: &[E],
    shared: &[(usize, String)],
    limit: &Limit,
    slot: usize,
    multi: bool,
) -> Box<[u8]> {
    let mut buf = KeyBuffer::new();
    write_counter_key(&mut buf, domain, entries, shared, limit, slot, multi);
    buf.as_slice().into()
}

impl EntryLike for crate::proto::Entry {
    fn key(&self) -> &str {
        &self.key
    }
    fn value(&self) -> &str {
        &self.value
    }
}

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
        let Some(Applied { rule, shared }) =
            match_descriptor(rules.domain(domain), domain, &descriptor)
        else {
            return Ok(None);
        };
        let multi = rule.limits.len() > 1;
        let limits = if rule.unlimited {
            &[][..]
        } else {
            &rule.limits[..]
        };
        let mut keys = KeyBuffer::new();
        let mut ranges: Vec<Range<usize>> = Vec::with_capacity(limits.len());
        for (slot, rule_limit) in limits.iter().enumerate() {
            let start = keys.len();
            write_counter_key(
                &mut keys,
                domain,
                entries,
                &shared,
                &rule_limit.limit,
                slot,
                multi,
            );
            ranges.push(start..keys.len());
        }
        let checks: Vec<Check<'_>> = limits
            .iter()
            .zip(ranges)
            .map(|(rule_limit, range)| Check {
                key: keys.get(range).unwrap_or_default(),
                limit: rule_limit.limit,
                hits: 0,
                group: 0,
                count_when_denied: false,
            })
            .collect();
        let mut outcomes = Outcomes::new();
        if !checks.is_empty() {
            self.store
                .apply(&checks, self.clock.now(), &mut outcomes)
                .await?;
        }
        let limits = checks
            .iter()
            .zip(outcomes)
            .zip(&rule.limits)
            .map(|((_, outcome), limit)| LimitUsage {
                limit: limit.clone(),
                outcome,
            })
            .collect();
        Ok(Some(Usage { rule, limits }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that always fails, as Redis does during an outage.
    struct FailingStore;

    impl CounterStore for FailingStore {
        async fn apply<'a>(
            &'a self,
            _checks: &'a [Check<'a>],
            _now: Nanos,
            _out: &'a mut Outcomes,
        ) -> Result<(), StoreError> {
            Err(StoreError::Timeout)
        }

        fn len(&self) -> u64 {
            0
        }
    }

    /// What a subscriber writes, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn store_failures_are_all_counted_but_logged_at_most_once_a_second() {
        let rules = crate::config::load_sources(
            &[(
                "d.yaml".into(),
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 5}\n"
                    .to_owned(),
            )],
            &crate::config::LoadOptions::default(),
        )
        .expect("rules");
        let clock = crate::clock::ManualClock::new(1_000 * crate::limit::NANOS_PER_SECOND);
        let limiter = RateLimiter::new(
            rules,
            FailingStore,
            Arc::new(clock.clone()),
            ServiceOptions::default(),
        );
        let request = RateLimitRequest {
            domain: "d".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![crate::proto::Entry {
                    key: "k".into(),
                    value: "v".into(),
                }],
                ..RateLimitDescriptor::default()
            }],
            hits_addend: 0,
        };
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(async {
                let decide = || async {
                    // Fail open (the default policy): OK, nothing counted.
                    let decision = limiter.decide(&request).await.expect("decided");
                    assert!(!decision.over_limit);
                };
                for _ in 0..100 {
                    decide().await;
                }
                clock.advance(STORE_WARNING_INTERVAL - 1);
                decide().await;
                clock.advance(1);
                decide().await;
                // A clock stepped back by more than the interval logs again.
                clock.set(500 * crate::limit::NANOS_PER_SECOND);
                decide().await;
            });
        });
        assert_eq!(limiter.store_errors(), 103);
        let text =
            String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8 log");
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("counter store failed"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("not_logged_since_last=0"), "{text}");
        assert!(lines[1].contains("not_logged_since_last=100"), "{text}");
        assert!(lines[2].contains("not_logged_since_last=0"), "{text}");
    }

    #[test]
    fn counter_keys_do_not_collide_across_entry_boundaries() {
        let limit = Limit::fixed(10, Unit::Minute);
        let a = counter_key("d", &[("ab", "c")], &[], &limit, 0, false);
        let b = counter_key("d", &[("a", "bc")], &[], &limit, 0, false);
        assert_ne!(a, b);
    }

    #[test]
    fn counter_keys_are_the_same_bytes_short_or_long() {
        let limit = Limit::fixed(10, Unit::Minute);
        // Staged on the stack (short) or appended piece by piece (long).
        for value in ["v".to_owned(), "v".repeat(300)] {
            let key = counter_key("d", &[("k", value.as_str())], &[], &limit, 0, false);
            let mut expected = Vec::new();
            for part in ["d", "k", value.as_str()] {
                expected.extend_from_slice(&(part.len() as u32).to_le_bytes());
                expected.extend_from_slice(part.as_bytes());
            }
            expected.push(b'f');
            expected.extend_from_slice(&limit.window().to_le_bytes());
            assert_eq!(*key, *expected, "{} bytes", value.len());
        }
    }

    #[test]
    fn counter_key_uses_shared_pattern() {
        let limit = Limit::fixed(10, Unit::Minute);
        let shared = vec![(0, "foo*".to_owned())];
        let a = counter_key("d", &[("k", "foo1")], &shared, &limit, 0, false);
        let b = counter_key("d", &[("k", "foo2")], &shared, &limit, 0, false);
        assert_eq!(a, b);
    }

    #[test]
    fn counter_key_depends_on_window_not_on_count() {
        let a = counter_key(
            "d",
            &[("k", "v")],
            &[],
            &Limit::fixed(10, Unit::Minute),
            0,
            false,
        );
        let b = counter_key(
            "d",
            &[("k", "v")],
            &[],
            &Limit::fixed(99, Unit::Minute),
            0,
            false,
        );
        let c = counter_key(
            "d",
            &[("k", "v")],
            &[],
            &Limit::fixed(10, Unit::Hour),
            0,
            false,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
