//! Config hot reload: load the whole rule set again, validate it, and swap it
//! in atomically, or keep the old rules serving when the new files are bad.
//!
//! A reload is triggered by a change under the config path (watched with
//! `notify`), by SIGHUP, or by `POST /reload` on the admin server. Rules
//! pushed by an xDS server are not reloaded: each response is
//! [recorded](Reloader::record) by the xDS client (`super::xds`), with the
//! stream's state in [`ReloadStatus::xds`].
//!
//! What is watched: a config directory is watched recursively, itself and
//! not only its files, because Kubernetes updates a ConfigMap volume by
//! atomically renaming a `..data` symlink inside it (the files are symlinks
//! through `..data`, so their own inodes never change). A config file is
//! watched through its parent directory, since editors and ConfigMaps
//! replace files by rename; only events naming the file itself or a `..`
//! entry count. Events are debounced ([`DEBOUNCE`]): an editor's save or a
//! ConfigMap swap is a burst of events and should be one reload.
//!
//! Each load is recorded in a [`ReloadStatus`] (outcome, time, version of
//! the rules serving, last error), in the metrics and in the logs; the first
//! successful load marks [`Health`] as having rules. Counters are keyed by
//! descriptor and window, not by `requests_per_unit`, so counts of rules a
//! reload does not change carry on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify::{EventKind, RecursiveMode, Watcher};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{self, ConfigErrors, LoadOptions, Loaded, Source};
use crate::decide::RateLimiter;
use crate::health::Health;
use crate::observe::metrics::Metrics;
use crate::store::CounterStore;

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// The longest a stream of events can put a reload off.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// Where rules are reloaded from, and what triggers a reload.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// The rules' source: a file or directory, or the built-in rules (which
    /// are never watched).
    pub source: Source,
    /// Refuse a load with no rules at all while rules are serving.
    pub refuse_empty: bool,
    /// How files are combined.
    pub load_options: LoadOptions,
    /// Reload when something under `path` changes.
    pub watch: bool,
    /// Reload on SIGHUP.
    pub reload_on_sighup: bool,
    /// With `watch`: a symlink above `path` whose atomic replacement also
    /// means new rules (the reference's `RUNTIME_ROOT` with
    /// `RUNTIME_WATCH_ROOT=true`). Its parent directory is watched for
    /// events naming it, and the watch on `path` is renewed after each
    /// reload so it follows the new target.
    pub watch_root: Option<PathBuf>,
}

/// How a load ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new rules are serving.
    Success,
    /// The files were invalid or unreadable; the previous rules serve on.
    Failure,
}

/// The state of config loading, for `/metrics`, the admin server and
/// dashboards.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReloadStatus {
    /// The config path (`embedded:` for the built-in rules).
    pub path: PathBuf,
    /// The last load's outcome; `None` before the first.
    pub last_outcome: Option<ReloadOutcome>,
    /// What triggered the last load (`start`, `file change`, `SIGHUP`, `admin`).
    pub last_trigger: Option<String>,
    /// Unix time of the last load, in seconds.
    pub last_attempt_unix_seconds: Option<f64>,
    /// Unix time of the last successful load, in seconds.
    pub last_success_unix_seconds: Option<f64>,
    /// The version of the rules serving now: a hash of the loaded files'
    /// paths and contents, as 16 hex digits.
    pub version: Option<String>,
    /// The last failed load's errors (one `file:line:column: reason` per
    /// line); cleared by a successful load.
    pub last_error: Option<String>,
    /// Successful loads so far.
    pub successes: u64,
    /// Failed loads so far.
    pub failures: u64,
    /// With an xDS source: the stream and its ACKs and NACKs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xds: Option<XdsStatus>,
}

/// The state of the stream from an xDS management server.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct XdsStatus {
    /// The server (`host:port`).
    pub server: String,
    /// The node id floodgate subscribes with.
    pub node_id: String,
    /// Whether a stream is open now.
    pub connected: bool,
    /// The `version_info` of the last response applied and ACKed: the
    /// version floodgate resumes from when it reconnects.
    pub accepted_version: Option<String>,
    /// Unix time of the last ACK, in seconds.
    pub last_ack_unix_seconds: Option<f64>,
    /// The `version_info` of the last response refused (NACKed).
    pub rejected_version: Option<String>,
    /// Unix time of the last NACK, in seconds.
    pub last_nack_unix_seconds: Option<f64>,
    /// The last NACK's `error_detail`; cleared by an ACK.
    pub last_nack_error: Option<String>,
    /// Responses ACKed.
    pub acks: u64,
    /// Responses NACKed.
    pub nacks: u64,
    /// Failed connections and broken streams (each followed by a reconnect).
    pub stream_failures: u64,
    /// Why the last connection or stream failed.
    pub last_stream_error: Option<String>,
}

