//! The counter store's flags: memory or Redis (the reference's `REDIS_*`
//! variables), exact or leased, and what a request gets when Redis fails.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::super::parse::parse_duration;

use crate::health::Health;
use crate::store::AnyStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::{
    DEFAULT_KEY_PREFIX, RedisOptions, RedisStore, RedisTlsFiles, StoreMode, TimeSource,
    percent_encode,
};

/// What a request gets when the counter store fails (`--on-store-error`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OnStoreError {
    /// OK without limit information (fail open).
    #[default]
    Allow,
    /// OVER_LIMIT (fail closed).
    Deny,
    /// gRPC UNAVAILABLE: Envoy's `failure_mode_deny` decides.
    Error,
}

/// How a fleet shares counters in Redis (`--store-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum StoreModeArg {
    /// Every decision one atomic call: exact counts.
    #[default]
    Exact,
    /// Blocks of fixed windows' quotas and token buckets' tokens claimed
    /// from Redis.
    Leased,
}

/// Whose clock the Redis store counts with (`--store-time`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum StoreTime {
    /// Redis's `TIME`: one clock for the whole fleet.
    #[default]
    Redis,
    /// This instance's clock.
    Local,
}

/// The counter store flags.
///
/// floodgate keeps counters in memory unless `--store` names a Redis URL or,
/// as with the reference server, `REDIS_URL` is set (the reference defaults
/// to Redis with `BACKEND_TYPE=redis` and a nutcracker socket; floodgate
/// needs no Redis unless one is named).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// `memory`, or a Redis URL: `redis://host:port[/db]`, `rediss://...`
    /// (TLS), `redis+unix:///path.sock`, `redis+cluster://h1:p1,h2:p2`.
    #[arg(long = "store", env = "FLOODGATE_STORE")]
    pub url: Option<String>,

    /// How long a request waits for Redis (`10ms`, `0.5s`, `800us`; a bare
    /// number is milliseconds). Keep it under Envoy's rate-limit timeout
    /// (20 ms by default) so floodgate's failure policy answers first.
    #[arg(long, env = "FLOODGATE_STORE_TIMEOUT", default_value = "10ms", value_parser = parse_duration)]
    pub store_timeout: Duration,

    /// What a request gets when Redis is down or too slow.
    #[arg(long, env = "FLOODGATE_ON_STORE_ERROR", value_enum, default_value_t = OnStoreError::Allow)]
    pub on_store_error: OnStoreError,

    /// Prepended to every Redis key, so deployments can share one Redis.
    #[arg(long, env = "FLOODGATE_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,

    /// `exact` (every decision one atomic call to Redis) or `leased` (fixed
    /// windows and token buckets admitted from blocks of quota or tokens
    /// claimed from Redis: never more than the limit fleet-wide, far fewer
    /// round trips; README "Leased mode").
    #[arg(long, env = "FLOODGATE_STORE_MODE", value_enum, default_value_t = StoreModeArg::Exact)]
    pub store_mode: StoreModeArg,

    /// Whose clock Redis counters use.
    #[arg(long, env = "FLOODGATE_STORE_TIME", value_enum, default_value_t = StoreTime::Redis)]
    pub store_time: StoreTime,

    /// The reference's Redis address (`host:port`, or a socket path), used
    /// when `--store` is not given.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// `tcp` or `unix` (default: `unix` when `REDIS_URL` starts with `/`).
    #[arg(long, env = "REDIS_SOCKET_TYPE")]
    pub redis_socket_type: Option<String>,

    /// `single`, `cluster` (`REDIS_URL` then lists `host:port,host:port`) or
    /// `sentinel` (`REDIS_URL` is `master-name,host:port,host:port`: the
    /// master's name, then the sentinels).
    #[arg(long, env = "REDIS_TYPE", default_value = "single")]
    pub redis_type: String,

    /// The password of the Redis Sentinels themselves (`REDIS_AUTH` is the
    /// master's).
    #[arg(long, env = "REDIS_SENTINEL_AUTH", hide_env_values = true)]
    pub redis_sentinel_auth: Option<String>,

    /// Redis password, or `user:password`.
    #[arg(long, env = "REDIS_AUTH", hide_env_values = true)]
    pub redis_auth: Option<String>,

    /// Connect to Redis over TLS.
    #[arg(long, env = "REDIS_TLS")]
    pub redis_tls: bool,

    /// Trust only this CA (PEM) for Redis over TLS, instead of the public
    /// web PKI roots (a private CA, as managed Redis services use).
    #[arg(long, env = "REDIS_TLS_CACERT")]
    pub redis_tls_cacert: Option<std::path::PathBuf>,

    /// Present this client certificate (PEM) to Redis over TLS.
    #[arg(long, env = "REDIS_TLS_CLIENT_CERT")]
    pub redis_tls_client_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of `--redis-tls-client-cert`.
    #[arg(long, env = "REDIS_TLS_CLIENT_KEY")]
    pub redis_tls_client_key: Option<std::path::PathBuf>,

    /// Report NOT_SERVING while Redis is unreachable even under
    /// `--on-store-error allow` (with `deny` or `error` it always is).
    #[arg(long, env = "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION")]
    pub redis_health_check_active_connection: bool,
}

