//! The transports at the edge: gRPC (RLS v3, health, reflection) and HTTP
//! (`/json`, `/healthcheck`, `/metrics`), plus the admin server and config
//! reload, started together and stopped together.
//!
//! [`start`] binds both listeners (port 0 picks a free port, which tests
//! use), serves until [`Running::shutdown`] is called, then stops accepting
//! and lets in-flight requests finish. [`start_with`] also takes
//! [`ServerOptions`]: an admin listener, a config source to reload from, the
//! near-limit ratio, and a shared [`Health`].

mod admin;
mod aging;
mod grpc;
mod health_watch;
mod http;
pub(crate) mod json;
mod malformed;
mod prometheus;
pub mod reload;
mod shutdown;
mod tls;
pub mod xds;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

pub use admin::overrides::OverrideOptions;
pub use grpc::{GrpcService, status_of};
pub use reload::{ConfigSource, ReloadOutcome, ReloadStatus, Reloader, XdsStatus};
pub use shutdown::ShutdownError;
pub use tls::{LoadedTls, TlsError, TlsFiles};

use crate::config::{ConfigErrors, Loaded, Source};
use crate::decide::RateLimiter;
use crate::health::Health;
use crate::observe::metrics::{DEFAULT_NEAR_LIMIT_RATIO, Metrics};
use crate::observe::reference::ReferenceStats;
use crate::observe::statsd::StatsdOptions;
use crate::observe::traces::Traces;
use crate::proto::{FILE_DESCRIPTOR_SET, RateLimitServiceServer};
use crate::respond::ResponseOptions;
use crate::store::CounterStore;

/// The health service name the reference registers, which Istio's and
/// Envoy's examples probe.
pub const HEALTH_SERVICE_NAME: &str = "ratelimit";

/// Where to listen.
#[derive(Clone, Debug)]
pub struct Listeners {
    /// The gRPC address (RLS, health, reflection).
    pub grpc: SocketAddr,
    /// The HTTP address (`/json`, `/healthcheck`).
    pub http: SocketAddr,
}

/// Which of the server's listeners an address is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// The gRPC address.
    Grpc,
    /// The HTTP address.
    Http,
    /// The admin address.
    Admin,
}

/// A listener that could not be bound, carried inside the `io::Error`
/// [`start_with`] returns (find it with `get_ref` and `downcast_ref`), so
/// that the command line can name the flag that set the address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({listener:?} address): {source}")]
pub struct BindError {
    /// The listener.
    pub listener: ListenerKind,
    /// The address it was asked to bind.
    pub addr: SocketAddr,
    /// Why it could not.
    #[source]
    pub source: std::io::Error,
}

async fn bind(listener: ListenerKind, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| {
        std::io::Error::new(
            source.kind(),
            BindError {
                listener,
                addr,
                source,
            },
        )
    })
}

/// What [`start_with`] adds to [`start`].
#[derive(Debug)]
pub struct ServerOptions {
    /// Where the admin server listens; `None`: no admin server.
    pub admin: Option<SocketAddr>,
    /// Where to reload rules from (file watch, SIGHUP, `POST /reload`);
    /// `None`: the limiter's rules never change. When set, the server loads
    /// it once at start, so the reload status has a version from the outset.
    pub config: Option<ConfigSource>,
    /// A load of `config` already made (by `floodgate serve`, to refuse a
    /// bad config before listening): recorded as the first load instead of
    /// loading again. `None`: the server loads `config` at start.
    pub initial_load: Option<Result<Loaded, ConfigErrors>>,
    /// Hits above this share of a limit count as near the limit.
    pub near_limit_ratio: f32,
    /// The health state to report; a store may hold a clone to report
    /// itself unreachable.
    pub health: Health,
    /// The limiter's rules are a real config. `false` when it was started
    /// with a placeholder: the server is then not serving until a load from
    /// `config` succeeds.
    pub rules_loaded: bool,
    /// TLS (and, with a client CA, mutual TLS) on the gRPC port; plaintext
    /// when `None`. The HTTP port stays plaintext, as in the reference.
    pub tls: Option<LoadedTls>,
    /// gRPC connections older than the first are told to go away (GOAWAY)
    /// and closed after the second (the reference's
    /// `GRPC_MAX_CONNECTION_AGE` and `_GRACE`); `None`: never.
    pub max_connection_age: Option<(Duration, Duration)>,
    /// What answers carry besides statuses (the reference's limit headers,
    /// dynamic metadata), on gRPC and `/json` alike.
    pub response: ResponseOptions,
    /// The reference-named stats and their sinks; `None`: not kept
    /// (`DISABLE_STATS`, or neither statsd nor `USE_PROMETHEUS`).
    pub reference: Option<ReferenceSinks>,
    /// OpenTelemetry traces of gRPC requests; `None`: off. Exported until
    /// the server stops, then flushed.
    pub traces: Option<Arc<Traces>>,
    /// Where operators' overrides persist and who may change them.
    pub overrides: OverrideOptions,
}

