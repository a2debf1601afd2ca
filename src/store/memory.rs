//! Counters held in this process, in a bounded moka cache.
//!
//! [`MemoryStore`] keeps one [`CounterState`] per key in a
//! [`moka::sync::Cache`] bounded to `max_counters` entries. Each entry expires
//! when its state stops mattering ([`Evaluation::expires_at`]: after it, a
//! missing state means the same as the stored one), so idle keys cost nothing
//! and an entry is never dropped by expiry while it still limits anything.
//! When the cache is full, the least recently used counter is evicted (LRU,
//! not moka's default TinyLFU, which may refuse to admit a *new* key: a new
//! key's hits would then never be counted). An evicted counter forgets its
//! hits, so [`MemoryStore::evictions`] is worth alerting on.
//!
//! # Memory bound
//!
//! Callers choose descriptor values, so counter keys can be long (a request
//! may carry values up to `--max-value-bytes`). The capacity therefore counts
//! *slots*, not keys: a key of up to [`KEY_BYTES_PER_SLOT`] bytes (nearly
//! every real key: domain, a few entries) takes one slot, and a longer key one
//! more slot per further [`KEY_BYTES_PER_SLOT`] bytes. Memory stays near
//! `max_counters × (KEY_BYTES_PER_SLOT + per-entry overhead)` however long
//! the keys a flood sends, instead of growing with their length.
//!
//! # Atomicity
//!
//! Every read-evaluate-write of a key happens under a lock from a fixed array
//! of lock stripes chosen by the key's hash, and the state itself lives in
//! the cache, not behind a shared `Arc<Mutex<_>>`: with shared mutable
//! values, a caller holding an entry that moka evicts or expires at that
//! moment would commit its hits into an orphan while the next caller starts a
//! fresh entry — a lost update and an over-admission. Here a write is always
//! an insert into the cache under the key's stripe, so there is nothing to
//! orphan. A call with several checks locks all of its stripes in ascending
//! order, so concurrent calls cannot deadlock; no lock is held across an
//! `.await` (the work is synchronous).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use parking_lot::Mutex;

use super::{Check, CounterStore, StoreError};
use crate::limit::{self, Algorithm, CounterState, Evaluation, Nanos, Outcome};

/// Lock stripes: enough that unrelated keys rarely share one on a busy
/// server, few enough to stay in cache.
const STRIPES: usize = 1024;

/// Key bytes one capacity slot pays for; see "Memory bound" above.
pub const KEY_BYTES_PER_SLOT: usize = 256;

/// The slots a counter with `key` takes: 1 up to [`KEY_BYTES_PER_SLOT`]
/// bytes, one more per further [`KEY_BYTES_PER_SLOT`] bytes.
fn slots_of(key: &[u8]) -> u32 {
    let extra = key.len().saturating_sub(1) / KEY_BYTES_PER_SLOT;
    u32::try_from(extra).unwrap_or(u32::MAX - 1) + 1
}

/// A counter as cached: its state and how long it matters from when it was
/// written.
#[derive(Clone, Copy, Debug)]
struct Stored {
    state: CounterState,
    time_to_live: Duration,
}

/// Expires each entry when its state stops mattering. Reads keep the
/// deadline; every write sets it afresh from the new state.
struct StateExpiry;

impl Expiry<Box<[u8]>, Stored> for StateExpiry {
    fn expire_after_create(&self, _: &Box<[u8]>, value: &Stored, _: Instant) -> Option<Duration> {
        Some(value.time_to_live)
    }

    fn expire_after_update(
        &self,
        _: &Box<[u8]>,
        value: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.time_to_live)
    }
}

/// One lock stripe, on its own cache line so that neighbouring stripes taken
/// by different cores do not contend on the line.
#[repr(align(64))]
#[derive(Default)]
struct Stripe(Mutex<()>);

