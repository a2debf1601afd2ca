//! The local over-limit cache: a fixed window whose count is already above
//! its limit denies every request for its key until the window ends,
//! whatever other instances do, so such requests are answered without
//! Redis.

use std::time::{Duration, Instant};

use moka::Expiry;

use super::RedisStore;
use crate::limit::{Algorithm, Nanos, Outcome};
use crate::store::Check;

/// A key known to be over its limit until `until` (caller's clock).
#[derive(Clone, Copy, Debug)]
pub(super) struct OverLimit {
    pub(super) until: Nanos,
    pub(super) count: u64,
    /// Real time to keep the entry (bounds memory; correctness uses `until`).
    pub(super) keep: Duration,
}

pub(super) struct OverLimitExpiry;

impl Expiry<Box<[u8]>, OverLimit> for OverLimitExpiry {
    fn expire_after_create(
        &self,
        _: &Box<[u8]>,
        value: &OverLimit,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.keep)
    }

    fn expire_after_update(
        &self,
        _: &Box<[u8]>,
        value: &OverLimit,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep)
    }
}

impl RedisStore {
    /// The local answer for `check`, if the over-limit cache is certain.
    pub(super) fn cached(&self, check: &Check<'_>, now: Nanos) -> Option<Outcome> {
        let cache = self.over_limit.as_ref()?;
        if check.limit.algorithm != Algorithm::FixedWindow {
            return None;
        }
        let entry = cache.get(check.key)?;
        let used = entry.count.saturating_add(check.hits);
        (now < entry.until && used > check.limit.requests_per_unit).then_some(Outcome {
            admitted: false,
            remaining: 0,
            reset_after: entry.until - now,
            used,
        })
    }
}
