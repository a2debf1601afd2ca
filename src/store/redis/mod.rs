//! Counters in Redis, shared by a fleet of floodgate instances.
//!
//! [`RedisStore`] implements [`CounterStore`] with one Lua script
//! (`redis.lua`, next to this file) that evaluates *every* check of an
//! [`CounterStore::apply`] call atomically, in one round trip: the three
//! algorithms with the same math as [`crate::limit`], groups all-or-nothing,
//! `count_when_denied` and duplicate keys exactly as [`super::memory`] does.
//! The script is sent with `EVALSHA` and loaded again automatically when
//! Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).
//!
//! # Connections
//!
//! A small pool of multiplexed connections ([`redis::aio::ConnectionManager`],
//! reconnecting with exponential backoff) is used round-robin; concurrent
//! requests are pipelined on them, never one connection per request. In
//! cluster mode (`redis+cluster://h1:p1,h2:p2`) the checks of a call are
//! split by hash tag and each part is one script call, all in parallel.
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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ::redis::Script;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use moka::Expiry;
use moka::sync::Cache;

mod calendar;
mod overrides;
mod probe;

use super::{Check, CounterStore, Outcomes, StoreError, key};
use crate::health::Health;
use crate::limit::{Algorithm, NANOS_PER_SECOND, Nanos, Outcome};
use calendar::calendar_bounds;
pub use probe::PROBE_INTERVAL;
use probe::{Pinger, Reachability, probe};

/// The script, evaluating all checks of one call.
const SCRIPT: &str = include_str!("redis.lua");

/// Values per check in the script's answer.
const FIELDS_OUT: usize = 6;

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
    /// Redis could not be reached at startup.
    #[error("cannot connect to Redis at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: ::redis::RedisError,
    },
}

enum Backend {
    Single {
        connections: Vec<ConnectionManager>,
        next: AtomicUsize,
    },
    Cluster(ClusterConnection),
}

/// A key known to be over its limit until `until` (caller's clock).
#[derive(Clone, Copy, Debug)]
struct OverLimit {
    until: Nanos,
    count: u64,
    /// Real time to keep the entry (bounds memory; correctness uses `until`).
    keep: Duration,
}

struct OverLimitExpiry;

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

