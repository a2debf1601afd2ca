//! The overrides API (`PUT`, `GET`, `DELETE /overrides`) and where
//! overrides are kept: Redis when counters are shared by a fleet (every
//! instance polls a version key and reloads within [`POLL_INTERVAL`]),
//! else this process, persisted in `--overrides-file` (written atomically)
//! when given.
//!
//! Mutations need `Authorization: Bearer <token>` when `--admin-token` is
//! set, and are refused on a non-loopback admin address without one. Each
//! change is logged with who made it (the `X-Floodgate-Actor` header the
//! CLI sends, and the peer address), what it changed, and the override
//! before and after. Changes are serialised by a lock, checked completely
//! before anything is written, and applied to this instance only once
//! stored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{AdminState, error};
use crate::decide::RateLimiter;
use crate::limit::Nanos;
use crate::observe::metrics::Metrics;
use crate::rules::overrides::{EntrySpec, Override, OverrideSet, OverrideSpec};
use crate::store::CounterStore;
use crate::store::redis::RedisStore;

/// How often an instance sharing Redis checks for changes made elsewhere.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Largest request body accepted (one override is a few hundred bytes).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How overrides are kept and who may change them.
#[derive(Clone, Debug, Default)]
pub struct OverrideOptions {
    /// With the memory store: the file overrides persist in.
    pub file: Option<PathBuf>,
    /// The bearer token mutations need (`--admin-token`).
    pub token: Option<String>,
}

/// The overrides of one server: the limiter's set, and where it is kept.
pub(crate) struct Overrides<S> {
    limiter: Arc<RateLimiter<S>>,
    file: Option<PathBuf>,
    token: Option<String>,
    /// The admin address is loopback: mutations without a token are allowed.
    loopback: bool,
    /// Serialises changes made through this instance.
    lock: tokio::sync::Mutex<()>,
    /// The Redis version of the set in force (fleet mode).
    version: AtomicU64,
    metrics: Arc<Metrics>,
}

/// The file's shape (and `GET`'s answer).
#[derive(Serialize, Deserialize)]
struct OverrideList {
    overrides: Vec<OverrideSpec>,
}

