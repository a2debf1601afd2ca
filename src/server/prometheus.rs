//! The reference's Prometheus listener (`USE_PROMETHEUS=true`): its own
//! address (`PROMETHEUS_ADDR`) and path (`PROMETHEUS_PATH`), serving the
//! reference-named series of [`ReferenceStats::render`]. floodgate's own
//! `floodgate_*` series stay at `GET /metrics` on the HTTP address.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::observe::reference::ReferenceStats;

/// Serves `stats` at `path` on `listener` until `stop`.
pub fn spawn(
    listener: TcpListener,
    path: &str,
    stats: Arc<ReferenceStats>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Result<(), String>> {
    // axum wants a leading slash; the reference's Go mux is as strict.
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let router = Router::new().route(
        &path,
        get(move || {
            let stats = Arc::clone(&stats);
            async move { render(&stats) }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await
            .map_err(|e| format!("Prometheus listener failed: {e}"))
    })
}

fn render(stats: &ReferenceStats) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        stats.render(),
    )
        .into_response()
}
