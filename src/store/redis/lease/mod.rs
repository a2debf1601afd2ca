//! Leased mode (`--store-mode leased`): an instance claims a block of a
//! fixed window's quota, or of a token bucket's tokens, from Redis in one
//! atomic step (`lease.lua`) and admits from its block locally, without a
//! round trip per request.
//!
//! The promise: **never more than the limit fleet-wide.**
//!
//! # Fixed windows
//!
//! Every hit admitted anywhere was first claimed, and a claim never takes
//! more than the quota left unclaimed in Redis. A block is the unclaimed
//! quota divided by [`LEASE_DIVISOR`] (at least what the request needs), so
//! blocks shrink as the window fills and near the limit every claim is
//! exactly the hits of a request: leased mode degrades to exact counting. A
//! block is used only while Redis's window lasts, timed on this instance's
//! monotonic clock from before the claim was sent, so a block never
//! outlives its window; what is left of it then is lost with the window.
//!
//! The cost: quota claimed by an instance that then receives no more
//! requests for that key stays unused until the window ends. At most one
//! block per instance and key is left so, and each block is at most
//! 1/[`LEASE_DIVISOR`] of the quota unclaimed when it was taken; while
//! demand above the limit reaches every instance, the blocks are used up and
//! the fleet admits exactly the limit.
//!
//! # Token buckets
//!
//! A bucket of capacity `B` refilled at rate `r` promises that over *any*
//! interval of length `L` at most `B + r·L` hits are admitted. Claiming
//! tokens from a central bucket and spending them later is not enough: while
//! an instance holds `k` tokens the central bucket refills to `B` again, and
//! the fleet admits `B + k + r·L`. So Redis keeps, per bucket, the central
//! level and the **outstanding leases**: per instance (a random id drawn
//! when the store is created), the tokens its last claim granted and when
//! that lease expires on Redis's clock. With `O` their sum:
//!
//! - the central level refills at `r` but never above `B − O` (computed
//!   lazily at each claim, stepping from one lease expiry to the next, so it
//!   is exactly the continuous process's level);
//! - a claim (one script call) first retires the instance's previous lease:
//!   the instance reports how many of its tokens it did not spend, those go
//!   back to the central level, and the lease leaves `O` (its spent tokens
//!   with it). Then it grants `max(need, ⌈level / 16⌉)` (capped by the
//!   instance's recent demand, and by the level; nothing if that is less
//!   than `need`), takes it from the level and records it as the instance's
//!   new lease, expiring one TTL after Redis's now;
//! - a lease past its expiry leaves `O` and its tokens count as **spent**;
//! - the instance stops using a lease one TTL after the instant *before* it
//!   sent the claim, on its monotonic clock, so never after Redis dropped it.
//!
//! Proof sketch. Let `V` be the central level plus the tokens instances hold
//! unspent and may still spend. Unspent tokens are part of their lease, so
//! they are at most `O`, and the central level is at most `B − O`: `V ≤ B`;
//! and `V ≥ 0`. Refill raises `V` at rate at most `r`; a report moves tokens
//! from an instance to the central level (`V` unchanged; the level stays
//! under the cap since the lease's whole grant leaves `O`); a grant moves
//! them back (unchanged); an expiry only drops tokens (`V` falls or stays);
//! every admission lowers `V` by one. So the hits admitted in `[t0, t1]` are
//! at most `V(t0) + r·(t1 − t0) ≤ B + r·L`: the bucket's own bound. (The
//! lazy refill is computed before the claim's report, with the leases that
//! stood during the elapsed time, so it is never more than the continuous
//! refill: refilling into room freed by the report, as if the reported
//! tokens had been spent long ago, could exceed the bound.)
//!
//! Claims of one instance for one bucket are one at a time (a gate per key),
//! and numbered: Redis ignores a claim older than the lease it holds for the
//! instance, answers a retried claim with the grant it already made, and a
//! report names the lease it is about, so a report is never counted twice
//! and a lease this instance never received (its answer lost) is counted as
//! spent when the next claim replaces it.
//!
//! The lease TTL is the time the bucket takes to refill its whole burst,
//! clamped to [`BUCKET_TTL_MIN`]..=[`BUCKET_TTL_MAX`]: long enough to spare
//! most round trips (a busy instance claims again when its block runs out
//! anyway), short enough that what a lease can hold back (below) comes back
//! about as fast as the bucket refills, and within a second at most.
//!
//! What it can leave unused (never more than these):
//! - tokens of a lease whose instance crashed, went idle, or got no request
//!   before the lease expired: lost to the fleet (counted as spent), at most
//!   one block per instance and key per TTL. The block size follows the
//!   instance's demand (when its last lease ran out, what it would spend at
//!   that pace in a whole TTL; when it expired, what it spent), so an
//!   instance seeing a request a minute, or a steady trickle, loses little;
//! - tokens spent but not yet reported keep their room in `O`: they hold
//!   the central level below `B` only while it is at its cap (the bucket
//!   nearly full, nobody claiming), until the instance's next claim or the
//!   lease's TTL: a bucket that should be full may be short of up to the
//!   leases' tokens, once;
//! - a local denial: an instance that knows the central level (from its last
//!   claim, plus the refill since) cannot cover a request denies it without
//!   asking; tokens another instance gave back since are not seen until the
//!   next claim.
//!
//! Like fixed windows' blocks, leases rely on Redis's clock: a jump forward
//! of Redis's `TIME` ends leases early in Redis's eyes while instances still
//! spend them, which can admit up to the tokens then held, once. So does
//! Redis losing the state (a flush, a failover without replication): the
//! bucket starts full again while instances still hold leases.
//!
//! With one instance the decisions are the memory store's for a bucket that
//! does not refill (the instance reports at every claim, so it admits iff
//! central level plus held tokens cover the hits); with refill it may admit
//! less, by up to its last block when the bucket is full. When demand above
//! the rate reaches every instance, each instance claims again as soon as
//! its block runs out (reporting it spent), so no lease expires unspent and
//! the level stays below its cap after the first claims: over `[t0, t1]`
//! from a full bucket the fleet admits at least `B + r·L` less what is
//! held at `t1` (one block per instance; blocks are 1/16 of a level that
//! such demand keeps near 0) and less about `r` × one claim's round trip
//! per instance (tokens refilled while its last claims are in flight, and
//! while its first block is spent unreported).
//!
//! The bucket's leased state has its own encoding, under its own key (the
//! exact mode's key followed by `:lease`): exact and leased instances do not
//! share a bucket (during a rollout from one mode to the other a bucket may
//! admit up to twice its limit).
//!
//! # What stays exact
//!
//! A call is leased as a whole when every check is an epoch-aligned fixed
//! window or a token bucket; a call with a sliding window or a calendar
//! window is counted exactly, as in the default mode. Denied hits are not
//! counted in leased mode (reference-form limits count them in exact mode);
//! no decision depends on them.
//!
//! # Files
//!
//! This file holds what both kinds of lease share: the leases of a store and
//! their eviction, which calls are leased ([`leasable`]), and the claim
//! ([`RedisStore::apply_leased`], `plan`, `claim`, `give_back`).
//! `window.rs` holds what is specific to fixed windows (an instance's
//! [`Lease`] of a window, recording a grant, a check's outcome), `bucket.rs`
//! what is specific to token buckets ([`BucketLease`], the lease TTL, when
//! to claim, a check's outcome), `lease.lua` the claim script, `tests.rs`
//! the unit tests.

