//! Leased mode (`--store-mode leased`): an instance claims a block of a
//! fixed window's quota from Redis in one atomic step (`lease.lua`) and
//! admits from its block locally, without a round trip per request.
//!
//! The promise: **never more than the limit fleet-wide.** Every hit admitted
//! anywhere was first claimed, and a claim never takes more than the quota
//! left unclaimed in Redis. A block is the unclaimed quota divided by
//! [`LEASE_DIVISOR`] (at least what the request needs), so blocks shrink as
//! the window fills and near the limit every claim is exactly the hits of a
//! request: leased mode degrades to exact counting. A block is used only
//! while Redis's window lasts, timed on this instance's monotonic clock from
//! before the claim was sent, so a block never outlives its window; what is
//! left of it then is lost with the window.
//!
//! The cost: quota claimed by an instance that then receives no more
//! requests for that key stays unused until the window ends. At most one
//! block per instance and key is left so, and each block is at most
//! 1/[`LEASE_DIVISOR`] of the quota unclaimed when it was taken; while
//! demand above the limit reaches every instance, the blocks are used up and
//! the fleet admits exactly the limit.
//!
//! Only epoch-aligned fixed windows are leased: a call with a sliding
//! window, a token bucket or a calendar window is counted exactly, as in the
//! default mode. Denied hits are not
//! counted in leased mode (reference-form limits count them in exact mode);
//! no decision depends on them.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::{DefaultHashBuilder, HashMap};
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::RedisStore;
use super::script::redis_key;
use crate::limit::{Algorithm, NANOS_PER_SECOND, Nanos, Outcome};
use crate::store::{Check, Outcomes, StoreError};

/// A block is the window's unclaimed quota divided by this.
pub const LEASE_DIVISOR: u64 = 16;

/// Most leases held; past it, expired ones are dropped, then the oldest.
const MAX_LEASES: usize = 100_000;

/// Lease shards (a lock each).
const SHARDS: usize = 16;

/// The claim script.
const SCRIPT: &str = include_str!("lease.lua");

/// What one instance holds of one counter's window.
#[derive(Clone, Copy, Debug)]
struct Lease {
    /// The window's start (Redis's Unix seconds): which window this is.
    window: u64,
    /// When the window ends, on this instance's monotonic clock (early by
    /// the claim's round trip, never late).
    until: Instant,
    /// Hits this instance may still admit.
    held: u64,
    /// The fleet's claimed count at the last claim.
    claimed: u64,
    /// The last claim found the window's quota all claimed: deny until
    /// `until` without asking Redis.
    exhausted: bool,
}

/// One shard of leases, by counter key.
type Shard = HashMap<Box<[u8]>, Lease>;

/// The leases of one store.
pub(super) struct Leases {
    shards: Box<[Mutex<Shard>]>,
    hasher: DefaultHashBuilder,
    script: ::redis::Script,
}

