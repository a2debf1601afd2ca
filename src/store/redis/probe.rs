//! Whether Redis answers: transitions reported to [`Health`], and while it
//! does not, a background `PING` every [`PROBE_INTERVAL`] so health
//! recovers without traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::Value;
use ::redis::aio::ConnectionManager;
use ::redis::cluster_async::ClusterConnection;

use crate::health::Health;

/// How often an unreachable Redis is sent `PING`.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Whether Redis answers, reported to a [`Health`] on transitions only.
#[derive(Debug)]
pub(super) struct Reachability {
    pub(super) health: Health,
    pub(super) reachable: AtomicBool,
    /// A `PING` probe task is running.
    pub(super) probing: AtomicBool,
}

impl Reachability {
    /// Records a call's outcome; true when Redis just became unreachable
    /// and nobody probes it yet (the caller starts the probe).
    pub(super) fn record(&self, answered: bool) -> bool {
        if self.reachable.load(Ordering::Acquire) == answered {
            return false;
        }
        if self.reachable.swap(answered, Ordering::AcqRel) != answered {
            self.health.set_store_reachable(answered);
            if answered {
                tracing::info!("Redis answers again");
            } else {
                tracing::warn!("Redis is unreachable");
            }
        }
        !answered && !self.probing.swap(true, Ordering::AcqRel)
    }
}

/// Sends `PING` every [`PROBE_INTERVAL`] until Redis answers within
/// `timeout` (or a request's success reports it first).
pub(super) async fn probe(
    reachability: Arc<Reachability>,
    mut connection: Pinger,
    timeout: Duration,
) {
    loop {
        while !reachability.reachable.load(Ordering::Acquire) {
            tokio::time::sleep(PROBE_INTERVAL).await;
            if connection.ping(timeout).await {
                reachability.record(true);
            }
        }
        reachability.probing.store(false, Ordering::Release);
        // Unreachable again between the last check and the flag: whoever
        // saw it found the probe still running, so go on probing.
        if reachability.reachable.load(Ordering::Acquire)
            || reachability.probing.swap(true, Ordering::AcqRel)
        {
            return;
        }
    }
}

/// A connection to send `PING` on.
pub(super) enum Pinger {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// The master the sentinels name now; a failed `PING` asks them again.
    Sentinel(Arc<super::sentinel::SentinelBackend>),
}

impl Pinger {
    /// Whether Redis answers `PING` within `timeout`.
    async fn ping(&mut self, timeout: Duration) -> bool {
        let command = ::redis::cmd("PING");
        let answer = async {
            match self {
                Pinger::Single(connection) => command.query_async::<Value>(connection).await,
                Pinger::Cluster(connection) => command.query_async::<Value>(connection).await,
                Pinger::Sentinel(sentinel) => {
                    let mut connection = sentinel.connection().ok_or_else(|| {
                        ::redis::RedisError::from((
                            ::redis::ErrorKind::Io,
                            "no connection to the master",
                        ))
                    })?;
                    let answer = command.query_async::<Value>(&mut connection).await;
                    if let Err(error) = &answer {
                        sentinel.failed(error);
                    }
                    answer
                }
            }
        };
        matches!(tokio::time::timeout(timeout, answer).await, Ok(Ok(_)))
    }
}
