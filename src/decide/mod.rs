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
//! that the [`Check`](crate::store::Check)s borrow, rules and patterns are borrowed or shared
//! (`Arc`), and the answer's descriptor list is inline for two
//! ([`DescriptorDecisions`]).
//!
//! The semantics are the reference server's (envoyproxy/ratelimit):
//! - a request's `hits_addend` of 0 means 1; a descriptor's own `hits_addend`
//!   overrides it, and 0 there checks without counting;
//! - a descriptor's `limit` override replaces the configured limit;
//!   floodgate's operator overrides ([`crate::rules::overrides`]) of one
//!   exact descriptor replace both;
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

mod combine;

mod decision;

mod plan;

mod usage;

pub mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

pub use decision::{
    Decision, DescriptorDecision, DescriptorDecisions, HeaderLimit, ResponseContext,
};

pub use plan::{OVERRIDE_RULE_ID, hits_of};

pub use usage::{LimitUsage, Usage};

pub use validate::RequestLimits;

use crate::clock::Clock;
use crate::limit::Nanos;
use crate::proto::RateLimitRequest;
use crate::rules::RuleSet;
use crate::rules::overrides::OverrideSet;
use crate::store::{CounterStore, Outcomes, StoreError};
use plan::{Counting, Planned};
use validate::validate;

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

/// The rate limiter: current rules, a counter store and a clock.
pub struct RateLimiter<S> {
    rules: ArcSwap<RuleSet>,
    /// Operators' overrides of single descriptors (usually none).
    overrides: ArcSwap<OverrideSet>,
    /// Whether `overrides` has any: a decision reads this flag, not the set,
    /// when there are none (the common case).
    has_overrides: AtomicBool,
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
            overrides: ArcSwap::from_pointee(OverrideSet::default()),
            has_overrides: AtomicBool::new(false),
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

    /// The operators' overrides in force now.
    pub fn overrides(&self) -> Arc<OverrideSet> {
        self.overrides.load_full()
    }

    /// Swaps in a new override set atomically, as [`Self::replace_rules`].
    pub fn replace_overrides(&self, overrides: OverrideSet) {
        let any = !overrides.is_empty();
        self.overrides.store(Arc::new(overrides));
        self.has_overrides.store(any, Ordering::Release);
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

    /// Decides one request: plan its checks, apply them in the store,
    /// combine the outcomes into an answer.
    pub async fn decide(&self, request: &RateLimitRequest) -> Result<Decision, DecideError> {
        validate(request, &self.options.request_limits)?;
        let rules = self.rules.load();
        let domain = request.domain.as_str();
        let known = rules.domain(domain);
        let now = self.clock.now();
        // Without any override (the common case) this is one flag read.
        let overrides = self
            .has_overrides
            .load(Ordering::Acquire)
            .then(|| self.overrides.load());
        let domain_overrides = overrides.as_ref().and_then(|set| set.domain(domain));
        let mut planned = Planned::new();
        plan::plan(
            &mut planned,
            known,
            domain_overrides,
            now,
            domain,
            &request.descriptors,
            Counting::Decide {
                request,
                one_group: self.options.stop_increment_when_over_limit,
            },
        );

        let mut outcomes = Outcomes::new();
        let mut fail_closed = false;
        let mut store_failed = false;
        {
            let checks = planned.checks();
            if !checks.is_empty()
                && let Err(error) = self.store.apply(&checks, now, &mut outcomes).await
            {
                self.store_failed(&error, now);
                store_failed = true;
                outcomes.clear();
                match self.options.on_store_error {
                    StoreErrorPolicy::Error => return Err(error.into()),
                    StoreErrorPolicy::Allow => {}
                    StoreErrorPolicy::Deny => fail_closed = true,
                }
            }
            combine::report_uncounted(&checks, &mut outcomes);
        }
        let mut decision = combine::combine(
            &mut planned,
            &outcomes,
            self.options.shadow_mode,
            fail_closed,
        );
        if fail_closed {
            decision.over_limit = !self.options.shadow_mode;
        }
        // Whatever the policy answered, the failure reaches the metrics.
        decision.store_failed = store_failed;
        decision.context = ResponseContext {
            // A known domain's name is shared; an unknown one is copied.
            domain: known.map_or_else(|| Arc::from(domain), |d| Arc::clone(d.shared_name())),
            now,
            policy: known.and_then(|d| d.response().cloned()),
        };
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{RateLimitDescriptor, RateLimitRequest};
    use crate::store::Check;

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
                    assert!(decision.store_failed, "metrics must see the failure");
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
}
