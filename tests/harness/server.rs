//! An in-process floodgate on 127.0.0.1:0 (gRPC and HTTP) with a manual
//! clock, the limiter itself (for hot swaps) and a connected tonic client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use floodgate::clock::ManualClock;
use floodgate::config::{self, LoadOptions};
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::limit::{NANOS_PER_SECOND, Nanos};
use floodgate::proto::{RateLimitRequest, RateLimitResponse, RateLimitServiceClient};
use floodgate::respond::ResponseOptions;
use floodgate::rules::RuleSet;
use floodgate::server::{self, Listeners, Running, ServerOptions};
use floodgate::store::memory::MemoryStore;
use tonic::transport::Channel;

/// 2023-11-15T00:00:00Z in seconds: a day boundary, so second, minute, hour
/// and day windows all start here.
pub const START_SECS: u64 = 1_700_006_400;

/// [`START_SECS`] in nanoseconds: where [`TestServer::start`]'s clock begins.
pub const START: Nanos = START_SECS * NANOS_PER_SECOND;

/// 2023-11-14T22:13:00Z in seconds: the start of a minute, of a 30-minute
/// window and of an hour (1_699_999_200 is a multiple of 3600).
pub const HOUR_START: u64 = 1_699_999_200;

/// Counters the test servers' memory store holds.
pub const MAX_COUNTERS: u64 = 10_000;

/// Seconds to nanoseconds.
pub const fn secs(s: u64) -> Nanos {
    s * NANOS_PER_SECOND
}

/// A running server, its clock, its limiter and a client.
pub struct TestServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub clock: ManualClock,
    pub client: RateLimitServiceClient<Channel>,
    pub limiter: Arc<RateLimiter<MemoryStore>>,
    running: Running,
}

/// The decision path's options and what the transports put in answers.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub service: ServiceOptions,
    pub response: ResponseOptions,
}

impl From<ServiceOptions> for Options {
    fn from(service: ServiceOptions) -> Options {
        Options {
            service,
            ..Options::default()
        }
    }
}

impl TestServer {
    /// Serves one YAML text with default options, the clock at [`START`].
    pub async fn start(yaml: &str) -> TestServer {
        TestServer::start_with(yaml, ServiceOptions::default(), LoadOptions::default()).await
    }

    /// Serves one YAML text with `options`, the clock at [`START`].
    pub async fn start_with(
        yaml: &str,
        options: impl Into<Options>,
        load: LoadOptions,
    ) -> TestServer {
        TestServer::serve(load_yaml(yaml, &load), options).await
    }

    /// Serves one YAML text with default options, the clock at `now`.
    pub async fn yaml_at(yaml: &str, now: Nanos) -> TestServer {
        TestServer::serve_at(rules(yaml), ServiceOptions::default(), now).await
    }

    /// Serves the shipped `config/` directory with default options, the
    /// clock at `now`.
    pub async fn shipped_at(now: Nanos) -> TestServer {
        TestServer::serve_at(shipped_rules(), ServiceOptions::default(), now).await
    }

    /// Serves a rule set, the clock at [`START`].
    pub async fn serve(rules: RuleSet, options: impl Into<Options>) -> TestServer {
        TestServer::serve_at(rules, options, START).await
    }

    /// Serves a rule set with `options`, the clock at `now`; the store holds
    /// [`MAX_COUNTERS`] counters.
    pub async fn serve_at(rules: RuleSet, options: impl Into<Options>, now: Nanos) -> TestServer {
        let Options { service, response } = options.into();
        let clock = ManualClock::new(now);
        let limiter = Arc::new(RateLimiter::new(
            rules,
            MemoryStore::new(MAX_COUNTERS),
            Arc::new(clock.clone()),
            service,
        ));
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let running = server::start_with(
            Arc::clone(&limiter),
            &Listeners {
                grpc: any,
                http: any,
            },
            ServerOptions {
                response,
                ..ServerOptions::default()
            },
        )
        .await
        .expect("server starts");
        let client = connect(running.grpc_addr).await;
        TestServer {
            grpc_addr: running.grpc_addr,
            http_addr: running.http_addr,
            clock,
            client,
            limiter,
            running,
        }
    }

    /// A new client on its own connection.
    pub async fn new_client(&self) -> RateLimitServiceClient<Channel> {
        connect(self.grpc_addr).await
    }

    /// Sends a request, expecting an answer.
    pub async fn send(&mut self, request: RateLimitRequest) -> RateLimitResponse {
        match self.client.should_rate_limit(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => panic!("expected an answer, got {status:?}"),
        }
    }

    /// Sends a request, returning the gRPC error if any.
    pub async fn try_send(
        &mut self,
        request: RateLimitRequest,
    ) -> Result<RateLimitResponse, tonic::Status> {
        self.client
            .should_rate_limit(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Asks about `domain` and `descriptors` (each a list of key/value pairs).
    pub async fn should(
        &mut self,
        domain: &str,
        descriptors: &[&[(&str, &str)]],
    ) -> RateLimitResponse {
        self.send(super::request(domain, descriptors)).await
    }

    /// Moves the clock forward by whole seconds.
    pub fn advance_secs(&self, seconds: u64) {
        self.clock.advance(secs(seconds));
    }

    /// Sets the clock to `START + seconds`.
    pub fn at_secs(&self, seconds: u64) {
        self.clock.set(START + secs(seconds));
    }

    /// Stops the server, expecting a clean shutdown.
    pub async fn shutdown(self) {
        drop(self.client);
        self.running.shutdown().await.expect("clean shutdown");
    }
}

async fn connect(addr: SocketAddr) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client connects")
}

/// Rules from one YAML text named `test.yaml`, panicking with the errors.
pub fn load_yaml(yaml: &str, load: &LoadOptions) -> RuleSet {
    config::load_sources(&[(PathBuf::from("test.yaml"), yaml.to_owned())], load)
        .unwrap_or_else(|errors| panic!("config should load:\n{errors}"))
}

/// Rules from one YAML text, default load options.
pub fn rules(yaml: &str) -> RuleSet {
    load_yaml(yaml, &LoadOptions::default())
}

/// The shipped `config/` directory.
pub fn shipped_rules() -> RuleSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    config::load_path(&dir, &LoadOptions::default())
        .unwrap_or_else(|errors| panic!("config/ should load:\n{errors}"))
}
