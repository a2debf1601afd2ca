//! Calls of `redis.lua` (next to this file): a request's checks become a
//! [`Request`] (its keys and arguments), one or more requests become one
//! script call (a batch, see `batch.rs`), and the request's line of the
//! answer is parsed into outcomes (and the over-limit cache fed).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use smallvec::SmallVec;

use super::batch::Answer;
use super::calendar::calendar_bounds;
use super::over_limit::OverLimit;
use super::{Backend, RedisStore, Shared, TimeSource};
use crate::limit::{Algorithm, NANOS_PER_SECOND, Nanos, Outcome};
use crate::store::{Check, StoreError, key};

/// The script, evaluating the requests of one batch.
pub(super) const SCRIPT: &str = include_str!("redis.lua");

/// Values per check in the script's answer.
const FIELDS_OUT: usize = 6;

/// One request's checks as the script's arguments: its part of a batch.
pub(super) struct Request {
    now: Nanos,
    /// The hash tag of the first key ([`key::hash_tag`]).
    tag: u64,
    /// The distinct Redis keys of the request, in first-use order.
    keys: SmallVec<[Vec<u8>; 2]>,
    checks: SmallVec<[CheckArgs; 2]>,
    /// Groups already denied locally (the over-limit cache).
    denied: SmallVec<[u32; 2]>,
}

/// One check's fields (see the script's header).
struct CheckArgs {
    /// Index into [`Request::keys`].
    key: usize,
    algorithm: &'static str,
    window: WindowArg,
    requests_per_unit: u64,
    burst: u64,
    hits: u64,
    group: u32,
}

/// A window in seconds, or a calendar window's boundaries.
enum WindowArg {
    Seconds(u64),
    Calendar(String),
}

impl Request {
    /// The checks `part` (indices into `all`), with `denied` groups already
    /// known to be denied.
    fn new(prefix: &[u8], all: &[Check<'_>], part: &[usize], denied: &[u32], now: Nanos) -> Self {
        let mut request = Request {
            now,
            tag: 0,
            keys: SmallVec::new(),
            checks: SmallVec::with_capacity(part.len()),
            denied: denied.iter().copied().collect(),
        };
        let mut key_index: SmallVec<[&[u8]; 2]> = SmallVec::new();
        for &i in part {
            let check = &all[i];
            let key = match key_index.iter().position(|key| *key == check.key) {
                Some(index) => index,
                None => {
                    key_index.push(check.key);
                    let tag = key::hash_tag(check.key);
                    if request.keys.is_empty() {
                        request.tag = tag;
                    }
                    request.keys.push(tagged_key(prefix, check.key, tag));
                    key_index.len() - 1
                }
            };
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
            let window = match calendar {
                Some(calendar) => {
                    WindowArg::Calendar(calendar_bounds(calendar, check.limit.unit, now))
                }
                None => WindowArg::Seconds(check.limit.window() / NANOS_PER_SECOND),
            };
            request.checks.push(CheckArgs {
                key,
                algorithm,
                window,
                requests_per_unit: check.limit.requests_per_unit,
                burst: check.limit.burst,
                hits: check.hits,
                group: check.group,
            });
        }
        request
    }

    /// The hash tag of the request's first key: in a cluster, every key of
    /// a request part has it.
    pub(super) fn tag(&self) -> u64 {
        self.tag
    }

    /// Whether the script answers this request in its short form: one
    /// fixed-window check, no group denied.
    fn short_form(&self) -> bool {
        self.denied.is_empty()
            && matches!(&*self.checks, [check] if matches!(check.algorithm, "f" | "F"))
    }
}

/// The `EVALSHA` command of `script` (`redis.lua`) for a batch of
/// `requests` (see the script's header); keys shared by several requests
/// are sent once. Built straight into one [`::redis::Cmd`]: no buffer per
/// argument.
pub(super) fn batch_cmd<'r>(
    script: &::redis::Script,
    time_source: TimeSource,
    requests: impl ExactSizeIterator<Item = &'r Request> + Clone,
) -> ::redis::Cmd {
    // The batch's distinct keys, and each request's keys' indices in them.
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut key_index: HashMap<&[u8], usize> = HashMap::new();
    let mut globals: Vec<usize> = Vec::new();
    let mut arguments = 2;
    for request in requests.clone() {
        for key in &request.keys {
            let next = keys.len() + 1;
            globals.push(*key_index.entry(key.as_slice()).or_insert_with(|| {
                keys.push(key.as_slice());
                next
            }));
        }
        arguments += 2 + request.checks.len() * 7 + request.denied.len() + 2;
    }
    // Arguments are short decimal numbers and letters; keys are as long as
    // they are.
    let key_bytes: usize = keys.iter().map(|key| key.len()).sum();
    let mut cmd =
        ::redis::Cmd::with_capacity(3 + keys.len() + arguments, 64 + key_bytes + 12 * arguments);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys.len());
    for key in &keys {
        cmd.arg(*key);
    }
    match time_source {
        TimeSource::Redis => cmd.arg("redis"),
        TimeSource::Caller => cmd.arg("caller"),
    };
    cmd.arg(requests.len());
    let mut globals = globals.into_iter();
    for request in requests {
        let first: SmallVec<[usize; 4]> = globals.by_ref().take(request.keys.len()).collect();
        if time_source == TimeSource::Caller {
            cmd.arg(request.now / NANOS_PER_SECOND)
                .arg(request.now % NANOS_PER_SECOND);
        }
        cmd.arg(request.checks.len());
        for check in &request.checks {
            cmd.arg(first[check.key]).arg(check.algorithm);
            match &check.window {
                WindowArg::Seconds(seconds) => cmd.arg(*seconds),
                WindowArg::Calendar(bounds) => cmd.arg(bounds.as_str()),
            };
            cmd.arg(check.requests_per_unit)
                .arg(check.burst)
                .arg(check.hits)
                .arg(check.group);
        }
        cmd.arg(request.denied.len());
        for group in &request.denied {
            cmd.arg(*group);
        }
    }
    cmd
}

