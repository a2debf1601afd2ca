//! Token buckets' leases: what an instance holds of a bucket, the lease
//! TTL, when a check needs a claim, and a check's outcome. The claim
//! protocol and the proof that the fleet never admits more than the bucket:
//! the parent module's doc (`mod.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{BUCKET_TTL_MAX, BUCKET_TTL_MIN, Leases};
use crate::limit::{Limit, Nanos, Outcome};
use crate::store::Check;

/// What one instance holds of one token bucket.
#[derive(Debug)]
pub(super) struct BucketLease {
    /// The number of the claim that granted the lease (0: never claimed).
    pub(super) seq: u64,
    /// Tokens that claim granted.
    pub(super) granted: u64,
    /// Tokens of it this instance may still admit.
    pub(super) held: u64,
    /// When Redis drops the lease, on this instance's monotonic clock (early
    /// by the claim's round trip, never late).
    pub(super) until: Instant,
    /// The central level after that claim (rounded down)...
    pub(super) level: u64,
    /// ...as of this instant (before the claim was sent).
    pub(super) at: Instant,
    /// Held while a claim for this key is prepared and in flight: one claim
    /// at a time per instance and key.
    pub(super) gate: Arc<tokio::sync::Mutex<()>>,
}

impl BucketLease {
    pub(super) fn new(now: Instant) -> BucketLease {
        BucketLease {
            seq: 0,
            granted: 0,
            held: 0,
            until: now,
            level: 0,
            at: now,
            gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Tokens this instance may admit at `now`.
    pub(super) fn held_at(&self, now: Instant) -> u64 {
        if self.until > now { self.held } else { 0 }
    }

    /// The central level at `now` as far as this instance knows: the level
    /// its last claim left, refilled since (other instances may have taken
    /// or given back tokens meanwhile). `None` before the first claim.
    pub(super) fn central(&self, limit: &Limit, now: Instant) -> Option<u64> {
        (self.seq != 0).then(|| {
            let elapsed = now.saturating_duration_since(self.at).as_nanos();
            let refill =
                elapsed.saturating_mul(u128::from(limit.requests_per_unit)) / window_of(limit);
            u64::try_from(u128::from(self.level).saturating_add(refill))
                .unwrap_or(u64::MAX)
                .min(limit.burst)
        })
    }
}

/// A random id for this store's leases, different for every store (and
/// process) with overwhelming probability.
pub(super) fn instance_id() -> u64 {
    use std::hash::{BuildHasher as _, RandomState};
    static STORES: AtomicU64 = AtomicU64::new(0);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    RandomState::new().hash_one((
        wall,
        std::process::id(),
        STORES.fetch_add(1, Ordering::Relaxed),
    ))
}

/// The bucket's window in nanoseconds, at least 1.
fn window_of(limit: &Limit) -> u128 {
    u128::from(limit.window().max(1))
}

/// Nanoseconds for `tokens` to refill (`rpu > 0`).
fn refill_time(limit: &Limit, tokens: u64) -> Nanos {
    let rate = u128::from(limit.requests_per_unit.max(1));
    let scaled = u128::from(tokens) * window_of(limit);
    u64::try_from(scaled.div_ceil(rate)).unwrap_or(u64::MAX)
}

/// How long a bucket's lease lasts: the time to refill the whole burst,
/// within [`BUCKET_TTL_MIN`]..=[`BUCKET_TTL_MAX`].
pub(super) fn bucket_ttl(limit: &Limit) -> Duration {
    Duration::from_nanos(refill_time(limit, limit.burst)).clamp(BUCKET_TTL_MIN, BUCKET_TTL_MAX)
}

/// Whether a bucket check of `hits` (the call's hits for its key) needs a
/// claim: its lease cannot cover them, and the fleet may still.
pub(super) fn bucket_needs_claim(
    lease: Option<&BucketLease>,
    limit: &Limit,
    hits: u64,
    now: Instant,
) -> bool {
    if hits == 0 || hits > limit.burst || limit.requests_per_unit == 0 {
        // Nothing to take, or it can never fit.
        return false;
    }
    let Some(lease) = lease else { return true };
    let held = lease.held_at(now);
    held < hits
        && lease
            .central(limit, now)
            .is_none_or(|central| held.saturating_add(central) >= hits)
}

/// A token bucket check's outcome, as far as this instance knows: its
/// held tokens plus the central level (a full bucket before its first
/// claim).
pub(super) fn bucket_outcome(
    leases: &Leases,
    check: &Check<'_>,
    admitted: bool,
    now: Instant,
) -> Outcome {
    let limit = &check.limit;
    if limit.requests_per_unit == 0 || limit.burst == 0 {
        return Outcome {
            admitted: check.hits == 0 && admitted,
            remaining: 0,
            reset_after: if check.hits == 0 { 0 } else { limit.window() },
            used: check.hits,
        };
    }
    let available =
        leases
            .bucket_shard(check.key)
            .lock()
            .get(check.key)
            .map_or(limit.burst, |lease| {
                lease
                    .held_at(now)
                    .saturating_add(lease.central(limit, now).unwrap_or(limit.burst))
                    .min(limit.burst)
            });
    let taken = limit.burst - available;
    if admitted {
        Outcome {
            admitted,
            remaining: available,
            reset_after: refill_time(limit, taken),
            used: taken,
        }
    } else {
        let reset_after = if check.hits > limit.burst {
            refill_time(limit, taken).max(limit.window())
        } else {
            refill_time(limit, check.hits.saturating_sub(available))
        };
        Outcome {
            admitted,
            remaining: 0,
            reset_after,
            used: check.hits.saturating_add(taken),
        }
    }
}