/// The reference's stats and where they go.
#[derive(Debug)]
pub struct ReferenceSinks {
    /// The stats (built with a mapper when `prometheus` is set).
    pub stats: Arc<ReferenceStats>,
    /// The reference's Prometheus listener (`PROMETHEUS_ADDR`) and path
    /// (`PROMETHEUS_PATH`).
    pub prometheus: Option<(SocketAddr, String)>,
    /// Where statsd lines go.
    pub statsd: Option<StatsdOptions>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            admin: None,
            config: None,
            initial_load: None,
            max_connection_age: None,
            near_limit_ratio: DEFAULT_NEAR_LIMIT_RATIO,
            health: Health::new(),
            rules_loaded: true,
            tls: None,
            response: ResponseOptions::default(),
            reference: None,
            traces: None,
            overrides: OverrideOptions::default(),
        }
    }
}

/// A started server.
pub struct Running {
    /// The bound gRPC address (with the real port when 0 was asked for).
    pub grpc_addr: SocketAddr,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The bound admin address, when an admin server was asked for.
    pub admin_addr: Option<SocketAddr>,
    /// The bound address of the reference's Prometheus listener, when one
    /// was asked for.
    pub prometheus_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), String>>>,
    health: Health,
    metrics: Arc<Metrics>,
    traces: Option<Arc<Traces>>,
    reload_status: Option<Arc<dyn Fn() -> ReloadStatus + Send + Sync>>,
}

/// The async runtime floodgate serves on (also used by the benchmark's
/// null server, so both run on the same settings).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The gRPC server with floodgate's transport settings (also used by the
/// benchmark's null server, so both run on the same stack).
pub fn grpc_server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
}

/// The gRPC listener as the stream of connections tonic serves, with
/// `TCP_NODELAY` set on each accepted connection (also used by the
/// benchmark's null server). tonic's own `tcp_nodelay` setting applies only
/// to listeners it binds itself; without it, a small answer can wait for the
/// peer's delayed ACK (Nagle's algorithm), about 40 ms on Linux: twice
/// Envoy's default rate-limit timeout.
pub fn grpc_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Binds the listeners and starts serving `limiter` with default options.
pub async fn start<S: CounterStore>(
    limiter: Arc<RateLimiter<S>>,
    listeners: &Listeners,
) -> std::io::Result<Running> {
    start_with(limiter, listeners, ServerOptions::default()).await
}

