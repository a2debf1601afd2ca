//! Counters in Redis, shared by a fleet of floodgate instances.
//!
//! Files: `connect.rs` (URL forms, TLS files, connecting now or in the
//! background), `script.rs` with `redis.lua` (the exact-mode script and its
//! arguments), `batch.rs` (the lanes that put concurrent requests in one
//! script call), `sentinel.rs` (following the master), `over_limit.rs` (the
//! local over-limit cache), `probe.rs` (reachability and health),
//! `lease/` with `lease.lua` (leased mode: shared bookkeeping and claims in
//! `mod.rs`, `window.rs` for fixed windows, `bucket.rs` for token buckets),
//! `overrides.rs` (operators' overrides shared by the fleet), `calendar.rs`
//! (calendar windows' bounds).
//!
//! [`RedisStore`] implements [`CounterStore`] with one Lua script
//! (`redis.lua`, next to this file) that evaluates *every* check of an
//! [`CounterStore::apply`] call atomically: the three algorithms with the
//! same math as [`crate::limit`], groups all-or-nothing, `count_when_denied`
//! and duplicate keys exactly as [`super::memory`] does. Concurrent calls
//! are batched (`batch.rs`): one script call carries every request that
//! queued while the previous call on its connection was in flight, and
//! evaluates them one after another, each as if it were alone. The script is
//! sent with `EVALSHA` and loaded again automatically when Redis answers
//! `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).
//!
//! # Connections
//!
//! A small pool of multiplexed connections ([`redis::aio::ConnectionManager`],
//! reconnecting with exponential backoff), each with its batching lane;
//! requests are spread round-robin over the lanes, never one connection per
//! request. In cluster mode (`redis+cluster://h1:p1,h2:p2`) the checks of a
//! call are split by hash tag and the parts go out in parallel, each batched
//! with the other requests of its tag (a script call's keys must share a
//! slot).
//!
//! # Keys
//!
//! A counter's Redis key is `<prefix>{<tag>}<counter key bytes>`. The tag is
//! a stable hash of the key's descriptor part ([`key::hash_tag`]), so
//! every limit of one descriptor (one group, unless
//! `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT` puts all descriptors in group 0)
//! lives in one cluster slot. Groups spanning several tags are all-or-nothing
//! per tag only, in cluster mode. Every key carries a `PX` expiry, from the
//! script's now to the instant its state stops mattering
//! ([`crate::limit::Evaluation::expires_at`]), rounded up to the millisecond.
//!
//! # Time
//!
//! By default the script reads Redis's `TIME`, so every instance counts with
//! one clock. [`TimeSource::Caller`] uses the `now` passed to `apply`
//! instead (tests with a manual clock; fleets with well-synchronised clocks).
//!
//! # Where Redis can differ from the memory store
//!
//! The script works on doubles. Instants are `(seconds, nanoseconds)` pairs,
//! durations inside a window are nanoseconds, and `a × b / c` is computed
//! exactly without forming the product, so for the same `now` the outcomes
//! are identical to the memory store's, except:
//! - with [`TimeSource::Redis`], `now` has microsecond resolution;
//! - counts, limits, bursts and hits above 2^53 are rounded to doubles;
//! - sliding windows and token buckets with windows longer than 2^53 ns
//!   (about 104 days: `year`, or a large `unit_multiplier`) hold durations
//!   above 2^53 ns, which round to a multiple of 2^k ns, and their ratio
//!   arithmetic is no longer exact (an error of one hit or a few ns). Fixed
//!   windows stay exact for any length up to the ~584 years at which
//!   [`crate::limit::Limit::window`] saturates;
//! - key expiry is rounded up to the next millisecond (`PX`), which only
//!   keeps a state that already means the same as no state slightly longer;
//! - a calendar window's boundaries are computed here, from the `now` passed
//!   to `apply` (the script has no time zone database), and sent with the
//!   check: with [`TimeSource::Redis`] the script picks, among the previous,
//!   current and next windows, the one holding Redis's time, so the two
//!   clocks may differ by anything shorter than a window (23 hours at
//!   least) without a count landing in the wrong window.
//!
//! # Health
//!
//! Given a [`Health`] ([`RedisStore::with_health`]), the store reports
//! whether Redis answers: a call that fails or times out marks it
//! unreachable; a later successful call marks it reachable again. While it
//! is unreachable, a background task sends `PING` every [`PROBE_INTERVAL`]
//! (with the request timeout), so health recovers without traffic. Only
//! transitions touch the [`Health`]; the hot path reads one atomic.
//!
//! # Local over-limit cache
//!
//! When a fixed window's count in Redis *exceeds* its limit, every check of
//! that key (of any size, `hits = 0` included) is denied until the window
//! ends, whatever the other instances do: counts only grow within a window.
//! Such keys are remembered locally (a bounded moka cache) with their count
//! and the window's end, and answered without Redis until then, as the
//! reference's local cache does. A group containing a locally denied check
//! is sent to Redis as denied, so its other checks commit exactly what they
//! would have. The differences, by design: a locally denied check's own hits
//! are not added to the Redis count (it is over the limit until the window's
//! end either way, so no decision changes), and its `used` is a lower bound.
//! A key that appears twice in one call bypasses the cache. If Redis loses
//! its data (flush, failover without replication), the cache keeps denying
//! until the window it saw ends.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use ::redis::cluster_async::ClusterConnection;
use moka::sync::Cache;