/// An in-process [`CounterStore`] bounded to a number of counters.
pub struct MemoryStore {
    counters: Cache<Box<[u8]>, Stored>,
    stripes: Box<[Stripe]>,
    hasher: RandomState,
    evictions: Arc<AtomicU64>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("counters", &self.counters.entry_count())
            .field("evictions", &self.evictions())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store holding at most `max_counters` counters (of keys up to
    /// [`KEY_BYTES_PER_SLOT`] bytes; a longer key counts as several),
    /// evicting the least recently used beyond that.
    pub fn new(max_counters: u64) -> MemoryStore {
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&evictions);
        let counters = Cache::<Box<[u8]>, Stored>::builder()
            .max_capacity(max_counters)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|key, _| slots_of(key))
            .expire_after(StateExpiry)
            // Runs on whichever thread does moka's housekeeping, possibly
            // inside `apply` while stripes are held: it must not lock.
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        MemoryStore {
            counters,
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            hasher: RandomState::new(),
            evictions,
        }
    }

    /// Counters evicted because the store was full since it was created.
    /// Each one forgot hits that still mattered.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn stripe_of(&self, key: &[u8]) -> usize {
        // Truncating the hash is fine: only the low bits pick the stripe.
        (self.hasher.hash_one(key) as usize) % STRIPES
    }

    fn load(&self, key: &[u8]) -> Option<CounterState> {
        self.counters.get(key).map(|stored| stored.state)
    }

    /// Writes `evaluation.counted` for `key`, evaluated at `now`.
    fn commit(&self, key: &[u8], evaluation: &Evaluation, now: Nanos) {
        let time_to_live = evaluation.expires_at.saturating_sub(now);
        if time_to_live == 0 {
            // The state already means the same as no state.
            self.counters.invalidate(key);
        } else {
            let stored = Stored {
                state: evaluation.counted,
                time_to_live: Duration::from_nanos(time_to_live),
            };
            self.counters.insert(key.into(), stored);
        }
    }

    /// [`CounterStore::apply`], synchronously.
    fn apply_now(&self, checks: &[Check], now: Nanos, out: &mut Vec<Outcome>) {
        out.clear();
        match checks {
            [] => {}
            [check] => out.push(self.apply_one(check, now)),
            _ => self.apply_many(checks, now, out),
        }
    }

    /// The common case, one check: no allocation but the key on a write.
    fn apply_one(&self, check: &Check, now: Nanos) -> Outcome {
        let _stripe = self.stripes[self.stripe_of(&check.key)].0.lock();
        let evaluation = limit::evaluate(&check.limit, self.load(&check.key), now, check.hits);
        // Without hits the counted state is the stored one, rolled forward:
        // the same meaning, nothing to write.
        if check.hits > 0 && (evaluation.outcome.admitted || counts_when_denied(check)) {
            self.commit(&check.key, &evaluation, now);
        }
        evaluation.outcome
    }

    /// Several checks: lock every stripe involved, evaluate all checks in
    /// order (each seeing the hits earlier checks of the same key may
    /// commit), decide each group, then replay the committed hits per key and
    /// write each key once.
    fn apply_many(&self, checks: &[Check], now: Nanos, out: &mut Vec<Outcome>) {
        let mut stripes: Vec<usize> = checks.iter().map(|c| self.stripe_of(&c.key)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _locked: Vec<_> = stripes.iter().map(|&i| self.stripes[i].0.lock()).collect();

        // The earlier check with the same key, if any.
        let mut last_seen: HashMap<&[u8], usize> = HashMap::with_capacity(checks.len());
        let earlier: Vec<Option<usize>> = checks
            .iter()
            .enumerate()
            .map(|(i, check)| last_seen.insert(&check.key, i))
            .collect();

        // Pass 1: each check sees the stored state plus the hits of earlier
        // checks on its key that may still be committed (admitted so far, or
        // counted even when denied). Seeing hits that end up rolled back
        // only makes a check stricter, never looser.
        let mut seen: Vec<Option<CounterState>> = Vec::with_capacity(checks.len());
        let mut evaluations: Vec<Evaluation> = Vec::with_capacity(checks.len());
        for (i, check) in checks.iter().enumerate() {
            let state = match earlier[i] {
                Some(j) if evaluations[j].outcome.admitted || counts_when_denied(&checks[j]) => {
                    Some(evaluations[j].counted)
                }
                Some(j) => seen[j],
                None => self.load(&check.key),
            };
            seen.push(state);
            evaluations.push(limit::evaluate(&check.limit, state, now, check.hits));
        }

        let denied_groups: Vec<u32> = checks
            .iter()
            .zip(&evaluations)
            .filter(|(_, evaluation)| !evaluation.outcome.admitted)
            .map(|(check, _)| check.group)
            .collect();

        // Pass 2: replay only the committed hits. Adding hits composes, so
        // a key's final state is its stored state plus exactly those hits,
        // whatever was rolled back in between.
        let mut after: Vec<(Option<CounterState>, Option<Evaluation>)> =
            Vec::with_capacity(checks.len());
        for (i, check) in checks.iter().enumerate() {
            let (before, written) = match earlier[i] {
                Some(j) => after[j],
                None => (seen[i], None),
            };
            // A denied group commits only its own denied checks that count
            // over-limit hits (see `CounterStore::apply`).
            let commits = check.hits > 0
                && (!denied_groups.contains(&check.group)
                    || (counts_when_denied(check) && !evaluations[i].outcome.admitted));
            after.push(if commits {
                let evaluation = if before == seen[i] {
                    evaluations[i]
                } else {
                    limit::evaluate(&check.limit, before, now, check.hits)
                };
                (Some(evaluation.counted), Some(evaluation))
            } else {
                (before, written)
            });
        }

        // Write each changed key once, at its last occurrence.
        let mut last_of_key = vec![false; checks.len()];
        for &i in last_seen.values() {
            last_of_key[i] = true;
        }
        for (i, check) in checks.iter().enumerate() {
            if let (true, (_, Some(evaluation))) = (last_of_key[i], &after[i]) {
                self.commit(&check.key, evaluation, now);
            }
        }

        out.extend(evaluations.iter().map(|evaluation| evaluation.outcome));
    }
}