/// [`start`], with an admin server, config reload and shared health.
pub async fn start_with<S: CounterStore>(
    limiter: Arc<RateLimiter<S>>,
    listeners: &Listeners,
    options: ServerOptions,
) -> std::io::Result<Running> {
    let mut grpc_builder = grpc_server_builder();
    // GOAWAY at the age (tonic, graceful); closed at age + grace (Aged).
    let mut lifetime = None;
    if let Some((age, grace)) = options.max_connection_age {
        grpc_builder = grpc_builder.max_connection_age(age);
        lifetime = Some(age.saturating_add(grace));
    }
    if let Some(tls) = &options.tls {
        grpc_builder = tls.apply(grpc_builder).map_err(std::io::Error::other)?;
    }
    let grpc_listener = bind(ListenerKind::Grpc, listeners.grpc).await?;
    let http_listener = bind(ListenerKind::Http, listeners.http).await?;
    let admin_listener = match options.admin {
        Some(addr) => Some(bind(ListenerKind::Admin, addr).await?),
        None => None,
    };
    let prometheus_listener = match options
        .reference
        .as_ref()
        .and_then(|r| r.prometheus.as_ref())
    {
        Some((addr, _)) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let prometheus_addr = match &prometheus_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let admin_addr = match &admin_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let (shutdown, signal) = watch::channel(false);
    let health = options.health.clone();
    let mut metrics = Metrics::new(options.near_limit_ratio);
    if let Some(reference) = &options.reference {
        metrics = metrics.with_reference(Arc::clone(&reference.stats));
    }
    let metrics = Arc::new(metrics);
    metrics.set_rules(&limiter.rules());
    if options.rules_loaded {
        health.set_rules_loaded(true);
    }
    let mut tasks = Vec::new();
    let overrides = admin::overrides::Overrides::start(
        Arc::clone(&limiter),
        options.overrides,
        admin_addr,
        Arc::clone(&metrics),
    )
    .await
    .map_err(std::io::Error::other)?;
    tasks.extend(overrides.spawn_poller(signal.clone()));

    let reloader = options.config.map(|source| {
        Arc::new(Reloader::new(
            Arc::clone(&limiter),
            source,
            Arc::clone(&metrics),
            health.clone(),
        ))
    });
    if let Some(reloader) = &reloader {
        // A failure is logged, counted and kept in the status; the server
        // still starts (not serving, if it had no rules before).
        match options.initial_load {
            Some(loaded) => {
                let _ = reloader.record(loaded, "start");
            }
            None => {
                let _ = reload::reload_blocking(reloader, "start").await;
            }
        }
        tasks.push(reload::spawn(Arc::clone(reloader), signal.clone()));
        let source = &reloader.source().source;
        if let Source::Xds(settings) = source {
            let client = xds::XdsClient::prepare(settings).map_err(std::io::Error::other)?;
            tasks.push(xds::spawn(
                client,
                Arc::clone(reloader),
                reloader.source().load_options.clone(),
                Arc::clone(&metrics),
                signal.clone(),
            ));
        }
    }

    let health_reporter = tonic_health::server::HealthReporter::new();
    // Ends open `Watch` streams once shutdown has told health checkers.
    let (end_health_streams, health_streams_ended) = watch::channel(false);
    let health_service = health_watch::service(health_reporter.clone(), health_streams_ended);
    let rls_name = <RateLimitServiceServer<GrpcService<S>> as tonic::server::NamedService>::NAME;
    // Set now, not only in the follower task: the reporter starts with ""
    // serving, which must not be seen before rules are loaded.
    set_health_status(&health_reporter, rls_name, health.is_serving()).await;
    tasks.push(spawn_health_follower(
        health.clone(),
        health_reporter.clone(),
        rls_name,
        signal.clone(),
    ));
    tasks.push(spawn_upkeep(Arc::clone(&metrics), signal.clone()));
    if let Some(reference) = options.reference {
        if let (Some(listener), Some((_, path))) = (prometheus_listener, &reference.prometheus) {
            tasks.push(prometheus::spawn(
                listener,
                path,
                Arc::clone(&reference.stats),
                signal.clone(),
            ));
        }
        if let Some(statsd) = reference.statsd {
            tasks.push(crate::observe::statsd::spawn(
                Arc::clone(&reference.stats),
                statsd,
                signal.clone(),
            ));
        }
    }
    // Both reflection versions: grpcurl and grpcui speak v1, while
    // grpcio-reflection, older grpcurl and Postman still ask v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(std::io::Error::other)?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(std::io::Error::other)?;

    let grpc_service = malformed::Malformed(
        RateLimitServiceServer::new(
            GrpcService::new(Arc::clone(&limiter), options.response.clone())
                .with_metrics(Arc::clone(&metrics))
                .with_health(health.clone())
                .with_traces(options.traces.clone()),
        )
        .max_decoding_message_size(limiter.request_limits().max_message_bytes),
    );
    let mut grpc_signal = signal.clone();
    let grpc_task = tokio::spawn(async move {
        grpc_builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(grpc_service)
            .serve_with_incoming_shutdown(
                grpc_incoming(grpc_listener)
                    .map(move |stream| stream.map(|io| aging::Aged::new(io, lifetime))),
                async move {
                    let _ = grpc_signal.wait_for(|stop| *stop).await;
                    // Tell health checkers first, so load balancers drain us.
                    health_reporter
                        .set_service_status("", ServingStatus::NotServing)
                        .await;
                    health_reporter
                        .set_service_status(HEALTH_SERVICE_NAME, ServingStatus::NotServing)
                        .await;
                    // A `Watch` stream never ends by itself: end them, or the
                    // drain waits for them for the whole grace period.
                    let _ = end_health_streams.send(true);
                },
            )
            .await
            .map_err(|e| format!("gRPC server failed: {e}"))
    });

    if let Some(admin_listener) = admin_listener {
        let dashboard = Arc::new(admin::dashboard::Dashboard::new());
        tasks.push(admin::dashboard::spawn_sampler(
            Arc::clone(&dashboard),
            Arc::clone(&metrics),
            Arc::clone(&limiter),
            signal.clone(),
        ));
        let admin_state = Arc::new(admin::AdminState {
            limiter: Arc::clone(&limiter),
            reloader: reloader.clone(),
            health: health.clone(),
            metrics: Arc::clone(&metrics),
            dashboard,
            overrides,
        });
        let mut admin_signal = signal.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(
                admin_listener,
                admin::router(admin_state).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = admin_signal.wait_for(|stop| *stop).await;
            })
            .await
            .map_err(|e| format!("admin server failed: {e}"))
        }));
    }

    let http_state = Arc::new(http::HttpState {
        limiter,
        response: options.response,
        health: health.clone(),
        metrics: Arc::clone(&metrics),
    });
    let mut http_signal = signal;
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, http::router(http_state))
            .with_graceful_shutdown(async move {
                let _ = http_signal.wait_for(|stop| *stop).await;
            })
            .await
            .map_err(|e| format!("HTTP server failed: {e}"))
    });

    tasks.push(grpc_task);
    tasks.push(http_task);
    let reload_status = reloader.map(|reloader| {
        Arc::new(move || reloader.status()) as Arc<dyn Fn() -> ReloadStatus + Send + Sync>
    });
    Ok(Running {
        grpc_addr,
        http_addr,
        admin_addr,
        prometheus_addr,
        shutdown,
        tasks,
        health,
        metrics,
        traces: options.traces,
        reload_status,
    })
}