mod batch;
mod calendar;
mod connect;
mod lease;
mod over_limit;
mod overrides;
mod probe;

mod script;
mod sentinel;

pub use connect::RedisTlsFiles;
pub use lease::LEASE_DIVISOR;

pub use sentinel::percent_encode;

use super::{Check, CounterStore, Outcomes, StoreError, key};
use crate::health::Health;
use crate::limit::{Nanos, Outcome};
use over_limit::OverLimit;

pub use probe::PROBE_INTERVAL;
use probe::{Pinger, Reachability, probe};

/// Where the script's "now" comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeSource {
    /// Redis's `TIME` (microseconds): one clock for the whole fleet.
    #[default]
    Redis,
    /// The `now` passed to [`CounterStore::apply`] (the instance's clock).
    Caller,
}

/// How to reach Redis and how to use it.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS),
    /// `redis+unix:///path/to.sock`, or `redis+cluster://h1:p1,h2:p2`
    /// (`rediss+cluster://` for TLS).
    pub url: String,
    /// Prepended to every key, so deployments can share one Redis. Must not
    /// contain `{` or `}` (they would change the cluster hash tag).
    pub key_prefix: String,
    /// How long one call may wait for Redis before [`StoreError::Timeout`].
    pub timeout: Duration,
    /// Where "now" comes from.
    pub time_source: TimeSource,
    /// Multiplexed connections shared round-robin (single-node mode).
    pub connections: usize,
    /// Most keys remembered as over their limit; 0 disables the cache.
    pub over_limit_cache: u64,
    /// The sentinels' own password, for a `redis+sentinel://` URL (the
    /// reference's `REDIS_SENTINEL_AUTH`).
    pub sentinel_password: Option<String>,
    /// TLS files for a `rediss://` URL (a private CA, a client
    /// certificate); `None`: the public web PKI roots, no client
    /// certificate.
    pub tls: Option<RedisTlsFiles>,
    /// Exact counting or leased blocks of quota.
    pub mode: StoreMode,
}

impl RedisOptions {
    /// Defaults for `url`: prefix `floodgate:`, 10 ms timeout, Redis time,
    /// 2 connections, 100 000 cached over-limit keys.
    pub fn new(url: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            time_source: TimeSource::Redis,
            connections: 2,
            over_limit_cache: 100_000,
            tls: None,
            sentinel_password: None,
            mode: StoreMode::Exact,
        }
    }
}

/// The default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "floodgate:";

/// The default store timeout: half of Envoy's default 20 ms rate-limit
/// timeout, so floodgate answers (by its failure policy) before Envoy gives
/// up on it and applies its own `failure_mode_deny`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10);

