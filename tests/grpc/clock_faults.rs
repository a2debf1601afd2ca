//! Wall-clock faults through the whole decision path (rules, counter keys,
//! the memory store), for every algorithm: the clock steps back and forward
//! across windows, or reads behind real time by a skew of less than a window.
//!
//! The pure algorithms have the same properties checked in
//! `tests/algorithms.rs`; these tests check that the service keeps them:
//! - a step back does not open a fresh quota, and a step forward restores it;
//! - a denied request is never locked out longer than two windows (fixed),
//!   three (sliding), or a window plus the burst's refill (token bucket), and
//!   waiting the reported `reset_after` admits it;
//! - under skew, a counted fixed window never admits more than the limit, and
//!   a bucket never more than `burst + rate × (interval + skew)`.

use crate::harness;

use std::sync::Arc;

use floodgate::clock::ManualClock;
use floodgate::decide::{DescriptorDecision, RateLimiter, ServiceOptions};
use floodgate::limit::{NANOS_PER_SECOND, Nanos};
use floodgate::proto::{Entry, RateLimitDescriptor, RateLimitRequest};
use floodgate::store::memory::MemoryStore;
use harness::{rules, secs};
use proptest::prelude::*;

const RPU: u64 = 5;
const BURST: u64 = 8;
const WINDOW: Nanos = NANOS_PER_SECOND;
/// Mid-window, far from the epoch's edges.
const BASE: Nanos = secs(1_700_006_400) + WINDOW / 2;

const YAML: &str = "domain: d
descriptors:
  - key: fixed
    rate_limit: {unit: second, requests_per_unit: 5}
  - key: sliding
    rate_limit: {algorithm: sliding_window, unit: second, requests_per_unit: 5}
  - key: bucket
    rate_limit: {algorithm: token_bucket, unit: second, requests_per_unit: 5, burst: 8}
";

const KEYS: [&str; 3] = ["fixed", "sliding", "bucket"];

struct Service {
    limiter: RateLimiter<MemoryStore>,
    clock: ManualClock,
}

impl Service {
    fn new() -> Service {
        let clock = ManualClock::new(BASE);
        let limiter = RateLimiter::new(
            rules(YAML),
            MemoryStore::new(1_000),
            Arc::new(clock.clone()),
            ServiceOptions::default(),
        );
        Service { limiter, clock }
    }

    /// Asks for `hits` on `key` at the clock's current reading.
    async fn ask(&self, key: &str, hits: u32) -> DescriptorDecision {
        let request = RateLimitRequest {
            domain: "d".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: key.into(),
                    value: "v".into(),
                }],
                ..RateLimitDescriptor::default()
            }],
            hits_addend: hits,
        };
        let decision = self.limiter.decide(&request).await.expect("decided");
        decision.descriptors.into_iter().next().expect("one status")
    }

    /// How many of `n` single requests are admitted now.
    async fn admitted(&self, key: &str, n: u64) -> u64 {
        let mut ok = 0;
        for _ in 0..n {
            ok += u64::from(!self.ask(key, 1).await.over_limit);
        }
        ok
    }
}

/// What one key admits at once with a full quota.
fn quota(key: &str) -> u64 {
    if key == "bucket" { BURST } else { RPU }
}

