//! The reference's stats over statsd: every `STATS_FLUSH_INTERVAL`, what
//! each counter of [`ReferenceStats`] gained since the last flush, as
//! `name:delta|c` lines in UDP datagrams of at most [`MAX_DATAGRAM`] bytes.
//!
//! Requests only add to atomics; this task reads them and sends, so a slow
//! or absent statsd server never delays a decision (a datagram that cannot
//! be sent is dropped, as UDP statsd always may). Counters that gained
//! nothing are not sent, as the reference's client does not send them.
//!
//! Tags (`EXTRA_TAGS`) are written as the reference's clients write them:
//! DogStatsD (`USE_DOG_STATSD`) as `|#key:value,...`; plain statsd appends
//! them to the name as `.__key=value`. The reference sends plain statsd
//! over TCP; floodgate sends UDP, which every statsd server (and
//! statsd_exporter) also accepts, and which can never block.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::observe::reference::ReferenceStats;

/// The largest datagram sent: fits a 1500-byte MTU with IPv6 and UDP
/// headers.
pub const MAX_DATAGRAM: usize = 1432;

/// Where and how to send.
#[derive(Clone, Debug)]
pub struct StatsdOptions {
    /// The statsd server (`STATSD_HOST`:`STATSD_PORT`), resolved when each
    /// flush sends, so a name that starts resolving later still works.
    pub target: String,
    /// How often to flush (`STATS_FLUSH_INTERVAL`).
    pub interval: Duration,
    /// Tags on every line (`EXTRA_TAGS`).
    pub tags: Vec<(String, String)>,
    /// DogStatsD tag syntax (`USE_DOG_STATSD`).
    pub dogstatsd: bool,
}

/// The datagrams of one flush: one line per counter that gained something.
pub fn flush_datagrams(stats: &ReferenceStats, options: &StatsdOptions) -> Vec<String> {
    let mut datagrams = Vec::new();
    let mut current = String::new();
    for stat in stats.stats() {
        let delta = stat.take_delta();
        if delta == 0 {
            continue;
        }
        let line = line(stat.name(), delta, options);
        if !current.is_empty() && current.len() + 1 + line.len() > MAX_DATAGRAM {
            datagrams.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
    }
    if !current.is_empty() {
        datagrams.push(current);
    }
    datagrams
}

fn line(name: &str, delta: u64, options: &StatsdOptions) -> String {
    let mut line = String::from(name);
    if !options.dogstatsd {
        for (key, value) in &options.tags {
            line.push_str(".__");
            line.push_str(key);
            line.push('=');
            line.push_str(value);
        }
    }
    line.push(':');
    line.push_str(&delta.to_string());
    line.push_str("|c");
    if options.dogstatsd && !options.tags.is_empty() {
        line.push_str("|#");
        for (index, (key, value)) in options.tags.iter().enumerate() {
            if index > 0 {
                line.push(',');
            }
            line.push_str(key);
            line.push(':');
            line.push_str(value);
        }
    }
    line
}

/// Flushes every `options.interval` until `stop`, and once more then.
pub fn spawn(
    stats: Arc<ReferenceStats>,
    options: StatsdOptions,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(options.interval.max(Duration::from_millis(1)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        let mut sender = Sender::default();
        loop {
            let stopping = tokio::select! {
                _ = every.tick() => false,
                _ = stop.wait_for(|stop| *stop) => true,
            };
            sender.send(&stats, &options).await;
            if stopping {
                return Ok(());
            }
        }
    })
}

/// A UDP socket of the target's address family, opened when first needed;
/// problems are logged once, not once per flush.
#[derive(Default)]
struct Sender {
    socket: Option<UdpSocket>,
    warned: bool,
}

impl Sender {
    async fn send(&mut self, stats: &ReferenceStats, options: &StatsdOptions) {
        let datagrams = flush_datagrams(stats, options);
        if datagrams.is_empty() {
            return;
        }
        let target: Option<SocketAddr> =
            match tokio::net::lookup_host(options.target.as_str()).await {
                Ok(mut addrs) => addrs.next(),
                Err(_) => None,
            };
        let Some(target) = target else {
            self.warn_once(&options.target, "cannot resolve the statsd server");
            return;
        };
        let family_matches = self
            .socket
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .is_some_and(|local| local.is_ipv6() == target.is_ipv6());
        if !family_matches {
            let any: SocketAddr = if target.is_ipv6() {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            self.socket = UdpSocket::bind(any).await.ok();
        }
        let Some(socket) = &self.socket else {
            self.warn_once(&options.target, "cannot open a UDP socket");
            return;
        };
        for datagram in datagrams {
            // Dropped if it cannot be sent: statsd over UDP is best effort.
            let _ = socket.send_to(datagram.as_bytes(), target).await;
        }
    }

    fn warn_once(&mut self, target: &str, problem: &str) {
        if !self.warned {
            tracing::warn!(
                target,
                "statsd: {problem}; stats are dropped until it works"
            );
            self.warned = true;
        }
    }
}

#[cfg(test)]
mod tests;