/// A [`CounterStore`] in Redis (single node or cluster).
pub struct RedisStore {
    backend: Backend,
    prefix: Box<[u8]>,
    timeout: Duration,
    time_source: TimeSource,
    over_limit: Option<Cache<Box<[u8]>, OverLimit>>,
    script: Script,
    reachability: Option<Arc<Reachability>>,
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
    /// Connects to Redis as `options` say. Fails when the URL is invalid or
    /// Redis cannot be reached now; once connected, connections are
    /// re-established in the background after any failure.
    pub async fn connect(options: RedisOptions) -> Result<RedisStore, RedisConfigError> {
        if options.key_prefix.contains(['{', '}']) {
            return Err(RedisConfigError::InvalidPrefix(options.key_prefix));
        }
        let url = options.url.trim();
        let invalid = |reason: &str| RedisConfigError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let connect_error = |source| RedisConfigError::Connect {
            url: redact(url),
            source,
        };
        // Connecting may take longer than one request may wait; not forever.
        let connect_timeout = options.timeout.max(Duration::from_secs(1));
        let backend = if let Some((scheme, rest)) = cluster_url(url) {
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("{scheme}://{auth}{h}"))
                .collect();
            if nodes.is_empty() {
                return Err(invalid("a cluster URL needs at least one host:port"));
            }
            let client = ClusterClient::builder(nodes)
                .connection_timeout(connect_timeout)
                .response_timeout(options.timeout)
                .build()
                .map_err(|e| invalid(&e.to_string()))?;
            let connection = client.get_async_connection().await.map_err(connect_error)?;
            Backend::Cluster(connection)
        } else {
            if !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return Err(invalid(
                    "expected redis://, rediss://, redis+unix:// or redis+cluster://",
                ));
            }
            let client = ::redis::Client::open(url).map_err(|e| invalid(&e.to_string()))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                // Requests time out on their own (`timeout`); the manager
                // must not give up reconnecting after a few tries.
                .set_response_timeout(None)
                .set_number_of_retries(6)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_secs(2));
            let mut connections = Vec::with_capacity(options.connections.max(1));
            for _ in 0..options.connections.max(1) {
                let manager = ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                    .map_err(connect_error)?;
                connections.push(manager);
            }
            Backend::Single {
                connections,
                next: AtomicUsize::new(0),
            }
        };
        let over_limit = (options.over_limit_cache > 0).then(|| {
            Cache::builder()
                .max_capacity(options.over_limit_cache)
                .expire_after(OverLimitExpiry)
                .build()
        });
        Ok(RedisStore {
            backend,
            prefix: options.key_prefix.into_bytes().into_boxed_slice(),
            timeout: options.timeout,
            time_source: options.time_source,
            over_limit,
            script: Script::new(SCRIPT),
            reachability: None,
        })
    }

    /// Reports to `health` whether Redis answers (see the module doc):
    /// reachable now, since the store just connected.
    pub fn with_health(mut self, health: Health) -> RedisStore {
        health.set_store_reachable(true);
        self.reachability = Some(Arc::new(Reachability {
            health,
            reachable: AtomicBool::new(true),
            probing: AtomicBool::new(false),
        }));
        self
    }

    /// Records whether a call reached Redis; starts the probe when it just
    /// became unreachable.
    fn report(&self, answered: bool) {
        let Some(reachability) = &self.reachability else {
            return;
        };
        if reachability.record(answered) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let connection = match &self.backend {
                        Backend::Single { connections, .. } => {
                            connections.first().cloned().map(Pinger::Single)
                        }
                        Backend::Cluster(connection) => Some(Pinger::Cluster(connection.clone())),
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

    /// The local answer for `check`, if the over-limit cache is certain.
    fn cached(&self, check: &Check<'_>, now: Nanos) -> Option<Outcome> {
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

    /// Runs the script for `checks` (indices into `all`), with `denied`
    /// groups already known to be denied; writes outcomes into `out`.
    async fn run(
        &self,
        all: &[Check<'_>],
        part: &[usize],
        denied: &[u32],
        now: Nanos,
        out: &mut [Option<Outcome>],
    ) -> Result<(), StoreError> {
        let mut invocation = self.script.prepare_invoke();
        match self.time_source {
            TimeSource::Redis => invocation.arg("redis").arg(""),
            TimeSource::Caller => invocation
                .arg(now / NANOS_PER_SECOND)
                .arg(now % NANOS_PER_SECOND),
        };
        invocation.arg(part.len());
        let mut key_index: HashMap<&[u8], usize> = HashMap::with_capacity(part.len());
        for &i in part {
            let check = &all[i];
            let next = key_index.len() + 1;
            let index = *key_index.entry(check.key).or_insert_with(|| {
                invocation.key(redis_key(&self.prefix, check.key));
                next
            });
            let calendar = check
                .limit
                .calendar
                .filter(|_| check.limit.algorithm == Algorithm::FixedWindow);
            let algorithm = match check.limit.algorithm {
                Algorithm::FixedWindow if calendar.is_some() && check.count_when_denied => "C",
                Algorithm::FixedWindow if calendar.is_some() => "c",
                Algorithm::FixedWindow if check.count_when_denied => "F",
                Algorithm::FixedWindow => "f",
                Algorithm::SlidingWindow => "s",
                Algorithm::TokenBucket => "t",
            };
            invocation.arg(index).arg(algorithm);
            match calendar {
                Some(calendar) => invocation.arg(calendar_bounds(calendar, check.limit.unit, now)),
                None => invocation.arg(check.limit.window() / NANOS_PER_SECOND),
            };
            invocation
                .arg(check.limit.requests_per_unit)
                .arg(check.limit.burst)
                .arg(check.hits)
                .arg(check.group);
        }
        for group in denied {
            invocation.arg(*group);
        }

        let call = async {
            match &self.backend {
                Backend::Single { connections, next } => {
                    let slot = next.fetch_add(1, Ordering::Relaxed) % connections.len().max(1);
                    let Some(connection) = connections.get(slot) else {
                        return Err(StoreError::Unavailable("no Redis connection".into()));
                    };
                    let mut connection = connection.clone();
                    match invocation.invoke_async::<Vec<u8>>(&mut connection).await {
                        // A connection found broken is being replaced by the
                        // manager: one retry, within the same timeout. If the
                        // connection broke after Redis ran the script (rare),
                        // the retry counts the hits twice: conservative,
                        // never admitting more than the limit.
                        Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                            invocation.invoke_async::<Vec<u8>>(&mut connection).await
                        }
                        result => result,
                    }
                }
                Backend::Cluster(connection) => {
                    let mut connection = connection.clone();
                    invocation.invoke_async::<Vec<u8>>(&mut connection).await
                }
            }
            .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        let answer = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StoreError::Timeout)??;
        let unexpected = || {
            StoreError::Unavailable(format!(
                "unexpected script answer for {} checks: {:?}",
                part.len(),
                String::from_utf8_lossy(&answer)
            ))
        };
        let mut values = answer.split(|&b| b == b' ');
        let mut fields = [0i128; FIELDS_OUT];
        for &i in part {
            for field in &mut fields {
                *field = values.next().and_then(int).ok_or_else(unexpected)?;
            }
            let [admitted, remaining, used, reset_s, reset_ns, count] = fields;
            let outcome = Outcome {
                admitted: admitted == 1,
                remaining: clamp(remaining),
                used: clamp(used),
                reset_after: clamp(reset_s * i128::from(NANOS_PER_SECOND) + reset_ns),
            };
            let check = &all[i];
            let count = clamp(count);
            if let Some(cache) = &self.over_limit
                && check.limit.algorithm == Algorithm::FixedWindow
                && count > check.limit.requests_per_unit
                && outcome.reset_after > 0
            {
                cache.insert(
                    Box::from(check.key),
                    OverLimit {
                        until: now.saturating_add(outcome.reset_after),
                        count,
                        keep: Duration::from_nanos(outcome.reset_after),
                    },
                );
            }
            out[i] = Some(outcome);
        }
        if values.next().is_some() {
            return Err(unexpected());
        }
        Ok(())
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
            self.report(result.is_ok());
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
            match &self.backend {
                Backend::Single { .. } => {
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

/// `(scheme, hosts)` of a `redis+cluster://` or `rediss+cluster://` URL.
fn cluster_url(url: &str) -> Option<(&'static str, &str)> {
    if let Some(rest) = url.strip_prefix("redis+cluster://") {
        Some(("redis", rest))
    } else {
        url.strip_prefix("rediss+cluster://")
            .map(|rest| ("rediss", rest))
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The Redis key of a counter key: `<prefix>{<tag>}<key>`, the tag in 16
/// lowercase hex digits.
fn redis_key(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(prefix.len() + 18 + key.len());
    out.extend_from_slice(prefix);
    out.push(b'{');
    // `{:016x}`, without the formatting machinery on the request path.
    let tag = key::hash_tag(key);
    out.extend(
        (0..16)
            .rev()
            .map(|digit| HEX[(tag >> (digit * 4)) as usize & 0xf]),
    );
    out.push(b'}');
    out.extend_from_slice(key);
    out
}

/// One decimal integer of the script's answer.
fn int(text: &[u8]) -> Option<i128> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Narrows to `u64`, clamping negatives to 0 and large values to the maximum.
fn clamp(value: i128) -> u64 {
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
