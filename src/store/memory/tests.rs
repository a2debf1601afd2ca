use super::*;
use crate::limit::{Limit, NANOS_PER_SECOND, Unit};

const NOW: Nanos = 1_700_000_000 * NANOS_PER_SECOND;

fn check(key: &str, limit: Limit, hits: u64, group: u32) -> Check<'_> {
    Check {
        key: key.as_bytes(),
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

fn apply(store: &MemoryStore, checks: &[Check<'_>]) -> Outcomes {
    let mut out = Outcomes::new();
    store.apply_now(checks, NOW, &mut out);
    out
}

/// Hits counted for `key` under `limit`, probed without counting.
fn used(store: &MemoryStore, key: &str, limit: Limit) -> u64 {
    used_at(store, key, limit, NOW)
}

/// [`used`] at `now`.
fn used_at(store: &MemoryStore, key: &str, limit: Limit, now: Nanos) -> u64 {
    let mut out = Outcomes::new();
    store.apply_now(&[check(key, limit, 0, 0)], now, &mut out);
    out[0].used
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
    let counted = |key: &'static str, limit| Check {
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
fn keys_inline_and_on_the_heap_are_told_apart() {
    let store = MemoryStore::new(100);
    let limit = limit(Algorithm::FixedWindow, 10);
    // Around the inline size: each key is its own counter, and a key that
    // is a prefix of another (or the empty key) does not share it.
    let keys: Vec<String> = [0, 1, INLINE_KEY_BYTES - 1, INLINE_KEY_BYTES]
        .into_iter()
        .chain([INLINE_KEY_BYTES + 1, 300])
        .map(|len| "k".repeat(len))
        .collect();
    for (n, key) in keys.iter().enumerate() {
        for _ in 0..=n {
            apply(&store, &[check(key, limit, 1, 0)]);
        }
    }
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(
            used(&store, key, limit),
            n as u64 + 1,
            "{} bytes",
            key.len()
        );
    }
    assert_eq!(store.len(), keys.len() as u64);
}

/// The size the "Memory bound" section of the module doc accounts for.
#[cfg(target_pointer_width = "64")]
#[test]
fn an_entry_is_112_bytes() {
    assert_eq!(std::mem::size_of::<Entry>(), 112);
}

#[test]
fn entries_expire_when_their_state_stops_mattering() {
    let store = MemoryStore::new(100);
    let second = Limit::fixed(10, Unit::Second);
    let hour = Limit::fixed(10, Unit::Hour);
    // 30 ms before a second's end: that counter matters for 30 ms.
    let now = NOW + NANOS_PER_SECOND - 30_000_000;
    let mut out = Outcomes::new();
    store.apply_now(
        &[check("short", second, 1, 0), check("long", hour, 1, 0)],
        now,
        &mut out,
    );
    assert_eq!(store.len(), 2);
    // 100 ms later the short one is gone, the long one still counts.
    let later = now + 100_000_000;
    assert_eq!(used_at(&store, "long", hour, later), 1);
    assert_eq!(used_at(&store, "short", second, later), 0);
    assert_eq!(store.len(), 1);
    assert_eq!(store.evictions(), 0);
}

#[test]
fn expired_counters_make_room_before_live_ones_are_evicted() {
    let store = MemoryStore::new(10);
    let second = Limit::fixed(10, Unit::Second);
    let hour = Limit::fixed(10, Unit::Hour);
    for n in 0..10 {
        apply(&store, &[check(&format!("short-{n}"), second, 1, 0)]);
    }
    // A second later all ten are expired: new keys take their place
    // without evicting anything that still matters.
    let later = NOW + NANOS_PER_SECOND;
    let mut out = Outcomes::new();
    for n in 0..10 {
        store.apply_now(&[check(&format!("long-{n}"), hour, 1, 0)], later, &mut out);
    }
    assert_eq!(store.evictions(), 0);
    assert_eq!(store.len(), 10);
}

#[test]
fn a_counter_in_use_survives_a_flood_of_new_keys() {
    let store = MemoryStore::new(1_000);
    let limit = limit(Algorithm::FixedWindow, 1_000_000);
    apply(&store, &[check("hot", limit, 1, 0)]);
    for n in 0..100_000 {
        apply(&store, &[check(&format!("flood-{n}"), limit, 1, 0)]);
        if n % 100 == 0 {
            apply(&store, &[check("hot", limit, 1, 0)]);
        }
    }
    assert_eq!(used(&store, "hot", limit), 1_001);
    assert!(store.len() <= 1_000, "{}", store.len());
    assert!(store.evictions() >= 99_000, "{}", store.evictions());
}

#[test]
fn large_stores_are_sharded_and_bounded_in_total() {
    let store = MemoryStore::new(1_000_000);
    assert_eq!(store.shards.len(), MAX_SHARDS);
    let limit = limit(Algorithm::FixedWindow, 10);
    let small = MemoryStore::new(3 * MIN_SHARD_SLOTS);
    assert_eq!(small.shards.len(), 2);
    let total = 3 * MIN_SHARD_SLOTS as usize;
    for n in 0..2 * total {
        apply(&small, &[check(&format!("k{n}"), limit, 1, 0)]);
    }
    assert!(small.len() <= 3 * MIN_SHARD_SLOTS, "{}", small.len());
    assert!(small.len() > 2 * MIN_SHARD_SLOTS, "{}", small.len());
    drop(store);
}

#[tokio::test]
async fn apply_through_the_trait_clears_out() {
    let store = MemoryStore::new(10);
    let mut out = smallvec::smallvec![Outcome {
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