/// Why a [`RedisStore`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    /// The URL is not one floodgate understands.
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The key prefix contains a brace.
    #[error("invalid key prefix {0:?}: it must not contain '{{' or '}}'")]
    InvalidPrefix(String),
}

enum Backend {
    Single {
        connections: Vec<ConnectionManager>,
        next: AtomicUsize,
    },
    Cluster(ClusterConnection),
    Sentinel(Arc<sentinel::SentinelBackend>),
}

/// A [`CounterStore`] in Redis (single node or cluster).
pub struct RedisStore {
    shared: Arc<Shared>,
    prefix: Box<[u8]>,
    timeout: Duration,
    time_source: TimeSource,
    over_limit: Option<Cache<Box<[u8]>, OverLimit>>,
    script: Script,
    /// In leased mode, the blocks of quota this instance holds.
    leases: Option<Arc<lease::Leases>>,
    /// The lanes that batch concurrent requests (`None` outside a Tokio
    /// runtime).
    batcher: Option<batch::Batcher>,
}

/// How the fleet shares counters in Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreMode {
    /// Every decision is one atomic script call: exact counts.
    #[default]
    Exact,
    /// Fixed windows and token buckets are admitted from blocks of quota
    /// (of tokens) claimed from Redis (never more than the limit
    /// fleet-wide; see the `lease` module).
    Leased,
}

/// What the store shares with its background connector: the connections,
/// once made, and where to report reachability.
#[derive(Default)]
struct Shared {
    backend: OnceLock<Backend>,
    reachability: OnceLock<Arc<Reachability>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("timeout", &self.timeout)
            .field("time_source", &self.time_source)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Reports to `health` whether Redis answers (see the module doc):
    /// reachable now if the store is connected; otherwise once the
    /// background connector connects.
    pub fn with_health(self, health: Health) -> RedisStore {
        let connected = self.shared.backend.get().is_some();
        health.set_store_reachable(connected);
        let reachability = Arc::new(Reachability {
            health,
            reachable: AtomicBool::new(connected),
            // While not connected, the background connector is the probe.
            probing: AtomicBool::new(!connected),
        });
        let _ = self.shared.reachability.set(Arc::clone(&reachability));
        // The connector may have connected since `connected` was read,
        // before it could see the reachability to report to.
        if !connected && self.shared.backend.get().is_some() {
            reachability.record(true);
            reachability.probing.store(false, Ordering::Release);
        }
        self
    }

    /// Whether the store talks to a Redis Cluster.
    fn is_cluster(&self) -> bool {
        matches!(self.shared.backend.get(), Some(Backend::Cluster(_)))
    }

    /// The connections, or the error a call gets before the first connect.
    fn backend(&self) -> Result<&Backend, StoreError> {
        self.shared
            .backend
            .get()
            .ok_or_else(|| StoreError::Unavailable("Redis not connected yet".to_owned()))
    }

    /// Records whether a call reached Redis; starts the probe when it just
    /// became unreachable.
    fn report(&self, answered: bool) {
        let Some(reachability) = self.shared.reachability.get() else {
            return;
        };
        if reachability.record(answered) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let connection = match self.shared.backend.get() {
                        Some(Backend::Single { connections, .. }) => {
                            connections.first().cloned().map(Pinger::Single)
                        }
                        Some(Backend::Cluster(connection)) => {
                            Some(Pinger::Cluster(connection.clone()))
                        }
                        Some(Backend::Sentinel(sentinel)) => {
                            Some(Pinger::Sentinel(Arc::clone(sentinel)))
                        }
                        // The background connector reports the connect.
                        None => None,
                    };
                    if let Some(connection) = connection {
                        runtime.spawn(probe(Arc::clone(reachability), connection, self.timeout));
                    }
                }
                // No runtime to probe from: the next successful call
                // reports recovery instead.
                Err(_) => reachability.probing.store(false, Ordering::Release),
            }
        }
    }
}