impl StoreArgs {
    /// The Redis URL the flags name, or `None` for the memory store.
    pub fn redis_url(&self) -> Result<Option<String>, String> {
        if let Some(url) = &self.url {
            return Ok((!url.trim().eq_ignore_ascii_case("memory")).then(|| url.trim().to_owned()));
        }
        let Some(address) = self.redis_url.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if address.contains("://") {
            return Ok(Some(address.to_owned()));
        }
        let unix = match self.redis_socket_type.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("unix") => true,
            Some(t) if t.eq_ignore_ascii_case("tcp") => false,
            Some(t) => return Err(format!("REDIS_SOCKET_TYPE must be tcp or unix, not {t:?}")),
            None => address.starts_with('/'),
        };
        if unix {
            return Ok(Some(format!("redis+unix://{address}")));
        }
        let mut scheme = String::from(if self.redis_tls { "rediss" } else { "redis" });
        let mut address = address.to_owned();
        if self.redis_type.eq_ignore_ascii_case("cluster") {
            scheme.push_str("+cluster");
        } else if self.redis_type.eq_ignore_ascii_case("sentinel") {
            // The reference's form: the master's name, then the sentinels.
            let Some((master, sentinels)) = address.split_once(',') else {
                return Err(format!(
                    "with REDIS_TYPE=sentinel, REDIS_URL is master-name,host:port[,host:port...], \
                     not {address:?}"
                ));
            };
            address = format!("{}/{}", sentinels.trim(), master.trim());
            scheme.push_str("+sentinel");
        } else if !self.redis_type.eq_ignore_ascii_case("single") {
            return Err(format!(
                "REDIS_TYPE must be single, cluster or sentinel, not {:?}",
                self.redis_type
            ));
        }
        let auth = match self.redis_auth.as_deref().filter(|a| !a.is_empty()) {
            Some(auth) => match auth.split_once(':') {
                Some((user, password)) => {
                    format!("{}:{}@", percent_encode(user), percent_encode(password))
                }
                None => format!(":{}@", percent_encode(auth)),
            },
            None => String::new(),
        };
        Ok(Some(format!("{scheme}://{auth}{address}")))
    }

    /// Whether an unreachable store should make the server NOT_SERVING:
    /// when store errors deny or fail requests, or when asked to.
    pub fn outage_makes_unhealthy(&self) -> bool {
        self.on_store_error != OnStoreError::Allow || self.redis_health_check_active_connection
    }

    /// Opens the store the flags name; a Redis store reports whether it is
    /// reachable to `health`.
    pub async fn open(&self, max_counters: u64, health: &Health) -> Result<AnyStore, String> {
        let Some(url) = self.redis_url()? else {
            if self.store_mode == StoreModeArg::Leased {
                return Err(
                    "--store-mode leased shares quotas through Redis: name one with --store \
                     or REDIS_URL"
                        .to_owned(),
                );
            }
            return Ok(AnyStore::Memory(MemoryStore::new(max_counters)));
        };
        let options = RedisOptions {
            key_prefix: self.key_prefix.clone(),
            timeout: self.store_timeout,
            time_source: match self.store_time {
                StoreTime::Redis => TimeSource::Redis,
                StoreTime::Local => TimeSource::Caller,
            },
            sentinel_password: self.redis_sentinel_auth.clone(),
            mode: match self.store_mode {
                StoreModeArg::Exact => StoreMode::Exact,
                StoreModeArg::Leased => StoreMode::Leased,
            },
            tls: (self.redis_tls_cacert.is_some()
                || self.redis_tls_client_cert.is_some()
                || self.redis_tls_client_key.is_some())
            .then(|| RedisTlsFiles {
                ca: self.redis_tls_cacert.clone(),
                client_cert: self.redis_tls_client_cert.clone(),
                client_key: self.redis_tls_client_key.clone(),
            }),
            ..RedisOptions::new(url)
        };
        RedisStore::connect(options)
            .await
            .map(|store| AnyStore::Redis(store.with_health(health.clone())))
            .map_err(|e| e.to_string())
    }
}