/// What a call sends: a prepared script invocation, a script's `EVALSHA`
/// command (loaded with `SCRIPT LOAD` and sent again when Redis answers
/// `NOSCRIPT`), or a pipeline.
pub(super) enum Call<'a> {
    Invocation(&'a ::redis::ScriptInvocation<'a>),
    Eval(&'a ::redis::Script, &'a ::redis::Cmd),
    Pipeline(&'a ::redis::Pipeline),
}

impl Call<'_> {
    async fn send<C: ::redis::aio::ConnectionLike + Send>(
        &self,
        connection: &mut C,
    ) -> ::redis::RedisResult<::redis::Value> {
        match self {
            Call::Invocation(invocation) => invocation.invoke_async(connection).await,
            Call::Pipeline(pipeline) => pipeline.query_async(connection).await,
            Call::Eval(script, cmd) => match cmd.query_async(connection).await {
                Err(error)
                    if error.kind()
                        == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
                {
                    script.load_async(connection).await?;
                    cmd.query_async(connection).await
                }
                result => result,
            },
        }
    }
}

impl RedisStore {
    /// Runs the script for `part` (indices into `all`), with `denied`
    /// groups already known to be denied; writes outcomes into `out`. The
    /// request joins a batch ([`super::batch`]): on its lane's connection,
    /// or in a cluster with the other requests of its hash tag.
    pub(super) async fn run(
        &self,
        all: &[Check<'_>],
        part: &[usize],
        denied: &[u32],
        now: Nanos,
        out: &mut [Option<Outcome>],
    ) -> Result<(), StoreError> {
        let request = Request::new(&self.prefix, all, part, denied, now);
        let short_form = request.short_form();
        let answer = self.send(request).await?;
        let now_nanos = match self.time_source {
            TimeSource::Redis => answer.now_nanos,
            TimeSource::Caller => i128::from(now % NANOS_PER_SECOND),
        };
        let line = answer.line();
        if let Some(error) = line.strip_prefix(b"!") {
            return Err(StoreError::Rejected(
                String::from_utf8_lossy(error).into_owned(),
            ));
        }
        let unexpected = || {
            StoreError::Unavailable(format!(
                "unexpected script answer for {} checks: {:?}",
                part.len(),
                String::from_utf8_lossy(line)
            ))
        };
        let mut values = line.split(|&b| b == b' ');
        if short_form {
            let (Some(used), Some(reset_s), None) = (
                values.next().and_then(int),
                values.next().and_then(int),
                values.next(),
            ) else {
                return Err(unexpected());
            };
            let i = part[0];
            let check = &all[i];
            let limit = check.limit.requests_per_unit;
            let used = clamp(used);
            let admitted = used <= limit;
            let committed = check.hits > 0 && (admitted || check.count_when_denied);
            let outcome = Outcome {
                admitted,
                remaining: if admitted { limit - used } else { 0 },
                used,
                reset_after: clamp(reset_s * i128::from(NANOS_PER_SECOND) - now_nanos),
            };
            let count = if committed {
                used
            } else {
                used.saturating_sub(check.hits)
            };
            self.remember_over_limit(check, &outcome, count, now);
            out[i] = Some(outcome);
            return Ok(());
        }
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
            self.remember_over_limit(check, &outcome, clamp(count), now);
            out[i] = Some(outcome);
        }
        if values.next().is_some() {
            return Err(unexpected());
        }
        Ok(())
    }

