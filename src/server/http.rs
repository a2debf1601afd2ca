//! The HTTP transport: `POST /json` (the RLS call in protojson, as the
//! reference serves it), `GET /healthcheck` and `GET /metrics` (Prometheus
//! text).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::json::{JsonRequest, JsonResponse};
use crate::decide::{DecideError, RateLimiter};
use crate::health::Health;
use crate::observe::metrics::{Metrics, Transport};
use crate::respond;
use crate::store::CounterStore;

/// What the HTTP handlers share.
pub struct HttpState<S> {
    pub(crate) limiter: Arc<RateLimiter<S>>,
    /// What answers carry besides statuses.
    pub(crate) response: respond::ResponseOptions,
    /// Serving: rules are loaded, the server is not shutting down and the
    /// store is reachable (when that matters).
    pub(crate) health: Health,
    pub(crate) metrics: Arc<Metrics>,
}

/// The HTTP routes.
pub fn router<S: CounterStore>(state: Arc<HttpState<S>>) -> Router {
    Router::new()
        .route("/json", post(json::<S>))
        .route("/healthcheck", get(healthcheck::<S>))
        .route("/metrics", get(metrics::<S>))
        .layer(DefaultBodyLimit::max(
            state.limiter.request_limits().max_message_bytes,
        ))
        .with_state(state)
}

fn json_body(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_body(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    json_body(status, body)
}

async fn json<S: CounterStore>(
    State(state): State<Arc<HttpState<S>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "request body larger than the limit of {} bytes (--max-message-bytes)",
                    state.limiter.request_limits().max_message_bytes
                ),
            );
        }
        Err(rejection) => return error_body(rejection.status(), &rejection.body_text()),
    };
    let request: JsonRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                &format!("invalid request JSON: {e}"),
            );
        }
    };
    if !state.health.rules_loaded() {
        return error_body(StatusCode::INTERNAL_SERVER_ERROR, super::grpc::NO_CONFIG);
    }
    let request = request.into_proto();
    let started = Instant::now();
    let result = state.limiter.decide(&request).await;
    state
        .metrics
        .observe(Transport::Http, &request, &result, started.elapsed());
    match result {
        Ok(decision) => {
            let response = respond::to_response(&decision, &state.response);
            let status = if decision.over_limit {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::OK
            };
            match serde_json::to_string(&JsonResponse::from_proto(&response)) {
                Ok(body) => json_body(status, body),
                Err(e) => error_body(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        Err(DecideError::InvalidRequest(message)) => error_body(StatusCode::BAD_REQUEST, &message),
        Err(DecideError::Store(e)) => error_body(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// 200 `OK` when serving; 500 with an empty body when not, as the
/// reference answers.
async fn healthcheck<S: CounterStore>(State(state): State<Arc<HttpState<S>>>) -> Response {
    if state.health.is_serving() {
        (StatusCode::OK, "OK").into_response()
    } else {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}

async fn metrics<S: CounterStore>(State(state): State<Arc<HttpState<S>>>) -> Response {
    let store = state.limiter.store();
    if let Some(fleet) = store.fleet() {
        let (batches, requests) = fleet.batch_stats();
        state.metrics.set_redis_batches(batches, requests);
    }
    let body = state.metrics.render(store.held(), store.evictions());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