/// The longest a request that fits is ever told to wait.
fn lockout_bound(key: &str) -> Nanos {
    match key {
        "fixed" => 2 * WINDOW,
        "sliding" => 3 * WINDOW,
        _ => WINDOW + (BURST * WINDOW).div_ceil(RPU) + 1,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

#[tokio::test]
async fn stepping_back_opens_no_fresh_quota_and_stepping_forward_restores_it() {
    for key in KEYS {
        let s = Service::new();
        assert_eq!(s.admitted(key, quota(key) + 3).await, quota(key), "{key}");
        // Back by less than a window (into the previous window): still full.
        s.clock.set(BASE - WINDOW * 3 / 4);
        assert_eq!(s.admitted(key, 3).await, 0, "{key} after a small step back");
        // Back by several windows: the wait stays bounded and truthful.
        s.clock.set(BASE - 5 * WINDOW);
        let denied = s.ask(key, 1).await;
        if denied.over_limit {
            let wait = denied.reset_after.expect("a wait");
            assert!(wait <= lockout_bound(key), "{key}: {wait}");
            s.clock.advance(wait);
            assert!(!s.ask(key, 1).await.over_limit, "{key} after waiting");
        }
        // Forward past every counted window: a full quota again.
        s.clock.set(BASE + 6 * WINDOW);
        assert_eq!(s.admitted(key, quota(key) + 3).await, quota(key), "{key}");
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary steps within 20 windows, back and forth: every denied
    /// request that could fit is told a bounded wait, and at the end waiting
    /// it out admits the request.
    #[test]
    fn arbitrary_steps_never_lock_a_key_out(
        key in prop::sample::select(KEYS.to_vec()),
        steps in prop::collection::vec((0..20 * WINDOW, 1..=3u32), 1..60),
    ) {
        runtime().block_on(async {
            let s = Service::new();
            for (offset, hits) in steps {
                s.clock.set(BASE + offset);
                let answer = s.ask(key, hits).await;
                if answer.over_limit {
                    let wait = answer.reset_after.unwrap_or(0);
                    prop_assert!(wait <= lockout_bound(key), "{key}: waits {wait}");
                }
            }
            // Exhaust the key, then wait what it says.
            let mut last = s.ask(key, 1).await;
            for _ in 0..=quota(key) {
                if last.over_limit {
                    break;
                }
                last = s.ask(key, 1).await;
            }
            prop_assert!(last.over_limit, "{key} never denied");
            let wait = last.reset_after.unwrap_or(0);
            prop_assert!(wait <= lockout_bound(key), "{key}: waits {wait}");
            s.clock.advance(wait);
            prop_assert!(!s.ask(key, 1).await.over_limit, "{key} still denied after {wait}");
            Ok(())
        })?;
    }

    /// Real time runs forward; the clock reads up to 0.9 windows behind it,
    /// jumping back and forth. A counted fixed window (its end is the
    /// reading plus `reset_after`) admits at most the limit, and over any
    /// real interval `d` the bucket admits at most
    /// `burst + rate × (d + skew) / window`.
    #[test]
    fn skew_of_less_than_a_window_never_over_admits(
        steps in prop::collection::vec(
            (prop_oneof![Just(0), 1..1_000u64, 1..WINDOW / 2], 0..WINDOW * 9 / 10, 1..=2u32),
            1..80,
        ),
    ) {
        const SKEW: Nanos = WINDOW * 9 / 10;
        runtime().block_on(async {
            let s = Service::new();
            let mut real = BASE + WINDOW;
            let mut per_window = std::collections::BTreeMap::<Nanos, u64>::new();
            let mut taken: Vec<(Nanos, u64)> = Vec::new();
            for (gap, behind, hits) in steps {
                real += gap;
                let reading = real - behind;
                s.clock.set(reading);
                let fixed = s.ask("fixed", hits).await;
                if !fixed.over_limit {
                    let end = reading + fixed.reset_after.unwrap_or(0);
                    *per_window.entry(end).or_default() += u64::from(hits);
                }
                if !s.ask("bucket", hits).await.over_limit {
                    taken.push((real, u64::from(hits)));
                }
            }
            prop_assert!(per_window.values().all(|&hits| hits <= RPU), "{per_window:?}");
            for (n, &(from, _)) in taken.iter().enumerate() {
                let mut hits = 0u128;
                for &(at, h) in &taken[n..] {
                    hits += u128::from(h);
                    let elapsed = u128::from(at - from + SKEW);
                    let allowed = u128::from(BURST) * u128::from(WINDOW) + elapsed * u128::from(RPU);
                    prop_assert!(hits * u128::from(WINDOW) <= allowed, "{hits} hits from {from} to {at}");
                }
            }
            Ok(())
        })?;
    }
}