    /// The request's line of its answer: through its batch lane, or in a
    /// call of its own when there is no lane (the store was made outside a
    /// Tokio runtime, or the lane's runtime has ended).
    async fn send(&self, request: Request) -> Result<Answer, StoreError> {
        let request = match &self.batcher {
            Some(batcher) => {
                match tokio::time::timeout(self.timeout, batcher.submit(request)).await {
                    Ok(Ok(answer)) => return answer,
                    Ok(Err(request)) => request,
                    Err(_) => return Err(StoreError::Timeout),
                }
            }
            None => request,
        };
        let cmd = batch_cmd(&self.script, self.time_source, std::iter::once(&request));
        Answer::whole(bytes(
            invoke_on(
                &self.shared,
                None,
                self.timeout,
                &Call::Eval(&self.script, &cmd),
            )
            .await?,
        )?)
    }

    /// Feeds the over-limit cache: a fixed window whose `count` exceeds its
    /// limit denies every check of its key until the window ends.
    fn remember_over_limit(&self, check: &Check<'_>, outcome: &Outcome, count: u64, now: Nanos) {
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
    }

    /// Sends one prepared script call, within the store's timeout: on one
    /// of the connections (round-robin), to the slot of its first key in a
    /// cluster, or to the master the sentinels name.
    pub(super) async fn invoke(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<Vec<u8>, StoreError> {
        bytes(
            invoke_on(
                &self.shared,
                None,
                self.timeout,
                &Call::Invocation(invocation),
            )
            .await?,
        )
    }
}

/// Sends one call, within `timeout`: on connection `lane` (round-robin
/// when `None`) of a single node, to the slot of its first key in a
/// cluster, or to the master the sentinels name.
pub(super) async fn invoke_on(
    shared: &Shared,
    lane: Option<usize>,
    timeout: Duration,
    call: &Call<'_>,
) -> Result<::redis::Value, StoreError> {
    let backend = shared
        .backend
        .get()
        .ok_or_else(|| StoreError::Unavailable("Redis not connected yet".to_owned()))?;
    let call = async {
        match backend {
            Backend::Single { connections, next } => {
                let slot = lane.unwrap_or_else(|| next.fetch_add(1, Ordering::Relaxed))
                    % connections.len().max(1);
                let Some(connection) = connections.get(slot) else {
                    return Err(StoreError::Unavailable("no Redis connection".into()));
                };
                let mut connection = connection.clone();
                match call.send(&mut connection).await {
                    // A connection found broken is being replaced by the
                    // manager: one retry, within the same timeout. If the
                    // connection broke after Redis ran the script (rare),
                    // the retry counts the hits twice: conservative, never
                    // admitting more than the limit.
                    Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                        call.send(&mut connection).await
                    }
                    result => result,
                }
            }
            Backend::Cluster(connection) => {
                let mut connection = connection.clone();
                call.send(&mut connection).await
            }
            Backend::Sentinel(sentinel) => {
                let Some(mut connection) = sentinel.connection() else {
                    return Err(StoreError::Unavailable("no Redis connection".into()));
                };
                let result = call.send(&mut connection).await;
                if let Err(error) = &result {
                    // A failover may have moved the master.
                    sentinel.failed(error);
                }
                result
            }
        }
        .map_err(|e| StoreError::Unavailable(e.to_string()))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| StoreError::Timeout)?
}

/// The Redis key of a counter key: `<prefix>{<tag>}<key>`, the tag in 16
/// lowercase hex digits.
pub(super) fn redis_key(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    tagged_key(prefix, key, key::hash_tag(key))
}

/// [`redis_key`] with the key's hash tag already computed.
fn tagged_key(prefix: &[u8], key: &[u8], tag: u64) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(prefix.len() + 18 + key.len());
    out.extend_from_slice(prefix);
    out.push(b'{');
    // `{:016x}`, without the formatting machinery on the request path.
    out.extend(
        (0..16)
            .rev()
            .map(|digit| HEX[(tag >> (digit * 4)) as usize & 0xf]),
    );
    out.push(b'}');
    out.extend_from_slice(key);
    out
}

/// A script's answer: one bulk string.
pub(super) fn bytes(value: ::redis::Value) -> Result<Vec<u8>, StoreError> {
    <Vec<u8> as ::redis::FromRedisValue>::from_redis_value(value)
        .map_err(|e| StoreError::Unavailable(format!("unexpected answer: {e}")))
}

/// One decimal integer of the script's answer.
fn int(text: &[u8]) -> Option<i128> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Narrows to `u64`, clamping negatives to 0 and large values to the maximum.
fn clamp(value: i128) -> u64 {
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}
