//! Fixed windows' leases: what an instance holds of a window's quota,
//! adding a claim's grant to it, and a check's outcome from it. How blocks
//! are sized and why they never admit more than the limit: the parent
//! module's doc (`mod.rs`).

use std::time::{Duration, Instant};

use super::{Leases, MAX_LEASES, SHARDS, evict};
use crate::limit::{Limit, Nanos, Outcome};
use crate::store::Check;

/// What one instance holds of one counter's window.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lease {
    /// The window's start (Redis's Unix seconds): which window this is.
    pub(super) window: u64,
    /// When the window ends, on this instance's monotonic clock (early by
    /// the claim's round trip, never late).
    pub(super) until: Instant,
    /// Hits this instance may still admit.
    pub(super) held: u64,
    /// The fleet's claimed count at the last claim.
    pub(super) claimed: u64,
    /// The last claim found the window's quota all claimed: deny until
    /// `until` without asking Redis.
    pub(super) exhausted: bool,
}

/// Adds a fixed window's granted block (`granted`: the script's 4 values)
/// to its lease.
pub(super) fn record_window(
    leases: &Leases,
    key: &[u8],
    limit: &Limit,
    granted: &[u64],
    start: Instant,
) {
    let (grant, claimed, left_us, window) = (granted[0], granted[1], granted[2], granted[3]);
    let until = start + Duration::from_micros(left_us);
    let mut shard = leases.shard(key).lock();
    if shard.len() >= MAX_LEASES / SHARDS {
        evict(&mut shard, start);
    }
    let fresh = Lease {
        window,
        until,
        held: 0,
        claimed: 0,
        exhausted: false,
    };
    let lease = shard.entry_ref(key).or_insert(fresh);
    if lease.window != window {
        // What a lease of another window held is gone with it.
        *lease = fresh;
    }
    // Each claim times the window's end from before it was sent; the
    // earliest estimate is the safe one.
    lease.until = lease.until.min(until);
    lease.held = lease.held.saturating_add(grant);
    lease.claimed = claimed;
    lease.exhausted = grant == 0 && claimed >= limit.requests_per_unit;
}

/// A fixed window check's outcome, from its lease.
pub(super) fn window_outcome(
    leases: &Leases,
    check: &Check<'_>,
    admitted: bool,
    now: Instant,
) -> Outcome {
    let lease = leases.held(check.key, now);
    let limit = check.limit.requests_per_unit;
    let reset_after = lease.map_or(check.limit.window(), |lease| {
        nanos(lease.until.saturating_duration_since(now))
    });
    // What the fleet may still admit, as far as this instance knows: its
    // own block and the quota nobody has claimed (all of it, for a key this
    // instance has not claimed in this window).
    let remaining = lease.map_or(limit, |lease| {
        lease
            .held
            .saturating_add(limit.saturating_sub(lease.claimed))
            .min(limit)
    });
    Outcome {
        admitted,
        remaining: if admitted { remaining } else { 0 },
        reset_after,
        used: limit.saturating_sub(remaining),
    }
}

fn nanos(duration: Duration) -> Nanos {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