impl<S: CounterStore> Overrides<S> {
    /// Loads the overrides in force (the file, or Redis) into `limiter`.
    /// A file that cannot be read or holds an invalid override is an
    /// error: starting without overrides an operator set would silently
    /// loosen or tighten limits. A missing file is an empty set.
    pub(crate) async fn start(
        limiter: Arc<RateLimiter<S>>,
        options: OverrideOptions,
        admin: Option<SocketAddr>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Overrides<S>>, String> {
        let overrides = Arc::new(Overrides {
            limiter,
            file: options.file,
            token: options.token.filter(|token| !token.is_empty()),
            loopback: admin.is_none_or(|addr| addr.ip().is_loopback()),
            lock: tokio::sync::Mutex::new(()),
            version: AtomicU64::new(0),
            metrics,
        });
        if let Some(redis) = overrides.limiter.store().fleet() {
            if let Some(path) = &overrides.file {
                tracing::warn!(path = %path.display(), "--overrides-file is not used with the Redis store: overrides live in Redis");
            }
            if let Err(e) = overrides.refresh(redis).await {
                tracing::warn!(error = %e, "could not read overrides from Redis; retrying in the background");
            }
        } else if let Some(path) = &overrides.file {
            let set = read_file(path)?;
            tracing::info!(path = %path.display(), overrides = set.len(), "overrides loaded");
            overrides.install(set);
        }
        if !overrides.loopback && overrides.token.is_none() {
            tracing::warn!(
                "the admin address is not loopback and no --admin-token is set: PUT and DELETE /overrides are refused"
            );
        }
        Ok(overrides)
    }

    fn install(&self, set: OverrideSet) {
        self.metrics.set_override_count(set.len());
        self.metrics.add_override_domains(set.domains());
        self.limiter.replace_overrides(set);
    }

    /// Reloads the set from Redis.
    async fn refresh(&self, redis: &RedisStore) -> Result<OverrideSet, String> {
        let (version, stored) = redis.overrides_load().await.map_err(|e| e.to_string())?;
        let mut compiled = Vec::with_capacity(stored.len());
        for text in stored {
            match serde_json::from_str::<OverrideSpec>(&text)
                .map_err(|e| e.to_string())
                .and_then(OverrideSpec::compile)
            {
                Ok(one) => compiled.push(one),
                Err(e) => {
                    tracing::warn!(error = %e, stored = %text, "skipping an invalid override stored in Redis")
                }
            }
        }
        let set = OverrideSet::of(compiled);
        self.version.store(version, Ordering::Release);
        self.install(set.clone());
        Ok(set)
    }

    /// Polls Redis for changes made by other instances until shutdown.
    pub(crate) fn spawn_poller(
        self: &Arc<Self>,
        mut signal: watch::Receiver<bool>,
    ) -> Option<JoinHandle<Result<(), String>>> {
        self.limiter.store().fleet()?;
        let overrides = Arc::clone(self);
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = signal.wait_for(|stop| *stop) => return Ok(()),
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
                let Some(redis) = overrides.limiter.store().fleet() else {
                    return Ok(());
                };
                let known = overrides.version.load(Ordering::Acquire);
                match redis.overrides_version().await {
                    Ok(version) if version == known => {}
                    Ok(_) => {
                        let _guard = overrides.lock.lock().await;
                        if let Err(e) = overrides.refresh(redis).await {
                            tracing::debug!(error = %e, "override reload from Redis failed");
                        }
                    }
                    // The store's health already reports an unreachable Redis.
                    Err(e) => tracing::debug!(error = %e, "override version poll failed"),
                }
            }
        }))
    }

    /// Whether the caller may change overrides: `Err` is the answer.
    pub(crate) fn authorize(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        match &self.token {
            Some(token) => {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("Bearer "))
                    .unwrap_or_default();
                if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
                    Ok(())
                } else {
                    Err(Refusal(
                        StatusCode::UNAUTHORIZED,
                        "this endpoint needs 'Authorization: Bearer <admin token>'".into(),
                    ))
                }
            }
            None if !self.loopback => Err(Refusal(
                StatusCode::FORBIDDEN,
                "changes are refused on a non-loopback admin address without --admin-token (FLOODGATE_ADMIN_TOKEN)".into(),
            )),
            None => Ok(()),
        }
    }

    /// Whether a token is configured (then `POST /reload` needs it too).
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Applies one change: `build` turns the current set into the next one
    /// (and says what it did), which is stored, then put in force.
    async fn change(
        &self,
        build: impl FnOnce(&OverrideSet, Nanos) -> Result<Change, Refusal>,
    ) -> Result<Change, Refusal> {
        let _guard = self.lock.lock().await;
        let now = self.limiter.now();
        let unavailable = |e: String| Refusal(StatusCode::SERVICE_UNAVAILABLE, e);
        let current = match self.limiter.store().fleet() {
            Some(redis) => self.refresh(redis).await.map_err(unavailable)?,
            None => (*self.limiter.overrides()).clone(),
        };
        let change = build(&current, now)?;
        let dropped: Vec<String> = current.expired(now).into_iter().map(field).collect();
        match self.limiter.store().fleet() {
            Some(redis) => {
                let mut delete = dropped;
                let put = change.after.as_ref().map(|spec| (field(spec), json(spec)));
                if change.after.is_none()
                    && let Some(before) = &change.before
                {
                    delete.push(field(before));
                }
                let loaded = self.version.load(Ordering::Acquire);
                let version = redis
                    .overrides_write(put.as_ref().map(|(f, v)| (f.as_str(), v.as_str())), &delete)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                if version != loaded.wrapping_add(1) {
                    // Another instance changed overrides between our read
                    // and our write: Redis holds both changes, and a set
                    // built from our read would miss theirs (the poller,
                    // seeing our version, would never reload it).
                    if let Err(e) = self.refresh(redis).await {
                        tracing::debug!(error = %e, "override reload from Redis failed");
                        // The poller catches up from the old version.
                        self.version.store(loaded, Ordering::Release);
                    }
                    return Ok(change);
                }
                self.version.store(version, Ordering::Release);
            }
            None => {
                if let Some(path) = &self.file {
                    write_file(path, &change.next, now).map_err(|e| {
                        Refusal(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("could not write {}: {e}; nothing changed", path.display()),
                        )
                    })?;
                }
            }
        }
        self.install(change.next.clone());
        Ok(change)
    }
}