/// Reloads rules into a limiter and keeps score.
pub struct Reloader<S> {
    limiter: Arc<RateLimiter<S>>,
    source: ConfigSource,
    metrics: Arc<Metrics>,
    health: Health,
    status: Mutex<ReloadStatus>,
    /// The version serving now, to skip swapping in identical rules.
    serving: Mutex<Option<u64>>,
    /// One load at a time, so two triggers cannot swap out of order.
    loading: Mutex<()>,
}

impl<S: CounterStore> Reloader<S> {
    /// A reloader of `source` into `limiter`.
    pub fn new(
        limiter: Arc<RateLimiter<S>>,
        source: ConfigSource,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> Reloader<S> {
        let status = ReloadStatus {
            path: source.source.display(),
            ..ReloadStatus::default()
        };
        Reloader {
            limiter,
            source,
            metrics,
            health,
            status: Mutex::new(status),
            serving: Mutex::new(None),
            loading: Mutex::new(()),
        }
    }

    /// Where rules come from.
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// The state of loading now.
    pub fn status(&self) -> ReloadStatus {
        self.status.lock().clone()
    }

    /// Updates the xDS stream's part of the status.
    pub fn update_xds(&self, update: impl FnOnce(&mut XdsStatus)) {
        update(
            self.status
                .lock()
                .xds
                .get_or_insert_with(XdsStatus::default),
        );
    }

    /// Loads the config whole and [records](Reloader::record) the load.
    /// Blocking file I/O: call it from a blocking context. A pushed source
    /// (xDS) has nothing to load: its rules arrive on their own.
    pub fn reload(&self, trigger: &str) -> Result<(), ConfigErrors> {
        if self.source.source.is_pushed() {
            tracing::info!(trigger, "rules come from the xDS server; nothing to reload");
            return Ok(());
        }
        let _one_at_a_time = self.loading.lock();
        let result = self.source.source.load(&self.source.load_options);
        self.apply(result, trigger)
    }

    /// Records a load made elsewhere (`floodgate serve` loads once at
    /// start, to refuse a bad config before listening) as a reload would:
    /// on success the rules are swapped in, on failure the old ones serve.
    pub fn record(
        &self,
        result: Result<Loaded, ConfigErrors>,
        trigger: &str,
    ) -> Result<(), ConfigErrors> {
        let _one_at_a_time = self.loading.lock();
        self.apply(result, trigger)
    }

    /// On success swaps the rules in (unless they are byte-for-byte the
    /// ones serving), on failure keeps the old ones; logs, counts and keeps
    /// the outcome in the status either way.
    fn apply(
        &self,
        result: Result<Loaded, ConfigErrors>,
        trigger: &str,
    ) -> Result<(), ConfigErrors> {
        let path = self.source.source.display();
        let path = path.display();
        let now = unix_seconds();
        let result = result.and_then(|loaded| self.refuse_if_empty(loaded));
        let mut status = self.status.lock();
        status.last_trigger = Some(trigger.to_owned());
        status.last_attempt_unix_seconds = Some(now);
        match result {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    tracing::warn!(
                        file = %warning.file.display(),
                        line = warning.line,
                        column = warning.column,
                        rule = %warning.rule_path,
                        reason = %warning.reason,
                        "config warning"
                    );
                }
                let version = format!("{:016x}", loaded.version);
                let mut serving = self.serving.lock();
                if *serving == Some(loaded.version) {
                    tracing::debug!(%version, trigger, "config unchanged; rules kept");
                } else {
                    self.metrics.set_rules(&loaded.rules);
                    for line in config::summary(&loaded.rules) {
                        tracing::info!(%version, "loaded {line}");
                    }
                    self.limiter.replace_rules(loaded.rules);
                    *serving = Some(loaded.version);
                }
                drop(serving);
                self.health.set_rules_loaded(true);
                self.metrics.record_reload(true, now);
                tracing::info!(path = %path, %version, trigger, "config loaded");
                status.last_outcome = Some(ReloadOutcome::Success);
                status.last_success_unix_seconds = Some(now);
                status.version = Some(version);
                status.last_error = None;
                status.successes += 1;
                Ok(())
            }
            Err(errors) => {
                for error in errors.iter() {
                    tracing::error!(
                        file = %error.file.display(),
                        line = error.line,
                        column = error.column,
                        rule = %error.rule_path,
                        reason = %error.reason,
                        "invalid config: {error}"
                    );
                }
                tracing::error!(
                    path = %path,
                    errors = errors.len(),
                    trigger,
                    "config reload failed; the previous rules keep serving"
                );
                self.metrics.record_reload(false, now);
                status.last_outcome = Some(ReloadOutcome::Failure);
                status.last_error = Some(errors.to_string());
                status.failures += 1;
                Err(errors)
            }
        }
    }

    /// A load with no rules at all while rules are serving is almost always
    /// a deploy gone wrong (an emptied directory, every file deleted): it
    /// is counted and logged as an error, and refused with
    /// [`ConfigSource::refuse_empty`].
    fn refuse_if_empty(&self, loaded: Loaded) -> Result<Loaded, ConfigErrors> {
        let serving_some = !self.limiter.rules().is_empty();
        if !loaded.rules.is_empty() || !serving_some {
            return Ok(loaded);
        }
        self.metrics.record_empty_config();
        let path = self.source.source.display();
        if self.source.refuse_empty {
            return Err(ConfigErrors(vec![config::ConfigError {
                file: path,
                line: None,
                column: None,
                rule_path: String::new(),
                reason: "the config has no rules at all; refusing to remove every limit \
                         (--refuse-empty-config)"
                    .to_owned(),
            }]));
        }
        tracing::error!(
            path = %path.display(),
            "the new config has no rules at all: EVERY LIMIT IS REMOVED and every request \
             is allowed (start with --refuse-empty-config to keep the previous rules instead)"
        );
        Ok(loaded)
    }
}

