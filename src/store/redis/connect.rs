//! Opening the store: the URL forms (single node, cluster, Sentinel, a
//! socket), TLS files, and connecting now or, when Redis is not reachable
//! yet, in the background with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::Script;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use moka::sync::Cache;

use super::over_limit::OverLimitExpiry;
use super::script::SCRIPT;
use super::{Backend, RedisConfigError, RedisOptions, RedisStore, Shared, StoreMode, sentinel};

impl RedisStore {
    /// Connects to Redis as `options` say. Fails only when the options are
    /// invalid: a Redis that cannot be reached now is connected to in the
    /// background, with backoff, while calls fail with
    /// [`crate::store::StoreError::Unavailable`] (the store-error policy answers them).
    /// Once connected, connections are re-established in the background
    /// after any failure.
    pub async fn connect(options: RedisOptions) -> Result<RedisStore, RedisConfigError> {
        if options.key_prefix.contains(['{', '}']) {
            return Err(RedisConfigError::InvalidPrefix(options.key_prefix));
        }
        let url = options.url.trim();
        let invalid = |reason: &str| RedisConfigError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let tls = options
            .tls
            .as_ref()
            .map(|files| {
                if !["rediss://", "rediss+cluster://", "rediss+sentinel://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                {
                    return Err(invalid(
                        "TLS files (REDIS_TLS_CACERT, REDIS_TLS_CLIENT_CERT) need a TLS URL: \
                         rediss:// (REDIS_TLS=true)",
                    ));
                }
                files.load().map_err(|reason| invalid(&reason))
            })
            .transpose()?;
        // Connecting may take longer than one request may wait; not forever.
        let connect_timeout = options.timeout.max(Duration::from_secs(1));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            // Requests time out on their own (`timeout`); the manager
            // must not give up reconnecting after a few tries.
            .set_response_timeout(None)
            .set_number_of_retries(6)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_secs(2));
        let sentinel = sentinel::SentinelTarget::parse(url, options.sentinel_password.as_deref());
        let connector = if let Some(target) = sentinel {
            if tls.is_some() {
                return Err(invalid(
                    "TLS files (a private CA, a client certificate) are not supported with \
                     Sentinel: the master is verified against the public web PKI roots",
                ));
            }
            Connector::Sentinel {
                target: target.map_err(|reason| invalid(&reason))?,
                config,
                connections: options.connections.max(1),
                timeout: connect_timeout,
            }
        } else if let Some((scheme, rest)) = cluster_url(url) {
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
            let mut builder = ClusterClient::builder(nodes)
                .connection_timeout(connect_timeout)
                .response_timeout(options.timeout);
            if let Some(tls) = tls {
                builder = builder.certs(tls);
            }
            let client = builder.build().map_err(|e| invalid(&e.to_string()))?;
            Connector::Cluster(client)
        } else {
            if !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return Err(invalid(
                    "expected redis://, rediss://, redis+unix://, redis+cluster:// or \
                     redis+sentinel://",
                ));
            }
            let client = match tls {
                Some(tls) => ::redis::Client::build_with_tls(url, tls),
                None => ::redis::Client::open(url),
            }
            .map_err(|e| invalid(&e.to_string()))?;
            Connector::Single {
                client,
                config,
                connections: options.connections.max(1),
            }
        };
        let cluster = matches!(connector, Connector::Cluster(_));
        let shared = Arc::new(Shared::default());
        match connector.connect(connect_timeout).await {
            Ok(backend) => {
                let _ = shared.backend.set(backend);
            }
            Err(error) => {
                // Pods start in any order: serve now (requests get the
                // store-error policy) and connect in the background.
                tracing::warn!(
                    url = %redact(url),
                    %error,
                    "Redis is not reachable at start: serving with the store-error policy \
                     and connecting in the background"
                );
                tokio::spawn(connect_in_background(
                    connector,
                    Arc::clone(&shared),
                    connect_timeout,
                    redact(url),
                ));
            }
        }
        let over_limit = (options.over_limit_cache > 0).then(|| {
            Cache::builder()
                .max_capacity(options.over_limit_cache)
                .expire_after(OverLimitExpiry)
                .build()
        });
        let script = Script::new(SCRIPT);
        let batcher = super::batch::Batcher::start(
            &shared,
            &script,
            if cluster {
                super::batch::CLUSTER_LANES
            } else {
                options.connections.max(1)
            },
            options.time_source,
            options.timeout,
            cluster,
        );
        Ok(RedisStore {
            batcher,
            shared,
            prefix: options.key_prefix.into_bytes().into_boxed_slice(),
            timeout: options.timeout,
            time_source: options.time_source,
            over_limit,
            script,
            leases: (options.mode == StoreMode::Leased)
                .then(|| Arc::new(super::lease::Leases::new())),
        })
    }
}