mod bucket;
mod window;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hashbrown::{DefaultHashBuilder, HashMap};
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::RedisStore;
use super::script::redis_key;
use crate::limit::{Algorithm, Limit, NANOS_PER_SECOND};
use crate::store::{Check, Outcomes, StoreError};
use bucket::{BucketLease, bucket_needs_claim, bucket_outcome, bucket_ttl, instance_id};
use window::{Lease, record_window, window_outcome};

/// A block is the window's unclaimed quota (a bucket's central level)
/// divided by this.
pub const LEASE_DIVISOR: u64 = 16;

/// The shortest lease of a bucket's tokens.
pub const BUCKET_TTL_MIN: Duration = Duration::from_millis(100);

/// The longest lease of a bucket's tokens.
pub const BUCKET_TTL_MAX: Duration = Duration::from_secs(1);

/// Most leases held; past it, expired ones are dropped, then the oldest.
const MAX_LEASES: usize = 100_000;

/// Lease shards (a lock each).
const SHARDS: usize = 16;

/// The claim script.
const SCRIPT: &str = include_str!("lease.lua");

/// One shard of leases, by counter key.
type Shard = HashMap<Box<[u8]>, Lease>;

/// One shard of bucket leases, by counter key.
type BucketShard = HashMap<Box<[u8]>, BucketLease>;

