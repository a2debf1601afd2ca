//! A test xDS management server (state of the world over ADS, as Envoy
//! Gateway's go-control-plane server speaks it) and a floodgate fed by it.
//!
//! [`XdsServer`] records every request it receives (with the stream's
//! headers), sends the current snapshot on every stream once the client has
//! subscribed and again whenever a new one is pushed, can close its streams
//! and can be stopped and started again on the same address.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodgate::clock::ManualClock;
use floodgate::config::xds::{RATE_LIMIT_CONFIG_TYPE, XdsSettings};
use floodgate::config::{LoadOptions, Source};
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::health::Health;
use floodgate::proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use floodgate::proto::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use floodgate::proto::ratelimit::config::ratelimit::v3::{
    RateLimitConfig, RateLimitDescriptor, RateLimitPolicy, RateLimitUnit,
};
use floodgate::rules::RuleSet;
use floodgate::server::{self, ConfigSource, Listeners, ServerOptions};
use floodgate::store::memory::MemoryStore;
use futures_util::Stream;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status, Streaming};

use super::ops::{START, Server, any_port};

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Which stream (0, 1, ... in the order they opened).
    pub stream: u64,
    /// The stream's request headers.
    pub headers: Vec<(String, String)>,
    pub request: DiscoveryRequest,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_ack_of(&self, version: &str) -> bool {
        !self.request.response_nonce.is_empty()
            && self.request.error_detail.is_none()
            && self.request.version_info == version
    }

    pub fn nack(&self) -> Option<&str> {
        self.request
            .error_detail
            .as_ref()
            .map(|status| status.message.as_str())
    }
}

/// What every stream is sent.
#[derive(Clone, Debug)]
struct Snapshot {
    version: String,
    type_url: String,
    resources: Vec<prost_types::Any>,
}

struct State {
    requests: parking_lot::Mutex<Vec<Received>>,
    snapshot: watch::Sender<Option<Snapshot>>,
    /// Bumped to close every open stream.
    close: watch::Sender<u64>,
    streams: AtomicU64,
    nonces: AtomicU64,
    /// Nonce of every response sent, with its version.
    sent: parking_lot::Mutex<Vec<(String, String)>>,
}

/// The test management server.
pub struct XdsServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    /// `None` once stopped.
    task: Option<JoinHandle<()>>,
    tls: Option<ServerTlsConfig>,
}

