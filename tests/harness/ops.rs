//! An in-process server that loads (and reloads) its rules from a config
//! path, with an admin listener; reading Prometheus text; waiting for
//! something with a bounded poll; writing config files as deploy tools do.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use floodgate::clock::ManualClock;
use floodgate::config::{self, LoadOptions, Source};
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::health::Health;
use floodgate::limit::NANOS_PER_SECOND;
use floodgate::proto::{RateLimitRequest, RateLimitServiceClient};
use floodgate::rules::RuleSet;
use floodgate::server::{self, ConfigSource, Listeners, Running, ServerOptions};
use floodgate::store::memory::MemoryStore;
use tonic::transport::Channel;

use super::http::http_get;

/// One hour into a day window (and far from any minute boundary), so the
/// fixed windows of a test never roll over.
pub const START: u64 = (20_000 * 86_400 + 3_600 + 30) * NANOS_PER_SECOND;

/// Loopback, any free port.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// How a test server is set up.
pub struct Setup {
    /// Watch the config path for changes.
    pub watch: bool,
    /// Start with no rules (not serving until a load succeeds).
    pub without_rules: bool,
    /// The health state to share.
    pub health: Health,
    /// A runtime root symlink to watch too.
    pub watch_root: Option<std::path::PathBuf>,
    /// Refuse a load with no rules while rules are serving.
    pub refuse_empty: bool,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            watch: true,
            without_rules: false,
            health: Health::new(),
            watch_root: None,
            refuse_empty: false,
        }
    }
}

/// A started server with its clock.
pub struct Server {
    pub running: Running,
    pub clock: ManualClock,
}

impl Server {
    pub fn admin(&self) -> SocketAddr {
        self.running
            .admin_addr
            .expect("the test servers have an admin listener")
    }

    pub async fn grpc(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(format!("http://{}", self.running.grpc_addr))
            .await
            .expect("connect over gRPC")
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.running.http_addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Starts a server reloading from `path`, with an admin listener.
pub async fn start(path: &Path, setup: Setup) -> Server {
    let rules = if setup.without_rules {
        RuleSet::empty()
    } else {
        config::load_path(path, &LoadOptions::default()).expect("a valid starting config")
    };
    let clock = ManualClock::new(START);
    let limiter = Arc::new(RateLimiter::new(
        rules,
        MemoryStore::new(10_000),
        Arc::new(clock.clone()),
        ServiceOptions::default(),
    ));
    let listeners = Listeners {
        grpc: any_port(),
        http: any_port(),
    };
    let options = ServerOptions {
        admin: Some(any_port()),
        config: Some(ConfigSource {
            source: Source::Path(path.to_path_buf()),
            refuse_empty: setup.refuse_empty,
            load_options: LoadOptions::default(),
            watch: setup.watch,
            // Several servers share this process: a SIGHUP to it would
            // reload all of them; the binary test covers SIGHUP.
            reload_on_sighup: false,
            watch_root: setup.watch_root,
        }),
        health: setup.health,
        rules_loaded: !setup.without_rules,
        ..ServerOptions::default()
    };
    let running = server::start_with(limiter, &listeners, options)
        .await
        .expect("start the server");
    Server { running, clock }
}

/// The overall code of one call: 1 OK, 2 OVER_LIMIT.
pub async fn decide(
    client: &mut RateLimitServiceClient<Channel>,
    request: RateLimitRequest,
) -> i32 {
    client
        .should_rate_limit(request)
        .await
        .expect("a decision")
        .into_inner()
        .overall_code
}

/// The value of the series `name{labels}` in Prometheus text, e.g.
/// `metric(&text, "floodgate_rule_hits_total", r#"domain="d",rule="d.k""#)`.
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse().ok())
}

/// Polls `check` every 25 ms until it returns true, for at most 5 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Writes `text` to `path` atomically (a temp file renamed over it), as
/// editors and deploy tools do.
pub fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("tmp-write");
    std::fs::write(&temp, text).expect("write the temp file");
    std::fs::rename(&temp, path).expect("rename over the config");
}

/// A one-rule config: `domain` with `key: value` limited to `per_day`.
pub fn one_rule(domain: &str, key: &str, value: &str, per_day: u32) -> String {
    format!(
        "domain: {domain}\ndescriptors:\n  - key: {key}\n    value: {value}\n    rate_limit:\n      unit: day\n      requests_per_unit: {per_day}\n"
    )
}
