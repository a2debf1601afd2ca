//! Where counter state lives.
//!
//! A [`CounterStore`] applies a request's [`Check`]s atomically: it reads each
//! key's [`CounterState`](crate::limit::CounterState), evaluates the pure algorithm of [`crate::limit`],
//! and commits the new states by the all-or-nothing rule described on
//! [`CounterStore::apply`]. The memory store ([`memory::MemoryStore`], a
//! sharded hash table) is the default; the Redis store
//! ([`redis::RedisStore`]) implements the same contract with one Lua script,
//! for counters shared by a fleet.
//! [`AnyStore`] is whichever of the two the command line chose.

pub mod key;
pub mod memory;
pub mod redis;

use std::future::Future;

use smallvec::SmallVec;

use crate::limit::{Limit, Nanos, Outcome};

/// The outcomes of one [`CounterStore::apply`] call, one per check: inline
/// for requests of up to four checks, so that the common request allocates
/// nothing for them.
pub type Outcomes = SmallVec<[Outcome; 4]>;

/// One limit to check for one request descriptor.
///
/// The key is borrowed: the service builds every key of a request into one
/// buffer, and a store copies the bytes only when it keeps a new counter.
#[derive(Clone, Debug)]
pub struct Check<'k> {
    /// The counter's key: domain, descriptor entries and the limit's identity.
    pub key: &'k [u8],
    /// The limit to evaluate.
    pub limit: Limit,
    /// Hits to add; 0 checks without counting.
    pub hits: u64,
    /// Checks with the same group are all-or-nothing (see [`CounterStore::apply`]).
    pub group: u32,
    /// Count these hits when this check itself is denied, as the reference
    /// server does for its fixed-window limits. Only meaningful for
    /// [`crate::limit::Algorithm::FixedWindow`]; ignored for the others.
    pub count_when_denied: bool,
}

/// A store that could not answer (unreachable, timed out, ...).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("counter store timed out")]
    Timeout,
    /// The store is unreachable or answered with an error.
    #[error("counter store unavailable: {0}")]
    Unavailable(String),
    /// The store answered, but refused this call (a Redis key holding
    /// another type, for one): the store itself is reachable.
    #[error("counter store refused the call: {0}")]
    Rejected(String),
}

/// Counter storage shared by every request.
pub trait CounterStore: Send + Sync + 'static {
    /// Evaluates every check at `now` and commits hits, atomically with
    /// respect to concurrent calls touching the same keys.
    ///
    /// For each group (checks with equal `group`), the group is *admitted*
    /// when every check in it admits its hits. If admitted, every check's hits
    /// are committed. If not, a check's hits are committed only when that
    /// check itself was denied and has `count_when_denied` (a reference-form
    /// fixed window: the reference keeps counting an over-limit key, and with
    /// `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT` charges only the exceeding
    /// keys); every other key is left exactly as it was. Duplicate keys within
    /// one call are evaluated in order, each seeing the earlier checks' hits.
    ///
    /// `out` is cleared and receives one [`Outcome`] per check, in order.
    fn apply<'a>(
        &'a self,
        checks: &'a [Check<'a>],
        now: Nanos,
        out: &'a mut Outcomes,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Counters currently held (approximate for caches that evict lazily);
    /// 0 for a store that does not track them (see [`CounterStore::held`]).
    fn len(&self) -> u64;

    /// Counters currently held, or `None` when the store cannot tell at a
    /// cost worth paying (Redis: see [`redis::RedisStore`]). What metrics
    /// and the dashboard report, so that "not tracked" never reads as 0.
    fn held(&self) -> Option<u64> {
        Some(self.len())
    }

    /// Counters dropped to make room for others since the store started
    /// (each one may have forgotten hits); 0 for stores that never evict.
    fn evictions(&self) -> u64 {
        0
    }

    /// Whether no counters are held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Redis store, when counters are shared by a fleet: operators'
    /// overrides then live there too (`None`: they live in this process).
    fn fleet(&self) -> Option<&redis::RedisStore> {
        None
    }
}

/// The store chosen at startup: the server is generic over its store, and
/// this lets one binary serve with either.
#[derive(Debug)]
pub enum AnyStore {
    /// Counters in this process.
    Memory(memory::MemoryStore),
    /// Counters in Redis, shared by every instance using it.
    Redis(redis::RedisStore),
}

impl CounterStore for AnyStore {
    async fn apply<'a>(
        &'a self,
        checks: &'a [Check<'a>],
        now: Nanos,
        out: &'a mut Outcomes,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(store) => store.apply(checks, now, out).await,
            AnyStore::Redis(store) => store.apply(checks, now, out).await,
        }
    }

    fn len(&self) -> u64 {
        match self {
            AnyStore::Memory(store) => store.len(),
            AnyStore::Redis(store) => store.len(),
        }
    }

    fn held(&self) -> Option<u64> {
        match self {
            AnyStore::Memory(store) => store.held(),
            AnyStore::Redis(store) => store.held(),
        }
    }

    fn evictions(&self) -> u64 {
        match self {
            AnyStore::Memory(store) => CounterStore::evictions(store),
            AnyStore::Redis(store) => CounterStore::evictions(store),
        }
    }

    fn fleet(&self) -> Option<&redis::RedisStore> {
        match self {
            AnyStore::Memory(_) => None,
            AnyStore::Redis(store) => Some(store),
        }
    }
}