pub(crate) fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reloads `reloader` off the async runtime's worker threads.
pub(crate) async fn reload_blocking<S: CounterStore>(
    reloader: &Arc<Reloader<S>>,
    trigger: &'static str,
) -> Result<(), ConfigErrors> {
    let reloader = Arc::clone(reloader);
    match tokio::task::spawn_blocking(move || reloader.reload(trigger)).await {
        Ok(result) => result,
        // The load panicked (it catches the YAML parser's panics itself):
        // the old rules serve on, which is what a failure means anyway.
        Err(e) => {
            tracing::error!(error = %e, "config reload task failed");
            Ok(())
        }
    }
}

/// What a file watcher looks at, and which events count.
struct WatchTarget {
    /// The directory to watch.
    dir: PathBuf,
    mode: RecursiveMode,
    /// When watching a file through its parent: the file's name.
    file_name: Option<std::ffi::OsString>,
}

fn watch_target(path: &Path) -> WatchTarget {
    if path.is_dir() {
        return WatchTarget {
            dir: path.to_path_buf(),
            mode: RecursiveMode::Recursive,
            file_name: None,
        };
    }
    entry_target(path)
}

/// The watch on the parent of `path`, for events naming `path` (a file, or
/// a symlink replaced by rename).
fn entry_target(path: &Path) -> WatchTarget {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    WatchTarget {
        dir,
        mode: RecursiveMode::NonRecursive,
        file_name: path.file_name().map(ToOwned::to_owned),
    }
}

/// A watcher of `target` sending one `()` per relevant event.
fn watcher_of(
    target: &WatchTarget,
    events: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let file_name = target.file_name.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if relevant(&event, file_name.as_deref()) => {
                let _ = events.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "config watch error"),
        })?;
    watcher.watch(&target.dir, target.mode)?;
    Ok(watcher)
}

/// Whether `event` may have changed the config.
fn relevant(event: &notify::Event, file_name: Option<&std::ffi::OsStr>) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match event.kind {
        // Reading files (our own reloads included) changes nothing; a
        // writer closing its file does.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    let Some(file_name) = file_name else {
        return true;
    };
    event.paths.iter().any(|path| {
        path.file_name()
            .is_some_and(|name| name == file_name || name.to_string_lossy().starts_with(".."))
    })
}

