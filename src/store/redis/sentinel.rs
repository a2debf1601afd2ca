//! Redis behind Sentinel: the master is asked of the sentinels, and asked
//! again when it stops taking writes (it went away, or a failover made it a
//! replica: `READONLY`), so the store follows a failover by itself.
//!
//! URL: `redis+sentinel://[user:password@]host:port[,host:port...]/master-name[/db]`
//! (`rediss+sentinel://` for TLS to the master); the credentials are the
//! master's. The sentinels' own password is
//! [`super::RedisOptions::sentinel_password`] (the reference's
//! `REDIS_SENTINEL_AUTH`). The reference's form, `REDIS_TYPE=sentinel` with
//! `REDIS_URL=master-name,host:port,host:port`, is turned into this URL by
//! the command line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use ::redis::{RedisConnectionInfo, RedisError, TlsMode};
use arc_swap::ArcSwap;

/// The shortest time between two look-ups of the master.
const RESOLVE_INTERVAL: Duration = Duration::from_millis(200);

/// Where the sentinels are and which master to ask them for.
pub(super) struct SentinelTarget {
    sentinels: Vec<String>,
    master: String,
    tls: bool,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

impl SentinelTarget {
    /// Parses a `redis+sentinel://` or `rediss+sentinel://` URL; `None` for
    /// any other URL, `Some(Err)` for a sentinel URL that is malformed.
    pub(super) fn parse(
        url: &str,
        sentinel_password: Option<&str>,
    ) -> Option<Result<SentinelTarget, String>> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            (false, rest)
        } else {
            (true, url.strip_prefix("rediss+sentinel://")?)
        };
        Some(SentinelTarget::parse_rest(rest, tls, sentinel_password))
    }

    fn parse_rest(
        rest: &str,
        tls: bool,
        sentinel_password: Option<&str>,
    ) -> Result<SentinelTarget, String> {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or("a sentinel URL ends with /master-name")?;
        let (master, db) = match path.split_once('/') {
            Some((master, db)) => (
                master,
                db.parse::<i64>()
                    .map_err(|_| format!("the database {db:?} is not a number"))?,
            ),
            None => (path, 0),
        };
        if master.is_empty() {
            return Err("a sentinel URL names its master: .../master-name".to_owned());
        }
        let sentinel_auth = sentinel_password
            .filter(|p| !p.is_empty())
            .map(|p| format!(":{}@", percent_encode(p)))
            .unwrap_or_default();
        let sentinels: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{sentinel_auth}{h}"))
            .collect();
        if sentinels.is_empty() {
            return Err("a sentinel URL needs at least one sentinel host:port".to_owned());
        }
        let (username, password) = match auth.map(|a| a.split_once(':')) {
            Some(Some((user, password))) => (
                (!user.is_empty()).then(|| percent_decode(user)),
                Some(percent_decode(password)),
            ),
            Some(None) => (None, auth.map(percent_decode)),
            None => (None, None),
        };
        Ok(SentinelTarget {
            sentinels,
            master: master.to_owned(),
            tls,
            username,
            password,
            db,
        })
    }

    /// A client of the sentinels (it connects on use).
    pub(super) fn client(&self) -> Result<SentinelClient, String> {
        let mut redis = RedisConnectionInfo::default().set_db(self.db);
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis);
        if self.tls {
            node = node.set_tls_mode(TlsMode::Secure);
        }
        SentinelClient::build(
            self.sentinels.clone(),
            self.master.as_str(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|e| e.to_string())
    }
}

/// What may not appear raw in a URL's user info, `%XX`-escaped: how a
/// password goes into a Redis URL (the command line builds them too).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `%XX` escapes decoded (user info in a URL).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connections to the master the sentinels name now.
pub(super) struct SentinelBackend {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    connections: ArcSwap<Vec<ConnectionManager>>,
    next: AtomicUsize,
    config: ConnectionManagerConfig,
    count: usize,
    resolving: AtomicBool,
    timeout: Duration,
}