/// Mirrors [`Health`] into the gRPC health service, for the overall
/// service `""`, [`HEALTH_SERVICE_NAME`] and the RLS service's own name,
/// until shutdown.
fn spawn_health_follower(
    health: Health,
    reporter: tonic_health::server::HealthReporter,
    rls_name: &'static str,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Result<(), String>> {
    let mut serving = health.subscribe();
    tokio::spawn(async move {
        loop {
            let now_serving = *serving.borrow_and_update();
            set_health_status(&reporter, rls_name, now_serving).await;
            tokio::select! {
                changed = serving.changed() => if changed.is_err() { break },
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        Ok(())
    })
}

async fn set_health_status(
    reporter: &tonic_health::server::HealthReporter,
    rls_name: &'static str,
    serving: bool,
) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in ["", HEALTH_SERVICE_NAME, rls_name] {
        reporter.set_service_status(name, status).await;
    }
}

/// Folds recorded latencies into the histogram every few seconds, so memory
/// stays bounded when nobody scrapes `/metrics`.
fn spawn_upkeep(
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = every.tick() => metrics.run_upkeep(),
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        Ok(())
    })
}

impl Running {
    /// The health state this server reports.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// This server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The config reload status; `None` without a config source.
    pub fn reload_status(&self) -> Option<ReloadStatus> {
        self.reload_status.as_ref().map(|status| status())
    }

    /// Stops accepting connections, reports not-serving, lets in-flight
    /// requests finish and waits for both transports to stop.
    pub async fn shutdown(self) -> Result<(), String> {
        self.health.set_shutting_down();
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until both transports have stopped, then exports the spans
    /// still batched.
    pub async fn wait(self) -> Result<(), String> {
        let mut result = Ok(());
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(format!("server task failed: {e}")),
            }
        }
        if let Some(traces) = self.traces {
            // Shutting the exporter down blocks until the batch task is done.
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
        result
    }
}