/// The reference's `REDIS_TLS_CACERT`, `REDIS_TLS_CLIENT_CERT` and
/// `REDIS_TLS_CLIENT_KEY`: PEM files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisTlsFiles {
    /// Trust only this CA (instead of the public web PKI roots).
    pub ca: Option<std::path::PathBuf>,
    /// Present this client certificate (needs `client_key`).
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key.
    pub client_key: Option<std::path::PathBuf>,
}

impl RedisTlsFiles {
    /// The files read, for the Redis client.
    fn load(&self) -> Result<::redis::TlsCertificates, String> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let client_tls = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(::redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(
                    "a Redis client certificate needs both its certificate and its key \
                     (REDIS_TLS_CLIENT_CERT and REDIS_TLS_CLIENT_KEY)"
                        .to_owned(),
                );
            }
        };
        let root_cert = self.ca.as_deref().map(read).transpose()?;
        Ok(::redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

/// How to open the connections, kept by the background connector while
/// Redis is not reachable yet.
enum Connector {
    Single {
        client: ::redis::Client,
        config: ConnectionManagerConfig,
        connections: usize,
    },
    Cluster(ClusterClient),
    Sentinel {
        target: sentinel::SentinelTarget,
        config: ConnectionManagerConfig,
        connections: usize,
        timeout: Duration,
    },
}

impl Connector {
    /// Opens every connection, within `timeout`.
    async fn connect(&self, timeout: Duration) -> Result<Backend, String> {
        let connect = async {
            match self {
                Connector::Single {
                    client,
                    config,
                    connections,
                } => {
                    let mut managers = Vec::with_capacity(*connections);
                    for _ in 0..*connections {
                        let manager =
                            ConnectionManager::new_with_config(client.clone(), config.clone())
                                .await?;
                        managers.push(manager);
                    }
                    Ok(Backend::Single {
                        connections: managers,
                        next: AtomicUsize::new(0),
                    })
                }
                Connector::Cluster(client) => {
                    Ok(Backend::Cluster(client.get_async_connection().await?))
                }
                Connector::Sentinel {
                    target,
                    config,
                    connections,
                    timeout,
                } => {
                    let client = target.client().map_err(|e| {
                        ::redis::RedisError::from((
                            ::redis::ErrorKind::InvalidClientConfig,
                            "invalid sentinel",
                            e,
                        ))
                    })?;
                    let backend = sentinel::SentinelBackend::connect(
                        client,
                        config.clone(),
                        *connections,
                        *timeout,
                    )
                    .await?;
                    Ok(Backend::Sentinel(Arc::new(backend)))
                }
            }
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(backend)) => Ok(backend),
            Ok(Err(e)) => Err(::redis::RedisError::to_string(&e)),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// The first wait before connecting again to a Redis that was not
/// reachable at start; it doubles up to [`CONNECT_RETRY_MAX`].
const CONNECT_RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest wait between two connection attempts at start.
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(5);

/// Connects `connector` until it succeeds, waiting longer after each
/// failure, then hands the connections to the store and reports Redis
/// reachable.
async fn connect_in_background(
    connector: Connector,
    shared: Arc<Shared>,
    timeout: Duration,
    url: String,
) {
    let mut wait = CONNECT_RETRY_FIRST;
    let mut attempts: u64 = 1;
    loop {
        tokio::time::sleep(wait).await;
        attempts += 1;
        match connector.connect(timeout).await {
            Ok(backend) => {
                let _ = shared.backend.set(backend);
                tracing::info!(%url, attempts, "connected to Redis");
                if let Some(reachability) = shared.reachability.get() {
                    reachability.record(true);
                    reachability.probing.store(false, Ordering::Release);
                }
                return;
            }
            Err(error) => {
                tracing::debug!(%url, %error, attempts, "Redis still not reachable");
                wait = (wait * 2).min(CONNECT_RETRY_MAX);
            }
        }
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
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
