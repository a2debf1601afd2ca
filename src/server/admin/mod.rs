//! The admin server (`--admin-addr`, loopback by default): what an operator
//! asks a running floodgate, never what a client of the rate limiter needs.
//!
//! | endpoint | answer |
//! | --- | --- |
//! | `GET /` | the endpoints, one `path: help` line each, sorted |
//! | `GET /rlconfig` | the loaded rules, one line per rule, in the reference's format |
//! | `GET /usage?domain=D&descriptor=k1=v1,k2=v2` | a descriptor's rule and each limit's current count, remaining and reset, as JSON, consuming nothing |
//! | `POST /usage` | the same, for `{"domain": "D", "entries": [{"key": "k1", "value": "v1"}]}` (values with `,` or `=`) |
//! | `GET /reload` | the config reload status, as JSON |
//! | `POST /reload` | reloads the config now; 200 with the status, or 422 when the files are invalid |
//! | `PUT /overrides` | sets the limits of one exact descriptor: `{"domain", "entries": [{"key", "value"}], "limits": [{"requests_per_unit", "unit", ...}], "expires_at"}` (see [`overrides`]) |
//! | `GET /overrides?domain=D` | the live overrides (of one domain), as `{"overrides": [...]}` |
//! | `DELETE /overrides` | removes one, given `{"domain", "entries"}`; 404 when there is none |
//! | `GET /dashboard` | the live dashboard page (with `/dashboard/app.js` and `/dashboard/app.css`, embedded) |
//! | `GET /dashboard/data?step=S` | the dashboard's data as JSON: rates, shares and totals per rule, top-K closest to their limits, latency quantiles, store health, config version and reload outcome, 10 minutes of history (fields in [`dashboard`]) |
//!
//! In the `descriptor` query parameter, entries are separated by `,` and
//! each entry's key from its value by its first `=`; an entry without `=` has
//! an empty value. Percent-encoding applies as usual.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

pub(crate) mod dashboard;
pub mod overrides;

use super::reload::{self, Reloader};
use crate::config;
use crate::decide::{DecideError, RateLimiter};
use crate::health::Health;
use crate::limit::NANOS_PER_SECOND;
use crate::observe::metrics::Metrics;
use crate::proto::Entry;
use crate::store::CounterStore;
use dashboard::Dashboard;

/// What the admin handlers share.
pub(crate) struct AdminState<S> {
    pub(crate) limiter: Arc<RateLimiter<S>>,
    /// `None` when the server was started without a config source.
    pub(crate) reloader: Option<Arc<Reloader<S>>>,
    pub(crate) health: Health,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) dashboard: Arc<Dashboard>,
    pub(crate) overrides: Arc<overrides::Overrides<S>>,
}

/// `path: help` for `GET /`, sorted by path.
const ENDPOINTS: &[(&str, &str)] = &[
    (
        "/dashboard",
        "the live dashboard: which rules are limiting whom, how close others are (HTML)",
    ),
    (
        "/dashboard/data",
        "GET ?step=S: the dashboard's data (JSON): per-rule rates and shares, top descriptors closest to their limits, latency, store, config",
    ),
    (
        "/overrides",
        "PUT {\"domain\",\"entries\",\"limits\",\"expires_at\"}: set one descriptor's limits; GET ?domain=D: list; DELETE {\"domain\",\"entries\"}: remove",
    ),
    (
        "/reload",
        "GET: the config reload status (JSON); POST: reload the config now",
    ),
    (
        "/rlconfig",
        "print out the currently loaded configuration for debugging",
    ),
    (
        "/usage",
        "GET ?domain=D&descriptor=k1=v1,k2=v2 or POST {\"domain\",\"entries\"}: a descriptor's current counts, consuming nothing",
    ),
];

/// The admin routes.
pub(crate) fn router<S: CounterStore>(state: Arc<AdminState<S>>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/rlconfig", get(rlconfig::<S>))
        .route("/usage", get(usage_query::<S>).post(usage_json::<S>))
        .route("/reload", get(reload_status::<S>).post(reload_now::<S>))
        .route(
            "/overrides",
            get(overrides::list::<S>)
                .put(overrides::put::<S>)
                .delete(overrides::delete::<S>),
        )
        .route("/dashboard", get(dashboard::page::<S>))
        .route("/dashboard/data", get(dashboard::json::<S>))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .with_state(state)
}