/// Starts watching `reloader`'s config path and/or listening for SIGHUP, as
/// its source asks, until `shutdown` turns true. Both are set up before this
/// returns, so a change made afterwards is never missed.
pub(crate) fn spawn<S: CounterStore>(
    reloader: Arc<Reloader<S>>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<Result<(), String>> {
    let (events, mut changes) = mpsc::unbounded_channel::<()>();
    let source = reloader.source().clone();
    // The built-in rules never change: nothing to watch.
    let watched = source
        .source
        .path()
        .filter(|_| source.watch)
        .map(Path::to_path_buf);
    let target = watched.as_deref().map(watch_target);
    let mut watcher = target
        .as_ref()
        .and_then(|target| watch_logged(target, "the config", &events));
    // Entries whose replacement means new rules, watched through their
    // parent: the runtime root symlink, and a config directory itself, which
    // deploy scripts delete and create again (`rm -rf config && cp -r new
    // config`); the watch inside it is renewed after each such event.
    let mut entries: Vec<(&str, PathBuf)> = Vec::new();
    if let (Some(root), Some(_)) = (&source.watch_root, &watched) {
        entries.push(("the runtime root symlink", root.clone()));
    }
    if let (
        Some(path),
        Some(WatchTarget {
            file_name: None, ..
        }),
    ) = (&watched, &target)
    {
        entries.push(("the config directory's parent", path.clone()));
    }
    let entry_watchers: Vec<notify::RecommendedWatcher> = entries
        .into_iter()
        .filter_map(|(what, entry)| watch_logged(&entry_target(&entry), what, &events))
        .collect();
    let mut hangup = if source.reload_on_sighup {
        hangup_signal()
    } else {
        None
    };

    tokio::spawn(async move {
        // Dropping a watcher stops it; keep them for the task's life.
        let _entry_watchers = entry_watchers;
        loop {
            // The branches only pick a trigger: awaiting inside one would
            // hold the shutdown receiver's (non-Send) guard across it.
            let trigger = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => None,
                Some(()) = changes.recv() => Some("file change"),
                () = next_hangup(&mut hangup) => Some("SIGHUP"),
            };
            let Some(trigger) = trigger else { break };
            if trigger == "file change" {
                debounce(&mut changes).await;
            }
            tracing::info!(trigger, "reloading the config");
            // What `path` is now may be a new directory (deleted and created
            // again) or, through the root symlink, another target: watch it
            // afresh. (The old watch may already be gone with its directory.)
            if let Some(target) = &target {
                renew(&mut watcher, target, &events);
            }
            // Failures are logged, counted and kept in the status.
            let _ = reload_blocking(&reloader, trigger).await;
        }
        Ok(())
    })
}

/// A watcher of `target`, logged; `None` (logged as an error) when it
/// cannot watch: SIGHUP and the admin server can still reload.
fn watch_logged(
    target: &WatchTarget,
    what: &str,
    events: &mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    match watcher_of(target, events.clone()) {
        Ok(watcher) => {
            tracing::info!(dir = %target.dir.display(), "watching {what} for changes");
            Some(watcher)
        }
        Err(e) => {
            tracing::error!(dir = %target.dir.display(), error = %e, "cannot watch {what}; reload with SIGHUP");
            None
        }
    }
}

/// Watches `target` again, or for the first time when it could not be
/// watched before (a directory that did not exist then).
fn renew(
    watcher: &mut Option<notify::RecommendedWatcher>,
    target: &WatchTarget,
    events: &mpsc::UnboundedSender<()>,
) {
    match watcher {
        Some(watcher) => {
            let _ = watcher.unwatch(&target.dir);
            if let Err(e) = watcher.watch(&target.dir, target.mode) {
                tracing::warn!(dir = %target.dir.display(), error = %e, "cannot renew the config watch");
            }
        }
        None => *watcher = watcher_of(target, events.clone()).ok(),
    }
}

/// Waits until no event has come for [`DEBOUNCE`] (at most [`MAX_DEBOUNCE`]).
async fn debounce(changes: &mut mpsc::UnboundedReceiver<()>) {
    let deadline = tokio::time::Instant::now() + MAX_DEBOUNCE;
    loop {
        let quiet = tokio::time::Instant::now() + DEBOUNCE;
        match tokio::time::timeout_at(quiet.min(deadline), changes.recv()).await {
            Ok(Some(())) if tokio::time::Instant::now() < deadline => {}
            _ => return,
        }
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Option<Hangup> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<Hangup> {
    None
}

/// The next SIGHUP; never, without a handler.
async fn next_hangup(hangup: &mut Option<Hangup>) {
    #[cfg(unix)]
    if let Some(signal) = hangup
        && signal.recv().await.is_some()
    {
        return;
    }
    #[cfg(not(unix))]
    let _ = hangup;
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn reads_do_not_trigger_reloads_but_writes_do() {
        let open = event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "/c/a.yaml",
        );
        let closed = event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "/c/a.yaml",
        );
        assert!(!relevant(&open, None));
        assert!(relevant(&closed, None));
    }

    #[test]
    fn a_watched_file_counts_only_its_own_and_configmap_events() {
        let name = std::ffi::OsStr::new("rules.yaml");
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(relevant(&event(modify, "/etc/rl/rules.yaml"), Some(name)));
        assert!(relevant(
            &event(EventKind::Create(CreateKind::Any), "/etc/rl/..data"),
            Some(name)
        ));
        assert!(!relevant(&event(modify, "/etc/rl/other.txt"), Some(name)));
    }
}