impl Leases {
    pub(super) fn new() -> Leases {
        Leases {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: DefaultHashBuilder::default(),
            script: ::redis::Script::new(SCRIPT),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// The hits `key` can admit locally now.
    fn held(&self, key: &[u8], at: Instant) -> Option<Lease> {
        self.shard(key)
            .lock()
            .get(key)
            .copied()
            .filter(|lease| lease.until > at)
    }
}

/// Whether a call is leased: every check an epoch-aligned fixed window (a
/// calendar window's boundaries are the caller's to compute: exact).
pub(super) fn leasable(checks: &[Check<'_>]) -> bool {
    checks.iter().all(|check| {
        check.limit.algorithm == Algorithm::FixedWindow && check.limit.calendar.is_none()
    })
}

impl RedisStore {
    /// [`crate::store::CounterStore::apply`] in leased mode, for calls of
    /// fixed windows only ([`leasable`]).
    pub(super) async fn apply_leased(
        &self,
        leases: &Arc<Leases>,
        checks: &[Check<'_>],
        out: &mut Outcomes,
    ) -> Result<(), StoreError> {
        // Taken before any claim is sent: a lease's end is measured from
        // here, so it ends no later than Redis's window.
        let start = Instant::now();
        // Hits each distinct key needs, in check order.
        let mut needs: SmallVec<[(&[u8], u64, usize); 4]> = SmallVec::new();
        for (i, check) in checks.iter().enumerate() {
            match needs.iter_mut().find(|(key, _, _)| *key == check.key) {
                Some((_, hits, _)) => *hits = hits.saturating_add(check.hits),
                None => needs.push((check.key, check.hits, i)),
            }
        }
        // Claim for every key whose lease cannot cover its hits and whose
        // window is not known to be all claimed.
        let mut claims: SmallVec<[(usize, u64); 4]> = SmallVec::new();
        for (index, &(key, hits, _)) in needs.iter().enumerate() {
            let lease = leases.held(key, start);
            let held = lease.map_or(0, |lease| lease.held);
            let exhausted = lease.is_some_and(|lease| lease.exhausted);
            if hits > held && !exhausted {
                claims.push((index, hits - held));
            }
        }
        if !claims.is_empty() {
            self.claim(leases, checks, &needs, &claims, start).await?;
        }

        // Take each admitted check's hits from its lease, in order; a check
        // its lease cannot cover denies its group, which gives back what
        // its earlier checks took (groups are all-or-nothing).
        let now = Instant::now();
        let mut denied: SmallVec<[u32; 4]> = SmallVec::new();
        let mut taken: SmallVec<[(&[u8], u64, u32); 4]> = SmallVec::new();
        for check in checks {
            if check.hits == 0 || denied.contains(&check.group) {
                continue;
            }
            let mut shard = leases.shard(check.key).lock();
            match shard.get_mut(check.key).filter(|lease| lease.until > now) {
                Some(lease) if lease.held >= check.hits => {
                    lease.held -= check.hits;
                    taken.push((check.key, check.hits, check.group));
                }
                _ => {
                    drop(shard);
                    denied.push(check.group);
                    give_back(leases, &mut taken, check.group);
                }
            }
        }

        out.clear();
        for check in checks {
            let lease = leases.held(check.key, now);
            let limit = check.limit.requests_per_unit;
            let reset_after = lease.map_or(check.limit.window(), |lease| {
                nanos(lease.until.saturating_duration_since(now))
            });
            let admitted = !denied.contains(&check.group);
            // What the fleet may still admit, as far as this instance
            // knows: its own block and the quota nobody has claimed (all of
            // it, for a key this instance has not claimed in this window).
            let remaining = lease.map_or(limit, |lease| {
                lease
                    .held
                    .saturating_add(limit.saturating_sub(lease.claimed))
                    .min(limit)
            });
            out.push(Outcome {
                admitted,
                remaining: if admitted { remaining } else { 0 },
                reset_after,
                used: limit.saturating_sub(remaining),
            });
        }
        Ok(())
    }

    /// One claim call for the keys in `claims` (index into `needs`, hits
    /// short): the granted blocks are added to the leases.
    async fn claim(
        &self,
        leases: &Arc<Leases>,
        checks: &[Check<'_>],
        needs: &[(&[u8], u64, usize)],
        claims: &[(usize, u64)],
        start: Instant,
    ) -> Result<(), StoreError> {
        // In a cluster a call's keys must share a slot: one call per key
        // there (a descriptor's keys share a tag, but a request's do not).
        let per_call = if self.is_cluster() { 1 } else { claims.len() };
        for part in claims.chunks(per_call.max(1)) {
            let mut invocation = leases.script.prepare_invoke();
            for &(index, short) in part {
                let (key, _, first) = needs[index];
                let limit = &checks[first].limit;
                invocation
                    .key(redis_key(&self.prefix, key))
                    .arg(limit.window() / NANOS_PER_SECOND)
                    .arg(limit.requests_per_unit)
                    .arg(short)
                    .arg(LEASE_DIVISOR);
            }
            let result = self.invoke(&invocation).await;
            self.report(result.is_ok());
            let answer = result?;
            let values: Vec<u64> = std::str::from_utf8(&answer)
                .ok()
                .map(|text| {
                    text.split(' ')
                        .filter_map(|value| value.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            if values.len() != part.len() * 4 {
                return Err(StoreError::Unavailable(format!(
                    "unexpected lease answer: {:?}",
                    String::from_utf8_lossy(&answer)
                )));
            }
            for (&(index, _), granted) in part.iter().zip(values.chunks(4)) {
                let (key, _, first) = needs[index];
                let limit = checks[first].limit.requests_per_unit;
                let (grant, claimed, left_us, window) =
                    (granted[0], granted[1], granted[2], granted[3]);
                let until = start + Duration::from_micros(left_us);
                let mut shard = leases.shard(key).lock();
                if shard.len() >= MAX_LEASES / SHARDS {
                    evict(&mut shard, start);
                }
                let lease = shard.entry_ref(key).or_insert(Lease {
                    window,
                    until,
                    held: 0,
                    claimed: 0,
                    exhausted: false,
                });
                if lease.window != window {
                    // What a lease of another window held is gone with it.
                    *lease = Lease {
                        window,
                        until,
                        held: 0,
                        claimed: 0,
                        exhausted: false,
                    };
                }
                // Each claim times the window's end from before it was sent;
                // the earliest estimate is the safe one.
                lease.until = lease.until.min(until);
                lease.held = lease.held.saturating_add(grant);
                lease.claimed = claimed;
                lease.exhausted = grant == 0 && claimed >= limit;
            }
        }
        Ok(())
    }
}

/// Returns to their leases the hits `taken` by checks of `group`.
fn give_back(leases: &Leases, taken: &mut SmallVec<[(&[u8], u64, u32); 4]>, group: u32) {
    taken.retain(|(key, hits, of)| {
        if *of != group {
            return true;
        }
        if let Some(lease) = leases.shard(key).lock().get_mut(*key) {
            lease.held = lease.held.saturating_add(*hits);
        }
        false
    });
}

/// Makes room in a full shard: expired leases first, else any half.
fn evict(shard: &mut Shard, now: Instant) {
    shard.retain(|_, lease| lease.until > now);
    if shard.len() >= MAX_LEASES / SHARDS {
        let mut drop = shard.len() / 2;
        shard.retain(|_, _| {
            if drop > 0 {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }
}

fn nanos(duration: Duration) -> Nanos {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