/// Whether a denied check's hits are committed anyway: only fixed windows
/// count over-limit hits, as the reference does.
fn counts_when_denied(check: &Check) -> bool {
    check.count_when_denied && check.limit.algorithm == Algorithm::FixedWindow
}

impl CounterStore for MemoryStore {
    async fn apply<'a>(
        &'a self,
        checks: &'a [Check],
        now: Nanos,
        out: &'a mut Vec<Outcome>,
    ) -> Result<(), StoreError> {
        // Synchronous inside: no lock is ever held across an await.
        self.apply_now(checks, now, out);
        Ok(())
    }

    fn len(&self) -> u64 {
        // moka counts writes and expiries in batches; settle them first so a
        // metrics scrape (the caller) sees the real number, not a lagging one.
        self.counters.run_pending_tasks();
        self.counters.entry_count()
    }

    fn evictions(&self) -> u64 {
        MemoryStore::evictions(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{Limit, NANOS_PER_SECOND, Unit};

    const NOW: Nanos = 1_700_000_000 * NANOS_PER_SECOND;

    fn check(key: &str, limit: Limit, hits: u64, group: u32) -> Check {
        Check {
            key: key.as_bytes().into(),
            limit,
            hits,
            group,
            count_when_denied: false,
        }
    }

    fn limit(algorithm: Algorithm, requests_per_unit: u64) -> Limit {
        Limit {
            algorithm,
            ..Limit::fixed(requests_per_unit, Unit::Hour)
        }
    }

    fn apply(store: &MemoryStore, checks: &[Check]) -> Vec<Outcome> {
        let mut out = vec![];
        store.apply_now(checks, NOW, &mut out);
        out
    }

    /// Hits counted for `key` under `limit`, probed without counting.
    fn used(store: &MemoryStore, key: &str, limit: Limit) -> u64 {
        apply(store, &[check(key, limit, 0, 0)])[0].used
    }

    #[test]
    fn concurrent_callers_on_one_key_admit_exactly_the_limit() {
        for algorithm in Algorithm::ALL {
            let store = MemoryStore::new(1_000);
            let limit = limit(algorithm, 300);
            let admitted = AtomicU64::new(0);
            std::thread::scope(|scope| {
                for _ in 0..8 {
                    scope.spawn(|| {
                        let checks = [check("k", limit, 1, 0)];
                        for _ in 0..100 {
                            if apply(&store, &checks)[0].admitted {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            assert_eq!(admitted.into_inner(), 300, "{algorithm:?}");
            assert_eq!(used(&store, "k", limit), 300, "{algorithm:?}");
        }
    }

    #[test]
    fn concurrent_multi_key_calls_stay_atomic() {
        let store = MemoryStore::new(1_000);
        let (small, large) = (
            limit(Algorithm::FixedWindow, 150),
            limit(Algorithm::TokenBucket, 1_000),
        );
        let admitted = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let (store, admitted) = (&store, &admitted);
                scope.spawn(move || {
                    // Alternate key order so callers lock in different orders
                    // if the store did not sort.
                    let mut checks = vec![check("a", small, 1, 0), check("b", large, 2, 0)];
                    if thread % 2 == 1 {
                        checks.reverse();
                    }
                    for _ in 0..50 {
                        if apply(store, &checks).iter().all(|o| o.admitted) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 150);
        assert_eq!(used(&store, "a", small), 150);
        assert_eq!(used(&store, "b", large), 300);
    }

    #[test]
    fn a_denied_group_commits_nothing() {
        let store = MemoryStore::new(100);
        let (roomy, tight) = (
            limit(Algorithm::SlidingWindow, 10),
            limit(Algorithm::FixedWindow, 1),
        );
        let group = [check("roomy", roomy, 1, 7), check("tight", tight, 1, 7)];
        assert!(apply(&store, &group).iter().all(|o| o.admitted));
        let second = apply(&store, &group);
        assert!(second[0].admitted && !second[1].admitted);
        assert_eq!(used(&store, "roomy", roomy), 1);
        assert_eq!(used(&store, "tight", tight), 1);
        // Another group in the same call is unaffected.
        let mixed = [
            check("roomy", roomy, 1, 1),
            check("tight", tight, 1, 1),
            check("other", roomy, 2, 2),
        ];
        let outcomes = apply(&store, &mixed);
        assert!(!outcomes[1].admitted && outcomes[2].admitted);
        assert_eq!(used(&store, "roomy", roomy), 1);
        assert_eq!(used(&store, "other", roomy), 2);
    }

    #[test]
    fn count_when_denied_commits_fixed_windows_only() {
        let store = MemoryStore::new(100);
        let fixed = limit(Algorithm::FixedWindow, 5);
        let sliding = limit(Algorithm::SlidingWindow, 5);
        let tight = limit(Algorithm::FixedWindow, 0);
        let counted = |key: &str, limit| Check {
            count_when_denied: true,
            ..check(key, limit, 2, 0)
        };
        let call = [
            counted("fixed", fixed),
            counted("sliding", sliding),
            check("tight", tight, 1, 0),
            counted("over", tight),
        ];
        let outcomes = apply(&store, &call);
        assert!(!outcomes[2].admitted && !outcomes[3].admitted);
        // In a denied group only the denied checks that count over-limit
        // hits are charged (the reference's STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT).
        assert_eq!(used(&store, "fixed", fixed), 0);
        assert_eq!(used(&store, "sliding", sliding), 0);
        assert_eq!(used(&store, "tight", tight), 0);
        assert_eq!(used(&store, "over", tight), 2);
        // Alone, an over-limit fixed window keeps counting, like the reference.
        for _ in 0..3 {
            apply(&store, &[counted("fixed", fixed)]);
        }
        assert_eq!(used(&store, "fixed", fixed), 6);
    }

    #[test]
    fn duplicate_keys_see_earlier_hits_in_order() {
        let store = MemoryStore::new(100);
        let one = limit(Algorithm::FixedWindow, 1);
        // Same group: the second sees the first's hit, so the group fails.
        let twice = [check("k", one, 1, 0), check("k", one, 1, 0)];
        let outcomes = apply(&store, &twice);
        assert!(outcomes[0].admitted && !outcomes[1].admitted);
        assert_eq!(used(&store, "k", one), 0);

        let two = limit(Algorithm::FixedWindow, 2);
        let outcomes = apply(&store, &[check("k", two, 1, 0), check("k", two, 1, 0)]);
        assert_eq!(outcomes[1].remaining, 0);
        assert_eq!(used(&store, "k", two), 2);

        // Group 1 fails elsewhere; group 2 saw its tentative hit on "j" but
        // only group 2's hit is committed.
        let five = limit(Algorithm::TokenBucket, 5);
        let none = limit(Algorithm::FixedWindow, 0);
        let calls = [
            check("j", five, 1, 1),
            check("x", none, 1, 1),
            check("j", five, 1, 2),
        ];
        let outcomes = apply(&store, &calls);
        assert_eq!(outcomes[2].used, 2);
        assert_eq!(used(&store, "j", five), 1);
    }

    #[test]
    fn capacity_bounds_the_counters_and_counts_evictions() {
        let store = MemoryStore::new(100);
        let limit = limit(Algorithm::FixedWindow, 10);
        for n in 0..1_000 {
            apply(&store, &[check(&format!("key-{n}"), limit, 1, 0)]);
        }
        store.counters.run_pending_tasks();
        assert!(store.len() <= 100, "{}", store.len());
        assert!(store.evictions() >= 900, "{}", store.evictions());
    }

    #[test]
    fn long_keys_take_more_slots() {
        assert_eq!(slots_of(b""), 1);
        assert_eq!(slots_of(&[0; KEY_BYTES_PER_SLOT]), 1);
        assert_eq!(slots_of(&[0; KEY_BYTES_PER_SLOT + 1]), 2);
        assert_eq!(slots_of(&[0; 64 * 1024]), 256);
        // 100 slots hold at most 10 keys of 10 slots each.
        let store = MemoryStore::new(100);
        let limit = limit(Algorithm::FixedWindow, 10);
        for n in 0..100 {
            let key = format!("{n:0>width$}", width = 10 * KEY_BYTES_PER_SLOT);
            apply(&store, &[check(&key, limit, 1, 0)]);
        }
        assert!(store.len() <= 10, "{}", store.len());
        assert!(store.evictions() >= 90, "{}", store.evictions());
    }

    #[test]
    fn entries_expire_when_their_state_stops_mattering() {
        let store = MemoryStore::new(100);
        let second = Limit::fixed(10, Unit::Second);
        let hour = Limit::fixed(10, Unit::Hour);
        // 30 ms before a second's end: that counter matters for 30 ms.
        let now = NOW + NANOS_PER_SECOND - 30_000_000;
        let mut out = vec![];
        store.apply_now(
            &[check("short", second, 1, 0), check("long", hour, 1, 0)],
            now,
            &mut out,
        );
        store.counters.run_pending_tasks();
        assert_eq!(store.len(), 2);
        std::thread::sleep(Duration::from_millis(100));
        // moka drops expired entries from its count lazily (its timer wheel
        // ticks about every second), but never returns them.
        assert!(store.load(b"short").is_none());
        assert!(store.load(b"long").is_some());
    }

    #[tokio::test]
    async fn apply_through_the_trait_clears_out() {
        let store = MemoryStore::new(10);
        let mut out = vec![Outcome {
            admitted: false,
            remaining: 0,
            reset_after: 0,
            used: 0,
        }];
        let checks = [check("k", Limit::fixed(3, Unit::Minute), 1, 0)];
        let result = store.apply(&checks, NOW, &mut out).await;
        assert!(result.is_ok());
        assert_eq!(out.len(), 1);
        assert!(out[0].admitted && out[0].remaining == 2);
        assert!(store.apply(&[], NOW, &mut out).await.is_ok());
        assert!(out.is_empty());
    }
}