impl CounterStore for RedisStore {
    async fn apply<'a>(
        &'a self,
        checks: &'a [Check<'a>],
        now: Nanos,
        out: &'a mut Outcomes,
    ) -> Result<(), StoreError> {
        out.clear();
        if checks.is_empty() {
            return Ok(());
        }
        if let Some(leases) = &self.leases
            && lease::leasable(checks)
        {
            return self.apply_leased(leases, checks, out).await;
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; checks.len()];
        let mut denied: Vec<u32> = Vec::new();
        if self.over_limit.is_some() {
            for (i, check) in checks.iter().enumerate() {
                let duplicate = checks
                    .iter()
                    .enumerate()
                    .any(|(j, other)| j != i && other.key == check.key);
                if duplicate {
                    continue;
                }
                if let Some(outcome) = self.cached(check, now) {
                    outcomes[i] = Some(outcome);
                    if !denied.contains(&check.group) {
                        denied.push(check.group);
                    }
                }
            }
        }
        let remote: Vec<usize> = (0..checks.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        if !remote.is_empty() {
            let result = self
                .apply_remote(checks, &remote, &denied, now, &mut outcomes)
                .await;
            // A refused call was answered: Redis is reachable.
            self.report(matches!(result, Ok(()) | Err(StoreError::Rejected(_))));
            result?;
        }
        for outcome in outcomes {
            out.push(outcome.ok_or_else(|| {
                StoreError::Unavailable("the script did not answer every check".into())
            })?);
        }
        Ok(())
    }

    /// Not tracked: always 0; [`CounterStore::held`] says `None`.
    fn len(&self) -> u64 {
        0
    }

    /// Not tracked (`None`), on purpose. The counters live in Redis, shared
    /// by the fleet, so a count there is not this instance's to report: a
    /// per-instance gauge would be summed over the fleet N times. And no
    /// count is both cheap and right: `DBSIZE` counts every key of a shared
    /// database, and counting the keys under the prefix takes a `SCAN` of
    /// the whole keyspace, repeated by every instance. Redis's own key
    /// count (`INFO keyspace`, or redis_exporter's `redis_db_keys`) is the
    /// number to watch, with a database of its own for floodgate.
    fn held(&self) -> Option<u64> {
        None
    }

    fn fleet(&self) -> Option<&RedisStore> {
        Some(self)
    }
}

impl RedisStore {
    /// How exact counting batched requests so far: `(batches, requests)`
    /// (in a cluster, a batch is one hash tag's call).
    pub fn batch_stats(&self) -> (u64, u64) {
        self.batcher
            .as_ref()
            .map_or((0, 0), |batcher| batcher.stats.get())
    }
}

impl RedisStore {
    /// Runs the script for the `remote` checks: one call, or in cluster
    /// mode one per hash tag.
    async fn apply_remote(
        &self,
        checks: &[Check<'_>],
        remote: &[usize],
        denied: &[u32],
        now: Nanos,
        outcomes: &mut [Option<Outcome>],
    ) -> Result<(), StoreError> {
        {
            match self.backend()? {
                Backend::Single { .. } | Backend::Sentinel(_) => {
                    self.run(checks, remote, denied, now, outcomes).await?;
                }
                Backend::Cluster(_) => {
                    // One script call per hash tag, all in parallel.
                    let mut parts: Vec<(u64, Vec<usize>)> = Vec::new();
                    for &i in remote {
                        let tag = key::hash_tag(checks[i].key);
                        match parts.iter_mut().find(|(t, _)| *t == tag) {
                            Some((_, part)) => part.push(i),
                            None => parts.push((tag, vec![i])),
                        }
                    }
                    let results = futures_util::future::join_all(parts.iter().map(|(_, part)| {
                        let mut local: Vec<Option<Outcome>> = vec![None; checks.len()];
                        async move {
                            self.run(checks, part, denied, now, &mut local)
                                .await
                                .map(|()| local)
                        }
                    }))
                    .await;
                    for result in results {
                        for (slot, outcome) in outcomes.iter_mut().zip(result?) {
                            if outcome.is_some() {
                                *slot = outcome;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