/// The leases of one store.
pub(super) struct Leases {
    shards: Box<[Mutex<Shard>]>,
    buckets: Box<[Mutex<BucketShard>]>,
    hasher: DefaultHashBuilder,
    script: ::redis::Script,
    /// This instance's id in the buckets' lease tables (16 hex digits).
    instance: String,
    /// The last claim number used (claims are numbered from 1).
    seq: AtomicU64,
}

impl Leases {
    pub(super) fn new() -> Leases {
        Leases {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            buckets: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: DefaultHashBuilder::default(),
            script: ::redis::Script::new(SCRIPT),
            instance: format!("{:016x}", instance_id()),
            seq: AtomicU64::new(0),
        }
    }

    fn index(&self, key: &[u8]) -> usize {
        usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0)
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[self.index(key)]
    }

    fn bucket_shard(&self, key: &[u8]) -> &Mutex<BucketShard> {
        &self.buckets[self.index(key)]
    }

    /// The hits `key` can admit locally now.
    fn held(&self, key: &[u8], at: Instant) -> Option<Lease> {
        self.shard(key)
            .lock()
            .get(key)
            .copied()
            .filter(|lease| lease.until > at)
    }

    /// The gate of `key`'s bucket lease (made if new).
    fn gate(&self, key: &[u8], now: Instant) -> Arc<tokio::sync::Mutex<()>> {
        let mut shard = self.bucket_shard(key).lock();
        if shard.len() >= MAX_LEASES / SHARDS && !shard.contains_key(key) {
            evict_buckets(&mut shard, now);
        }
        Arc::clone(
            &shard
                .entry_ref(key)
                .or_insert_with(|| BucketLease::new(now))
                .gate,
        )
    }
}

/// Whether a call is leased: every check an epoch-aligned fixed window (a
/// calendar window's boundaries are the caller's to compute: exact) or a
/// token bucket.
pub(super) fn leasable(checks: &[Check<'_>]) -> bool {
    checks.iter().all(|check| match check.limit.algorithm {
        Algorithm::FixedWindow => check.limit.calendar.is_none(),
        Algorithm::TokenBucket => true,
        Algorithm::SlidingWindow => false,
    })
}

fn is_bucket(limit: &Limit) -> bool {
    limit.algorithm == Algorithm::TokenBucket
}

/// One key's part of a claim call.
enum Claim {
    /// A fixed window: the hits the lease is short of.
    Fixed { index: usize, short: u64 },
    /// A token bucket.
    Bucket {
        index: usize,
        /// This claim's number.
        seq: u64,
        /// The lease reported on, and its unspent tokens (given back).
        retire: u64,
        unspent: u64,
        /// The most to grant (this instance's recent demand).
        want: u64,
    },
}

impl Claim {
    fn index(&self) -> usize {
        match *self {
            Claim::Fixed { index, .. } | Claim::Bucket { index, .. } => index,
        }
    }
}

/// The hits each distinct key of a call needs, in check order: the key,
/// the hits, the first check of the key.
type Needs<'k> = SmallVec<[(&'k [u8], u64, usize); 4]>;

/// Hits taken from leases by the admitted checks so far: the key, the
/// hits, the group, and for a bucket the lease's claim number.
type Taken<'k> = SmallVec<[(&'k [u8], u64, u32, Option<u64>); 4]>;