fn text(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn index() -> Response {
    let mut body = String::new();
    for (path, help) in ENDPOINTS {
        body.push_str(path);
        body.push_str(": ");
        body.push_str(help);
        body.push('\n');
    }
    text(body)
}

async fn rlconfig<S: CounterStore>(State(state): State<Arc<AdminState<S>>>) -> Response {
    let mut body = config::describe(&state.limiter.rules());
    overrides::describe(&state.limiter, &mut body);
    text(body)
}

#[derive(Deserialize)]
struct UsageQuery {
    domain: String,
    descriptor: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageRequest {
    domain: String,
    entries: Vec<UsageEntry>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct UsageEntry {
    key: String,
    #[serde(default)]
    value: String,
}

/// The `/usage` answer.
#[derive(Serialize)]
struct UsageReport {
    domain: String,
    entries: Vec<UsageEntry>,
    /// A rule matched the descriptor.
    matched: bool,
    /// The rule's id (its config path), when one matched.
    rule: Option<String>,
    unlimited: bool,
    shadow_mode: bool,
    limits: Vec<LimitReport>,
}

#[derive(Serialize)]
struct LimitReport {
    name: Option<String>,
    algorithm: &'static str,
    requests_per_unit: u64,
    unit: &'static str,
    unit_multiplier: u64,
    /// A token bucket's capacity; absent for windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<u64>,
    /// A calendar window's time zone; absent for windows since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    calendar: Option<&'static str>,
    /// The current count (window count, sliding estimate or tokens taken).
    used: u64,
    /// Requests of one hit still admissible now.
    remaining: u64,
    /// Seconds until the window resets or the bucket is full again.
    reset_after_seconds: f64,
}

/// Parses `k1=v1,k2=v2`.
fn parse_descriptor(text: &str) -> Vec<UsageEntry> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((key, value)) => UsageEntry {
                key: key.to_owned(),
                value: value.to_owned(),
            },
            None => UsageEntry {
                key: part.to_owned(),
                value: String::new(),
            },
        })
        .collect()
}

async fn usage_query<S: CounterStore>(
    State(state): State<Arc<AdminState<S>>>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match query {
        Ok(Query(query)) => usage(&state, query.domain, parse_descriptor(&query.descriptor)).await,
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            &format!("expected ?domain=D&descriptor=k1=v1,k2=v2: {e}"),
        ),
    }
}

async fn usage_json<S: CounterStore>(
    State(state): State<Arc<AdminState<S>>>,
    body: axum::body::Bytes,
) -> Response {
    match serde_json::from_slice::<UsageRequest>(&body) {
        Ok(request) => usage(&state, request.domain, request.entries).await,
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            &format!(
                "expected {{\"domain\": ..., \"entries\": [{{\"key\": ..., \"value\": ...}}]}}: {e}"
            ),
        ),
    }
}

async fn usage<S: CounterStore>(
    state: &AdminState<S>,
    domain: String,
    entries: Vec<UsageEntry>,
) -> Response {
    if entries.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the descriptor needs at least one entry",
        );
    }
    let proto_entries: Vec<Entry> = entries
        .iter()
        .map(|entry| Entry {
            key: entry.key.clone(),
            value: entry.value.clone(),
        })
        .collect();
    let usage = match state.limiter.peek(&domain, &proto_entries).await {
        Ok(usage) => usage,
        Err(DecideError::InvalidRequest(message)) => {
            return error(StatusCode::BAD_REQUEST, &message);
        }
        Err(DecideError::Store(e)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
    };
    let mut report = UsageReport {
        domain,
        entries,
        matched: usage.is_some(),
        rule: None,
        unlimited: false,
        shadow_mode: false,
        limits: Vec::new(),
    };
    if let Some(usage) = usage {
        report.rule = Some(usage.rule.id.to_string());
        report.unlimited = usage.rule.unlimited;
        report.shadow_mode = usage.rule.shadow_mode;
        report.limits = usage
            .limits
            .iter()
            .map(|limit_usage| {
                let limit = &limit_usage.limit.limit;
                let outcome = &limit_usage.outcome;
                LimitReport {
                    name: limit_usage.limit.name.as_deref().map(str::to_owned),
                    algorithm: limit.algorithm.as_str(),
                    requests_per_unit: limit.requests_per_unit,
                    unit: limit.unit.as_str(),
                    unit_multiplier: limit.unit_multiplier,
                    burst: (limit.algorithm == crate::limit::Algorithm::TokenBucket)
                        .then_some(limit.burst),
                    calendar: limit.calendar.map(|calendar| calendar.zone_name()),
                    used: outcome.used,
                    remaining: outcome.remaining,
                    reset_after_seconds: outcome.reset_after as f64 / NANOS_PER_SECOND as f64,
                }
            })
            .collect();
    }
    (StatusCode::OK, Json(report)).into_response()
}

async fn reload_status<S: CounterStore>(State(state): State<Arc<AdminState<S>>>) -> Response {
    match &state.reloader {
        Some(reloader) => (StatusCode::OK, Json(reloader.status())).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "this server was started without a config path to reload",
        ),
    }
}

async fn reload_now<S: CounterStore>(
    State(state): State<Arc<AdminState<S>>>,
    headers: axum::http::HeaderMap,
) -> Response {
    // With --admin-token, every change needs it (without one, /reload stays
    // open as it always was).
    if state.overrides.has_token()
        && let Err(denied) = state.overrides.authorize(&headers)
    {
        return denied.into_response();
    }
    let Some(reloader) = &state.reloader else {
        return error(
            StatusCode::NOT_FOUND,
            "this server was started without a config path to reload",
        );
    };
    let status = match reload::reload_blocking(reloader, "admin").await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, Json(reloader.status())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_text_splits_on_commas_and_the_first_equals() {
        let entries = parse_descriptor("a=1,b=x=y,c");
        let pairs: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(pairs, [("a", "1"), ("b", "x=y"), ("c", "")]);
    }
}