impl SentinelBackend {
    /// Asks the sentinels for the master and connects to it.
    pub(super) async fn connect(
        mut sentinel: SentinelClient,
        config: ConnectionManagerConfig,
        count: usize,
        timeout: Duration,
    ) -> Result<SentinelBackend, RedisError> {
        let connections = master_connections(&mut sentinel, &config, count).await?;
        Ok(SentinelBackend {
            sentinel: tokio::sync::Mutex::new(sentinel),
            connections: ArcSwap::from_pointee(connections),
            next: AtomicUsize::new(0),
            config,
            count,
            resolving: AtomicBool::new(false),
            timeout,
        })
    }

    /// The next connection to the master, round-robin.
    pub(super) fn connection(&self) -> Option<ConnectionManager> {
        let connections = self.connections.load();
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % connections.len().max(1);
        connections.get(slot).cloned()
    }

    /// After a failed call: when the error says the master may have moved,
    /// look it up again in the background (one look-up at a time).
    pub(super) fn failed(self: &Arc<Self>, error: &RedisError) {
        let moved = error.is_connection_dropped()
            || error.is_io_error()
            || error.is_timeout()
            || matches!(
                error.kind(),
                ::redis::ErrorKind::Server(
                    ::redis::ServerErrorKind::ReadOnly | ::redis::ServerErrorKind::MasterDown
                )
            );
        if moved && !self.resolving.swap(true, Ordering::AcqRel) {
            let backend = Arc::clone(self);
            tokio::spawn(async move { backend.resolve().await });
        }
    }

    /// Asks the sentinels for the master and swaps in connections to it.
    async fn resolve(self: Arc<Self>) {
        tokio::time::sleep(RESOLVE_INTERVAL).await;
        let mut sentinel = self.sentinel.lock().await;
        let found = tokio::time::timeout(
            self.timeout,
            master_connections(&mut sentinel, &self.config, self.count),
        )
        .await;
        drop(sentinel);
        match found {
            Ok(Ok(connections)) => {
                self.connections.store(Arc::new(connections));
                tracing::info!("asked Redis Sentinel for the master again");
            }
            Ok(Err(error)) => tracing::warn!(%error, "Redis Sentinel names no reachable master"),
            Err(_) => tracing::warn!("Redis Sentinel did not answer in time"),
        }
        self.resolving.store(false, Ordering::Release);
    }
}

/// `count` connections to the master the sentinels name now.
async fn master_connections(
    sentinel: &mut SentinelClient,
    config: &ConnectionManagerConfig,
    count: usize,
) -> Result<Vec<ConnectionManager>, RedisError> {
    let client = sentinel.async_get_client().await?;
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        connections.push(ConnectionManager::new_with_config(client.clone(), config.clone()).await?);
    }
    Ok(connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        let target = SentinelTarget::parse(
            "redis+sentinel://u:p%40ss@10.0.0.1:26379, 10.0.0.2:26379/mymaster/2",
            Some("s3cret"),
        )
        .expect("a sentinel URL")
        .expect("valid");
        assert_eq!(
            target.sentinels,
            [
                "redis://:s3cret@10.0.0.1:26379",
                "redis://:s3cret@10.0.0.2:26379"
            ]
        );
        assert_eq!(target.master, "mymaster");
        assert_eq!(target.db, 2);
        assert_eq!(target.username.as_deref(), Some("u"));
        assert_eq!(target.password.as_deref(), Some("p@ss"));
        assert!(!target.tls);
        assert!(SentinelTarget::parse("redis://h:1", None).is_none());
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel:///m",
            "redis+sentinel://h:1/m/x",
        ] {
            assert!(
                SentinelTarget::parse(bad, None).is_some_and(|r| r.is_err()),
                "{bad}"
            );
        }
    }
}