impl RedisStore {
    /// [`crate::store::CounterStore::apply`] in leased mode, for calls of
    /// fixed windows and token buckets only ([`leasable`]).
    pub(super) async fn apply_leased(
        &self,
        leases: &Arc<Leases>,
        checks: &[Check<'_>],
        out: &mut Outcomes,
    ) -> Result<(), StoreError> {
        let mut needs: Needs<'_> = SmallVec::new();
        for (i, check) in checks.iter().enumerate() {
            match needs.iter_mut().find(|(key, _, _)| *key == check.key) {
                Some((_, hits, _)) => *hits = hits.saturating_add(check.hits),
                None => needs.push((check.key, check.hits, i)),
            }
        }

        // The gates of the buckets this call claims from, taken in key
        // order (no two calls wait on each other in a cycle). When a bucket
        // turns out to need a claim without its gate, the gates are given
        // up and taken again with it.
        let mut gated: SmallVec<[usize; 4]> = SmallVec::new();
        let mut gates: SmallVec<[tokio::sync::OwnedMutexGuard<()>; 4]> = SmallVec::new();
        let (start, claims) = loop {
            // Taken before any claim is sent: a lease's end is measured
            // from here, so it ends no later than Redis's.
            let start = Instant::now();
            let ungated: SmallVec<[usize; 4]> = needs
                .iter()
                .enumerate()
                .filter(|&(index, &(key, hits, first))| {
                    let limit = &checks[first].limit;
                    is_bucket(limit)
                        && !gated.contains(&index)
                        && bucket_needs_claim(
                            leases.bucket_shard(key).lock().get(key),
                            limit,
                            hits,
                            start,
                        )
                })
                .map(|(index, _)| index)
                .collect();
            if ungated.is_empty() {
                break (start, plan(leases, checks, &needs, &gated, start));
            }
            gates.clear();
            gated.extend(ungated);
            gated.sort_unstable_by_key(|&index| needs[index].0);
            for &index in &gated {
                let gate = leases.gate(needs[index].0, start);
                gates.push(gate.lock_owned().await);
            }
        };
        if !claims.is_empty() {
            self.claim(leases, checks, &needs, &claims, start).await?;
        }
        drop(gates);

        // Take each admitted check's hits from its lease, in order; a check
        // its lease cannot cover denies its group, which gives back what
        // its earlier checks took (groups are all-or-nothing).
        let now = Instant::now();
        let mut denied: SmallVec<[u32; 4]> = SmallVec::new();
        let mut taken: Taken<'_> = SmallVec::new();
        for check in checks {
            if check.hits == 0 || denied.contains(&check.group) {
                continue;
            }
            let took = if is_bucket(&check.limit) {
                let mut shard = leases.bucket_shard(check.key).lock();
                match shard.get_mut(check.key) {
                    Some(lease) if lease.held_at(now) >= check.hits => {
                        lease.held -= check.hits;
                        Some(Some(lease.seq))
                    }
                    _ => None,
                }
            } else {
                let mut shard = leases.shard(check.key).lock();
                match shard.get_mut(check.key).filter(|lease| lease.until > now) {
                    Some(lease) if lease.held >= check.hits => {
                        lease.held -= check.hits;
                        Some(None)
                    }
                    _ => None,
                }
            };
            match took {
                Some(seq) => taken.push((check.key, check.hits, check.group, seq)),
                None => {
                    denied.push(check.group);
                    give_back(leases, &mut taken, check.group);
                }
            }
        }

        out.clear();
        for check in checks {
            let admitted = !denied.contains(&check.group);
            out.push(if is_bucket(&check.limit) {
                bucket_outcome(leases, check, admitted, now)
            } else {
                window_outcome(leases, check, admitted, now)
            });
        }
        Ok(())
    }

    /// One claim call for `claims` (one in a cluster, per key): the granted
    /// blocks are added to the leases.
    async fn claim(
        &self,
        leases: &Arc<Leases>,
        checks: &[Check<'_>],
        needs: &[(&[u8], u64, usize)],
        claims: &[Claim],
        start: Instant,
    ) -> Result<(), StoreError> {
        // In a cluster a call's keys must share a slot: one call per key
        // there (a descriptor's keys share a tag, but a request's do not).
        let per_call = if self.is_cluster() { 1 } else { claims.len() };
        for part in claims.chunks(per_call.max(1)) {
            let mut invocation = leases.script.prepare_invoke();
            for claim in part {
                let (key, hits, first) = needs[claim.index()];
                let limit = &checks[first].limit;
                let window = limit.window() / NANOS_PER_SECOND;
                match *claim {
                    Claim::Fixed { short, .. } => {
                        invocation
                            .key(redis_key(&self.prefix, key))
                            .arg("f")
                            .arg(window)
                            .arg(limit.requests_per_unit)
                            .arg(short)
                            .arg(LEASE_DIVISOR);
                    }
                    Claim::Bucket {
                        seq,
                        retire,
                        unspent,
                        want,
                        ..
                    } => {
                        let mut redis = redis_key(&self.prefix, key);
                        redis.extend_from_slice(b":lease");
                        let ttl = u64::try_from(bucket_ttl(limit).as_micros()).unwrap_or(u64::MAX);
                        invocation
                            .key(redis)
                            .arg("b")
                            .arg(leases.instance.as_str())
                            .arg(seq)
                            .arg(retire)
                            .arg(unspent)
                            .arg(hits)
                            .arg(want)
                            .arg(limit.burst)
                            .arg(limit.requests_per_unit)
                            .arg(window)
                            .arg(ttl)
                            .arg(LEASE_DIVISOR);
                    }
                }
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
            for (claim, granted) in part.iter().zip(values.chunks(4)) {
                let (key, _, first) = needs[claim.index()];
                let limit = &checks[first].limit;
                match *claim {
                    Claim::Fixed { .. } => {
                        record_window(leases, key, limit, granted, start);
                    }
                    Claim::Bucket { seq, .. } => {
                        let mut shard = leases.bucket_shard(key).lock();
                        let lease = shard
                            .entry_ref(key)
                            .or_insert_with(|| BucketLease::new(start));
                        // Claims of a key are one at a time (the gate), so
                        // this is the newest; the check costs nothing.
                        if lease.seq < seq {
                            lease.seq = seq;
                            lease.granted = granted[0];
                            lease.held = granted[0];
                            lease.until = start + bucket_ttl(limit);
                            lease.level = granted[1];
                            lease.at = start;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The claims of a call, once the gates of the buckets to claim from are
/// held (`gated`): a bucket's claim reports on its lease and takes its
/// unspent tokens from it (they go back to Redis with the claim).
fn plan(
    leases: &Leases,
    checks: &[Check<'_>],
    needs: &[(&[u8], u64, usize)],
    gated: &[usize],
    start: Instant,
) -> SmallVec<[Claim; 4]> {
    let mut claims = SmallVec::new();
    for (index, &(key, hits, first)) in needs.iter().enumerate() {
        let limit = &checks[first].limit;
        if is_bucket(limit) {
            if !gated.contains(&index) {
                continue;
            }
            let mut shard = leases.bucket_shard(key).lock();
            let Some(lease) = shard.get_mut(key) else {
                continue;
            };
            if !bucket_needs_claim(Some(&*lease), limit, hits, start) {
                continue;
            }
            let valid = lease.until > start;
            let want = if lease.seq == 0 {
                u64::MAX
            } else if valid {
                // Ran out (or short) early: what this pace spends in a
                // whole lease.
                let elapsed = start.saturating_duration_since(lease.at).as_nanos().max(1);
                let ttl = bucket_ttl(limit).as_nanos();
                u64::try_from((u128::from(lease.granted) * ttl).div_ceil(elapsed))
                    .unwrap_or(u64::MAX)
            } else {
                // Expired: what it used in a whole lease is enough.
                lease.granted.saturating_sub(lease.held)
            };
            let unspent = lease.held_at(start);
            lease.held = 0;
            claims.push(Claim::Bucket {
                index,
                seq: leases.seq.fetch_add(1, Ordering::Relaxed) + 1,
                retire: lease.seq,
                unspent,
                want,
            });
        } else {
            // Claim for every key whose lease cannot cover its hits and
            // whose window is not known to be all claimed.
            let lease = leases.held(key, start);
            let held = lease.map_or(0, |lease| lease.held);
            let exhausted = lease.is_some_and(|lease| lease.exhausted);
            if hits > held && !exhausted {
                claims.push(Claim::Fixed {
                    index,
                    short: hits - held,
                });
            }
        }
    }
    claims
}

/// Returns to their leases the hits `taken` by checks of `group` (to a
/// bucket's lease only if it is still the one they were taken from).
fn give_back(leases: &Leases, taken: &mut Taken<'_>, group: u32) {
    taken.retain(|(key, hits, of, seq)| {
        if *of != group {
            return true;
        }
        match seq {
            Some(seq) => {
                if let Some(lease) = leases.bucket_shard(key).lock().get_mut(*key)
                    && lease.seq == *seq
                {
                    lease.held = lease.held.saturating_add(*hits);
                }
            }
            None => {
                if let Some(lease) = leases.shard(key).lock().get_mut(*key) {
                    lease.held = lease.held.saturating_add(*hits);
                }
            }
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

/// Makes room in a full shard of bucket leases: expired ones first, else
/// any half; never one whose gate is held (a claim in flight would then
/// race a second one).
fn evict_buckets(shard: &mut BucketShard, now: Instant) {
    let busy = |lease: &BucketLease| Arc::strong_count(&lease.gate) > 1;
    shard.retain(|_, lease| lease.until > now || busy(lease));
    if shard.len() >= MAX_LEASES / SHARDS {
        let mut drop = shard.len() / 2;
        shard.retain(|_, lease| {
            if drop > 0 && !busy(lease) {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests;
