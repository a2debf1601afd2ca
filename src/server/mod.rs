//! The transports at the edge: gRPC (RLS v3, health, reflection) and HTTP
//! (`/json`, `/healthcheck`), started together and stopped together.
//!
//! [`start`] binds both listeners (port 0 picks a free port, which tests
//! use), serves until [`Running::shutdown`] is called, then stops accepting
//! and lets in-flight requests finish.

mod grpc;
mod http;
pub(crate) mod json;
mod shutdown;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

pub use grpc::{GrpcService, status_of};
pub use shutdown::ShutdownError;
pub use tls::{LoadedTls, TlsError, TlsFiles};

use crate::proto::{FILE_DESCRIPTOR_SET, RateLimitServiceServer};
use crate::service::RateLimiter;
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

/// A started server.
pub struct Running {
    /// The bound gRPC address (with the real port when 0 was asked for).
    pub grpc_addr: SocketAddr,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), String>>>,
    healthy: Arc<AtomicBool>,
}

/// How the listeners serve, beyond where they listen.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// TLS (and, with a client CA, mutual TLS) on the gRPC port; plaintext
    /// when `None`. The HTTP port stays plaintext, as in the reference.
    pub tls: Option<LoadedTls>,
}

/// Binds the listeners and starts serving `limiter` with default options.
pub async fn start<S: CounterStore>(
    limiter: Arc<RateLimiter<S>>,
    listeners: &Listeners,
) -> std::io::Result<Running> {
    start_with(limiter, listeners, ServerOptions::default()).await
}

/// Binds the listeners and starts serving `limiter` as `options` say.
pub async fn start_with<S: CounterStore>(
    limiter: Arc<RateLimiter<S>>,
    listeners: &Listeners,
    options: ServerOptions,
) -> std::io::Result<Running> {
    let mut grpc_builder = tonic::transport::Server::builder();
    if let Some(tls) = &options.tls {
        grpc_builder = tls.apply(grpc_builder).map_err(std::io::Error::other)?;
    }
    let grpc_listener = TcpListener::bind(listeners.grpc).await?;
    let http_listener = TcpListener::bind(listeners.http).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let (shutdown, signal) = watch::channel(false);
    let healthy = Arc::new(AtomicBool::new(true));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RateLimitServiceServer<GrpcService<S>>>()
        .await;
    health_reporter
        .set_service_status(HEALTH_SERVICE_NAME, ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?;

    let grpc_service = RateLimitServiceServer::new(GrpcService::new(Arc::clone(&limiter)));
    let mut grpc_signal = signal.clone();
    let grpc_task = tokio::spawn(async move {
        grpc_builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(grpc_service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), async move {
                let _ = grpc_signal.wait_for(|stop| *stop).await;
                // Tell health checkers first, so load balancers drain us.
                health_reporter
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                health_reporter
                    .set_service_status(HEALTH_SERVICE_NAME, ServingStatus::NotServing)
                    .await;
            })
            .await
            .map_err(|e| format!("gRPC server failed: {e}"))
    });

    let http_state = Arc::new(http::HttpState {
        limiter,
        healthy: Arc::clone(&healthy),
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

    Ok(Running {
        grpc_addr,
        http_addr,
        shutdown,
        tasks: vec![grpc_task, http_task],
        healthy,
    })
}

impl Running {
    /// Stops accepting connections, reports not-serving, lets in-flight
    /// requests finish and waits for both transports to stop.
    pub async fn shutdown(self) -> Result<(), String> {
        self.healthy.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until both transports have stopped.
    pub async fn wait(self) -> Result<(), String> {
        let mut result = Ok(());
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(format!("server task failed: {e}")),
            }
        }
        result
    }
}