/// Why a change was not made: the status and what to tell the caller.
pub(crate) struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = error(self.0, &self.1);
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// One change: the set after it, and the override before and after.
struct Change {
    next: OverrideSet,
    before: Option<OverrideSpec>,
    after: Option<OverrideSpec>,
}

/// An override's Redis hash field: its descriptor as JSON.
fn field(spec: &OverrideSpec) -> String {
    serde_json::to_string(&(&spec.domain, &spec.entries)).unwrap_or_default()
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn read_file(path: &Path) -> Result<OverrideSet, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OverrideSet::default()),
        Err(e) => {
            return Err(format!(
                "cannot read overrides file {}: {e}",
                path.display()
            ));
        }
    };
    let list: OverrideList = serde_json::from_str(&text)
        .map_err(|e| format!("overrides file {}: {e}", path.display()))?;
    let mut compiled = Vec::with_capacity(list.overrides.len());
    for (index, spec) in list.overrides.into_iter().enumerate() {
        compiled.push(
            spec.compile().map_err(|e| {
                format!("overrides file {}: overrides[{index}]: {e}", path.display())
            })?,
        );
    }
    Ok(OverrideSet::of(compiled))
}

/// Writes the live overrides to `path` atomically: a temporary file in the
/// same directory, synced, then renamed over the old one, so a crash leaves
/// the old file or the new one, never half of one.
fn write_file(path: &Path, set: &OverrideSet, now: Nanos) -> std::io::Result<()> {
    use std::io::Write;
    let list = OverrideList {
        overrides: set.list(None, now).into_iter().cloned().collect(),
    };
    let text = serde_json::to_string_pretty(&list).map_err(std::io::Error::other)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // Make the rename itself durable (best effort: not every platform
        // can open a directory).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Who asked: the `X-Floodgate-Actor` header (bounded) and the peer.
fn who(request: &Request) -> (String, String) {
    let actor = request
        .headers()
        .get("x-floodgate-actor")
        .and_then(|value| value.to_str().ok())
        .map_or_else(|| "unknown".to_owned(), |v| v.chars().take(128).collect());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |info| info.0.to_string());
    (actor, peer)
}

async fn body<T: for<'de> Deserialize<'de>>(request: Request, shape: &str) -> Result<T, Refusal> {
    let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON of at most {MAX_BODY_BYTES} bytes"),
            )
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("expected {shape}: {e}")))
}

const PUT_SHAPE: &str = r#"{"domain": "...", "entries": [{"key": "...", "value": "..."}], "limits": [{"requests_per_unit": N, "unit": "hour"}], "expires_at": unix-seconds (optional)}"#;

