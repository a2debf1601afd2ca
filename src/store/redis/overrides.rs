//! Operators' overrides kept in Redis, so that every instance of a fleet
//! enforces one set (see `rules::overrides` for what they are and
//! `server::admin` for the API that changes them).
//!
//! Two keys under one cluster hash tag: `<prefix>{overrides}` is a hash
//! from each override's descriptor (JSON `[domain, entries]`) to the
//! override (JSON), and `<prefix>{overrides}:version` a counter incremented
//! by every change, in the same transaction. An instance polls the version
//! ([`RedisStore::overrides_version`], a `GET`) and reloads the hash when it
//! moved, so a change reaches every instance within one poll interval.

use ::redis::{FromRedisValue, Pipeline};

use super::RedisStore;
use super::script::{Call, invoke_on};
use crate::store::StoreError;

/// The Redis keys of the override hash and of its version counter.
fn keys(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut hash = prefix.to_vec();
    hash.extend_from_slice(b"{overrides}");
    let mut version = hash.clone();
    version.extend_from_slice(b":version");
    (hash, version)
}

impl RedisStore {
    /// Runs `pipe` on a connection, within the store's timeout (at least a
    /// second: these calls are an operator's, not a request's).
    async fn query<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let timeout = self.timeout.max(std::time::Duration::from_secs(1));
        let value = invoke_on(&self.shared, Some(0), timeout, &Call::Pipeline(pipe)).await?;
        T::from_redis_value(value)
            .map_err(|e| StoreError::Unavailable(format!("unexpected answer: {e}")))
    }

    /// The overrides' version: 0 before the first change.
    pub async fn overrides_version(&self) -> Result<u64, StoreError> {
        let (_, version) = keys(&self.prefix);
        let mut pipe = ::redis::pipe();
        pipe.get(version);
        let (value,): (Option<u64>,) = self.query(&pipe).await?;
        Ok(value.unwrap_or(0))
    }

    /// The version and every stored override (JSON), read atomically.
    pub async fn overrides_load(&self) -> Result<(u64, Vec<String>), StoreError> {
        let (hash, version) = keys(&self.prefix);
        let mut pipe = ::redis::pipe();
        pipe.atomic().get(version).hvals(hash);
        let (value, all): (Option<u64>, Vec<String>) = self.query(&pipe).await?;
        Ok((value.unwrap_or(0), all))
    }

    /// Stores `put` (descriptor field, override JSON), removes the `delete`
    /// fields, and moves the version, in one transaction; returns the new
    /// version.
    pub async fn overrides_write(
        &self,
        put: Option<(&str, &str)>,
        delete: &[String],
    ) -> Result<u64, StoreError> {
        let (hash, version) = keys(&self.prefix);
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        if let Some((field, value)) = put {
            pipe.hset(&hash, field, value).ignore();
        }
        if !delete.is_empty() {
            pipe.hdel(&hash, delete).ignore();
        }
        pipe.incr(version, 1);
        let (value,): (u64,) = self.query(&pipe).await?;
        Ok(value)
    }
}
