//! One call of `redis.lua` (next to this file): the checks' keys and
//! arguments in, one string of integers out, parsed into outcomes (and the
//! over-limit cache fed).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::calendar::calendar_bounds;
use super::over_limit::OverLimit;
use super::{Backend, RedisStore, TimeSource};
use crate::limit::{Algorithm, NANOS_PER_SECOND, Nanos, Outcome};
use crate::store::{Check, StoreError, key};

/// The script, evaluating all checks of one call.
pub(super) const SCRIPT: &str = include_str!("redis.lua");

/// Values per check in the script's answer.
const FIELDS_OUT: usize = 6;

impl RedisStore {
    /// Runs the script for `checks` (indices into `all`), with `denied`
    /// groups already known to be denied; writes outcomes into `out`.
    pub(super) async fn run(
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

        let answer = self.invoke(&invocation).await?;
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

    /// Sends one prepared script call, within the store's timeout: on one
    /// of the connections (round-robin), to the slot of its first key in a
    /// cluster, or to the master the sentinels name.
    pub(super) async fn invoke(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<Vec<u8>, StoreError> {
        let backend = self.backend()?;
        let call = async {
            match backend {
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
                Backend::Sentinel(sentinel) => {
                    let Some(mut connection) = sentinel.connection() else {
                        return Err(StoreError::Unavailable("no Redis connection".into()));
                    };
                    let result = invocation.invoke_async::<Vec<u8>>(&mut connection).await;
                    if let Err(error) = &result {
                        // A failover may have moved the master.
                        sentinel.failed(error);
                    }
                    result
                }
            }
            .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StoreError::Timeout)?
    }
}

/// The Redis key of a counter key: `<prefix>{<tag>}<key>`, the tag in 16
/// lowercase hex digits.
pub(super) fn redis_key(prefix: &[u8], key: &[u8]) -> Vec<u8> {
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