/// `PUT /overrides`.
pub(crate) async fn put<S: CounterStore>(
    State(state): State<Arc<AdminState<S>>>,
    request: Request,
) -> Response {
    let overrides = &state.overrides;
    if let Err(denied) = overrides.authorize(request.headers()) {
        return denied.into_response();
    }
    let (actor, peer) = who(&request);
    let spec: OverrideSpec = match body(request, PUT_SHAPE).await {
        Ok(spec) => spec,
        Err(refusal) => return refusal.into_response(),
    };
    let compiled: Override = match spec.clone().compile() {
        Ok(compiled) => compiled,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let result = overrides
        .change(|current, now| {
            let before = current
                .get(&spec.domain, &spec.entries)
                .filter(|o| o.live_at(now))
                .map(|o| o.spec.clone());
            let next = current
                .with(compiled, now)
                .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;
            Ok(Change {
                next,
                before,
                after: Some(spec.clone()),
            })
        })
        .await;
    match result {
        Ok(change) => {
            log_change("set", &actor, &peer, &spec.domain, &spec.entries, &change);
            overrides.metrics.record_override_change(true);
            (StatusCode::OK, Json(spec)).into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// `DELETE /overrides` with `{"domain", "entries"}`.
pub(crate) async fn delete<S: CounterStore>(
    State(state): State<Arc<AdminState<S>>>,
    request: Request,
) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Target {
        domain: String,
        entries: Vec<EntrySpec>,
    }
    let overrides = &state.overrides;
    if let Err(denied) = overrides.authorize(request.headers()) {
        return denied.into_response();
    }
    let (actor, peer) = who(&request);
    let target: Target = match body(
        request,
        r#"{"domain": "...", "entries": [{"key": "...", "value": "..."}]}"#,
    )
    .await
    {
        Ok(target) => target,
        Err(refusal) => return refusal.into_response(),
    };
    let result = overrides
        .change(|current, now| {
            let (next, removed) = current.without(&target.domain, &target.entries, now);
            match removed {
                Some(removed) => Ok(Change {
                    next,
                    before: Some(removed.spec.clone()),
                    after: None,
                }),
                None => Err(Refusal(
                    StatusCode::NOT_FOUND,
                    "no override for this domain and entries".into(),
                )),
            }
        })
        .await;
    match result {
        Ok(change) => {
            log_change(
                "delete",
                &actor,
                &peer,
                &target.domain,
                &target.entries,
                &change,
            );
            overrides.metrics.record_override_change(false);
            (
                StatusCode::OK,
                Json(serde_json::json!({ "deleted": change.before })),
            )
                .into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

fn log_change(
    what: &str,
    actor: &str,
    peer: &str,
    domain: &str,
    entries: &[EntrySpec],
    change: &Change,
) {
    let show = |spec: &Option<OverrideSpec>| spec.as_ref().map_or_else(|| "none".to_owned(), json);
    tracing::info!(
        change = what,
        actor,
        peer,
        domain,
        entries = %json(&entries),
        before = %show(&change.before),
        after = %show(&change.after),
        "override changed"
    );
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    domain: Option<String>,
}

/// `GET /overrides?domain=D`: the live overrides (of one domain).
pub(crate) async fn list<S: CounterStore>(
    State(state): State<Arc<AdminState<S>>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let domain = match query {
        Ok(Query(query)) => query.domain,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("expected ?domain=D: {e}")),
    };
    let set = state.limiter.overrides();
    let list = OverrideList {
        overrides: set
            .list(domain.as_deref(), state.limiter.now())
            .into_iter()
            .cloned()
            .collect(),
    };
    (StatusCode::OK, Json(list)).into_response()
}

/// Appends the live overrides to the `/rlconfig` text, one line each:
/// `shop.(admin override) customer=acme: unit=HOUR requests_per_unit=5, ...`.
pub(crate) fn describe<S: CounterStore>(limiter: &RateLimiter<S>, out: &mut String) {
    use std::fmt::Write;
    let set = limiter.overrides();
    for spec in set.list(None, limiter.now()) {
        let entries: Vec<String> = spec
            .entries
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect();
        let _ = write!(
            out,
            "{}.{} {}: ",
            spec.domain,
            crate::rules::overrides::ADMIN_OVERRIDE_RULE_ID,
            entries.join(",")
        );
        for (index, limit) in spec.limits.iter().enumerate() {
            if index > 0 {
                out.push_str("; ");
            }
            let _ = write!(
                out,
                "unit={} requests_per_unit={}",
                limit.unit.to_ascii_uppercase(),
                limit.requests_per_unit
            );
            for (key, value) in [
                ("name", limit.name.clone()),
                ("algorithm", limit.algorithm.clone()),
                (
                    "unit_multiplier",
                    limit.unit_multiplier.map(|m| m.to_string()),
                ),
                ("burst", limit.burst.map(|b| b.to_string())),
                (
                    "calendar",
                    limit
                        .calendar
                        .then(|| limit.time_zone.clone().unwrap_or_else(|| "UTC".into())),
                ),
            ] {
                if let Some(value) = value {
                    let _ = write!(out, " {key}={value}");
                }
            }
        }
        match spec.expires_at {
            Some(at) => {
                let _ = writeln!(out, ", expires_at: {at}");
            }
            None => out.push('\n'),
        }
    }
}

/// Most overrides the dashboard lists (the total is always given).
const DASHBOARD_OVERRIDES: usize = 100;

/// The dashboard's `overrides`: which limits are overridden, for whom.
#[derive(Serialize)]
pub(crate) struct DashboardOverrides {
    total: usize,
    entries: Vec<OverrideSpec>,
}

pub(crate) fn dashboard<S: CounterStore>(limiter: &RateLimiter<S>) -> DashboardOverrides {
    let set = limiter.overrides();
    let live = set.list(None, limiter.now());
    DashboardOverrides {
        total: live.len(),
        entries: live
            .into_iter()
            .take(DASHBOARD_OVERRIDES)
            .cloned()
            .collect(),
    }
}