#[derive(Clone)]
struct Service(Arc<State>);

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = Responses;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let headers: Vec<(String, String)> = request
            .metadata()
            .iter()
            .filter_map(|entry| match entry {
                tonic::metadata::KeyAndValueRef::Ascii(key, value) => Some((
                    key.as_str().to_owned(),
                    value.to_str().unwrap_or_default().to_owned(),
                )),
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        let mut inbound = request.into_inner();
        let state = Arc::clone(&self.0);
        let stream = state.streams.fetch_add(1, Ordering::SeqCst);
        let (responses, outbound) = mpsc::channel(16);
        let mut snapshots = state.snapshot.subscribe();
        let mut close = state.close.subscribe();
        tokio::spawn(async move {
            let mut subscribed = false;
            let mut sent_version: Option<String> = None;
            loop {
                tokio::select! {
                    next = inbound.message() => match next {
                        Ok(Some(request)) => {
                            subscribed = true;
                            state.requests.lock().push(Received {
                                stream,
                                headers: headers.clone(),
                                request,
                            });
                        }
                        _ => break,
                    },
                    changed = snapshots.changed() => if changed.is_err() { break },
                    // Dropping the sender ends the stream with an OK status:
                    // the server closed it.
                    _ = close.changed() => break,
                }
                let snapshot = snapshots.borrow_and_update().clone();
                let Some(snapshot) = snapshot else { continue };
                if !subscribed || sent_version.as_deref() == Some(snapshot.version.as_str()) {
                    continue;
                }
                let nonce = format!("n{}", state.nonces.fetch_add(1, Ordering::SeqCst));
                state
                    .sent
                    .lock()
                    .push((nonce.clone(), snapshot.version.clone()));
                let response = DiscoveryResponse {
                    version_info: snapshot.version.clone(),
                    resources: snapshot.resources,
                    canary: false,
                    type_url: snapshot.type_url,
                    nonce,
                };
                if responses.send(Ok(response)).await.is_err() {
                    break;
                }
                sent_version = Some(snapshot.version);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }
}

impl XdsServer {
    /// A plaintext server on a free loopback port.
    pub async fn start() -> XdsServer {
        XdsServer::start_at(any_port(), None).await
    }

    /// A server at `addr` (port 0: a free one), with TLS when given.
    pub async fn start_at(addr: SocketAddr, tls: Option<ServerTlsConfig>) -> XdsServer {
        let (snapshot, _) = watch::channel(None);
        let (close, _) = watch::channel(0);
        let state = Arc::new(State {
            requests: parking_lot::Mutex::new(Vec::new()),
            snapshot,
            close,
            streams: AtomicU64::new(0),
            nonces: AtomicU64::new(0),
            sent: parking_lot::Mutex::new(Vec::new()),
        });
        XdsServer::serve(addr, tls, state).await
    }

    async fn serve(addr: SocketAddr, tls: Option<ServerTlsConfig>, state: Arc<State>) -> XdsServer {
        let listener = TcpListener::bind(addr).await.expect("bind the xDS server");
        let addr = listener.local_addr().expect("its address");
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            builder = builder
                .tls_config(tls.clone())
                .expect("TLS for the xDS server");
        }
        let router = builder.add_service(AggregatedDiscoveryServiceServer::new(Service(
            Arc::clone(&state),
        )));
        let task = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = router.serve_with_incoming(incoming).await;
        });
        XdsServer {
            addr,
            state,
            task: Some(task),
            tls,
        }
    }

    /// Stops this server (its connections drop) and starts another on the
    /// same address with the same snapshot and records: a restart.
    pub async fn restart(self) -> XdsServer {
        let mut old = self;
        if let Some(task) = old.task.take() {
            task.abort();
            let _ = task.await;
        }
        old.close_streams();
        XdsServer::serve(old.addr, old.tls.clone(), Arc::clone(&old.state)).await
    }

    /// Sets the snapshot every stream is sent: the whole rule set.
    pub fn push(&self, version: &str, resources: Vec<prost_types::Any>) {
        self.push_typed(version, RATE_LIMIT_CONFIG_TYPE, resources);
    }

    /// [`XdsServer::push`] with the response's `type_url` as given.
    pub fn push_typed(&self, version: &str, type_url: &str, resources: Vec<prost_types::Any>) {
        self.state.snapshot.send_replace(Some(Snapshot {
            version: version.to_owned(),
            type_url: type_url.to_owned(),
            resources,
        }));
    }

    /// Closes every open stream (the server ends it with an OK status).
    pub fn close_streams(&self) {
        self.state.close.send_modify(|generation| *generation += 1);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().clone()
    }

    /// Streams opened so far.
    pub fn streams(&self) -> u64 {
        self.state.streams.load(Ordering::SeqCst)
    }

    /// The nonce of the response that carried `version` (the last one).
    pub fn nonce_of(&self, version: &str) -> Option<String> {
        self.state
            .sent
            .lock()
            .iter()
            .rev()
            .find(|(_, v)| v == version)
            .map(|(nonce, _)| nonce.clone())
    }

    /// Waits (bounded: hang detection only) for a request that `matches`.
    pub async fn request_where(&self, what: &str, matches: impl Fn(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(found) = self.requests().into_iter().find(|r| matches(r)) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the xDS server never received {what}: {:#?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the ACK of `version`.
    pub async fn ack_of(&self, version: &str) -> Received {
        self.request_where(&format!("an ACK of {version}"), |r| r.is_ack_of(version))
            .await
    }

    /// Waits for a NACK (a request with `error_detail`) answering the
    /// response that carried `version`.
    pub async fn nack_of(&self, version: &str) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(nonce) = self.nonce_of(version) {
                return self
                    .request_where(&format!("a NACK of {version}"), |r| {
                        r.nack().is_some() && r.request.response_nonce == nonce
                    })
                    .await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{version} never sent"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        self.state.close.send_modify(|generation| *generation += 1);
    }
}

/// Settings for a floodgate fed by `server`, reconnecting quickly.
pub fn settings(server: SocketAddr) -> XdsSettings {
    let mut settings = XdsSettings::new(&server.to_string());
    settings.node_id = "envoy-ratelimit".to_owned();
    settings.connect_retry = Duration::from_millis(50);
    settings.backoff.initial = Duration::from_millis(50);
    settings.backoff.max = Duration::from_millis(200);
    settings
}

/// A floodgate (in process, memory store, manual clock, admin listener)
/// whose rules come from the xDS server in `settings`. Health needs no
/// rules unless `rules_required`, as under Envoy Gateway.
pub async fn start_floodgate(settings: XdsSettings, rules_required: bool) -> Server {
    let clock = ManualClock::new(START);
    let limiter = Arc::new(RateLimiter::new(
        RuleSet::empty(),
        MemoryStore::new(10_000),
        Arc::new(clock.clone()),
        ServiceOptions::default(),
    ));
    let health = Health::new();
    health.set_rules_required(rules_required);
    let options = ServerOptions {
        admin: Some(any_port()),
        config: Some(ConfigSource {
            source: Source::Xds(Box::new(settings)),
            refuse_empty: false,
            load_options: LoadOptions::default(),
            watch: false,
            reload_on_sighup: false,
            watch_root: None,
        }),
        health,
        rules_loaded: false,
        ..ServerOptions::default()
    };
    let listeners = Listeners {
        grpc: any_port(),
        http: any_port(),
    };
    let running = server::start_with(limiter, &listeners, options)
        .await
        .expect("start floodgate");
    Server { running, clock }
}

/// A `RateLimitConfig` resource (named after its domain).
pub fn resource(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> prost_types::Any {
    any(&RateLimitConfig {
        name: domain.to_owned(),
        domain: domain.to_owned(),
        descriptors,
    })
}

/// `config` packed as a resource.
pub fn any(config: &RateLimitConfig) -> prost_types::Any {
    prost_types::Any {
        type_url: RATE_LIMIT_CONFIG_TYPE.to_owned(),
        value: config.encode_to_vec(),
    }
}

/// A descriptor `key: value` limited to `per_day`.
pub fn per_day(key: &str, value: &str, limit: u32) -> RateLimitDescriptor {
    RateLimitDescriptor {
        key: key.to_owned(),
        value: value.to_owned(),
        rate_limit: Some(RateLimitPolicy {
            unit: RateLimitUnit::Day as i32,
            requests_per_unit: limit,
            ..RateLimitPolicy::default()
        }),
        ..RateLimitDescriptor::default()
    }
}
