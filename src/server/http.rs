//! The HTTP transport: `POST /json` (the RLS call in protojson, as the
//! reference serves it) and `GET /healthcheck`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::json::{JsonRequest, JsonResponse};
use crate::respond;
use crate::service::{DecideError, RateLimiter};
use crate::store::CounterStore;

/// What the HTTP handlers share.
pub struct HttpState<S> {
    pub(crate) limiter: Arc<RateLimiter<S>>,
    /// Serving: rules are loaded and the server is not shutting down.
    pub(crate) healthy: Arc<AtomicBool>,
}

/// The HTTP routes.
pub fn router<S: CounterStore>(state: Arc<HttpState<S>>) -> Router {
    Router::new()
        .route("/json", post(json::<S>))
        .route("/healthcheck", get(healthcheck::<S>))
        .with_state(state)
}

fn json_body(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_body(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    json_body(status, body)
}

async fn json<S: CounterStore>(State(state): State<Arc<HttpState<S>>>, body: Bytes) -> Response {
    let request: JsonRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                &format!("invalid request JSON: {e}"),
            );
        }
    };
    let request = request.into_proto();
    match state.limiter.decide(&request).await {
        Ok(decision) => {
            let response = respond::to_response(&decision);
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

async fn healthcheck<S: CounterStore>(State(state): State<Arc<HttpState<S>>>) -> Response {
    if state.healthy.load(Ordering::Acquire) {
        (StatusCode::OK, "OK").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT SERVING").into_response()
    }
}
