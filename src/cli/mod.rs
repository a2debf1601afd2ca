//! The command line: `floodgate serve` and `floodgate check`.
//!
//! Every flag can also be set from an environment variable (shown in
//! `--help`). Where the reference server has a variable of the same meaning
//! (`SHADOW_MODE`, `MERGE_DOMAIN_CONFIG`, ...), floodgate reads that name.

use std::sync::Arc;

mod args;

mod overrides;
mod parse;
pub mod reference_env;

pub use args::{
    CheckArgs, Cli, Command, ConfigArgs, LogFormat, OnStoreError, OverridesAction, OverridesArgs,
    RequestLimitArgs, ServeArgs, StatsArgs, StoreArgs, StoreModeArg, StoreTime, TlsArgs,
    TracingArgs, reference_invocation,
};
pub use overrides::run as overrides;

pub use parse::{Tags, parse_duration};

use crate::clock::SystemClock;
use crate::config::{self, ConfigErrors, LoadOptions, Loaded, Source};
use crate::decide::{RateLimiter, ServiceOptions, StoreErrorPolicy};
use crate::health::Health;
use crate::observe::mapper::Mapper;
use crate::observe::reference::ReferenceStats;
use crate::observe::statsd::StatsdOptions;
use crate::observe::traces::{Protocol, TracedStore, Traces, TracingOptions};
use crate::respond::{LimitHeaderNames, ResponseOptions};
use crate::rules::RuleSet;
use crate::server::{
    self, ConfigSource, Listeners, OverrideOptions, ReferenceSinks, ServerOptions,
};

/// Loads rules, printing every error (file, line, reason) to stderr.
fn load_rules(source: &Source, options: &LoadOptions) -> Result<Loaded, ConfigErrors> {
    source.load(options).inspect_err(|errors| {
        eprintln!("floodgate: invalid config {}:", source.display().display());
        eprintln!("{errors}");
    })
}

/// `floodgate check`: 0 when valid (one summary line per domain, warnings
/// on stderr), 1 when not, or with `--strict` when there are warnings.
pub fn check(args: &CheckArgs) -> i32 {
    let source = Source::from_arg(&args.config.config);
    if source == Source::BuiltIn {
        eprintln!(
            "floodgate: checking the rules built into the binary (no ./config here; \
             name a file or directory with --config)"
        );
    }
    let Ok(loaded) = load_rules(&source, &args.config.load_options()) else {
        return 1;
    };
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    for line in config::summary(&loaded.rules) {
        println!("{line}");
    }
    if args.strict && !loaded.warnings.is_empty() {
        eprintln!(
            "floodgate: {} warning(s), and --strict fails on warnings",
            loaded.warnings.len()
        );
        return 1;
    }
    0
}

/// Sets up `tracing` as asked.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(parse::tracing_filter(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a terminal: in a file or a pipe they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `floodgate serve`: runs until SIGINT or SIGTERM; 0 after a clean
/// shutdown, 1 when the config or the TLS files are invalid, a listener
/// cannot start, or in-flight requests outlive the shutdown grace period.
pub async fn serve(args: ServeArgs) -> i32 {
    let tls = match args.tls.load() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("floodgate: {e}");
            return 1;
        }
    };
    let source = match args.source() {
        Ok(source) => source,
        Err(e) => {
            eprintln!("floodgate: {e}");
            return 1;
        }
    };
    // Loaded once: the server records this load as the reloader's first.
    // An xDS server pushes its rules once the server runs.
    let initial = match &source {
        Source::Xds(settings) => {
            if let Err(e) = server::xds::XdsClient::prepare(settings) {
                eprintln!("floodgate: {e}");
                return 1;
            }
            None
        }
        _ => Some(match load_rules(&source, &args.config.load_options()) {
            Ok(loaded) => Ok(loaded),
            Err(errors) if args.force_start_without_initial_config => {
                eprintln!(
                    "floodgate: starting without rules (--force-start-without-initial-config): \
                         NOT_SERVING until the config loads"
                );
                Err(errors)
            }
            Err(_) => return 1,
        }),
    };
    let rules_loaded = initial.as_ref().is_some_and(Result::is_ok);
    let reference = match reference_sinks(&args.stats) {
        Ok(reference) => reference,
        Err(e) => {
            eprintln!("floodgate: {e}");
            return 1;
        }
    };
    let health = Health::new();
    health.set_rules_required(args.rules_required(&source));
    health.set_store_required(args.store.outage_makes_unhealthy());
    let store = match args.store.open(args.max_counters, &health).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("floodgate: {e}");
            return 1;
        }
    };
    let traces = match traces(&args.tracing) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("floodgate: {e}");
            return 1;
        }
    };
    let store = TracedStore::new(store, traces.as_ref().map(|t| t.tracer()));
    // The rules go in with the initial load, before any listener serves.
    let limiter = Arc::new(RateLimiter::new(
        RuleSet::empty(),
        store,
        Arc::new(SystemClock),
        ServiceOptions {
            shadow_mode: args.shadow_mode,
            stop_increment_when_over_limit: args.stop_cache_key_increment_when_overlimit,
            on_store_error: args.store.on_store_error.into(),
            request_limits: (&args.request_limits).into(),
        },
    ));
    let listeners = Listeners {
        grpc: args.grpc_addr,
        http: args.http_addr,
    };
    let tls_mode = match &tls {
        None => "off",
        Some(tls) if tls.files().client_ca.is_some() => "mutual",
        Some(_) => "on",
    };
    let options = ServerOptions {
        admin: Some(args.admin_addr),
        config: Some(ConfigSource {
            source,
            refuse_empty: args.refuse_empty_config,
            load_options: args.config.load_options(),
            watch: args.config_watch,
            reload_on_sighup: true,
            watch_root: args.config_watch_root.clone(),
        }),
        near_limit_ratio: args.near_limit_ratio,
        tls,
        health,
        rules_loaded,
        initial_load: initial,
        max_connection_age: (!args.grpc_max_connection_age.is_zero()).then_some((
            args.grpc_max_connection_age,
            args.grpc_max_connection_age_grace,
        )),
        response: ResponseOptions {
            limit_headers: args.limit_response_headers_enabled.then(|| {
                Arc::new(LimitHeaderNames {
                    limit: args.limit_limit_header.clone(),
                    remaining: args.limit_remaining_header.clone(),
                    reset: args.limit_reset_header.clone(),
                })
            }),
            dynamic_metadata: args.dynamic_metadata,
        },
        reference,
        traces,
        overrides: OverrideOptions {
            file: args.overrides_file.clone(),
            token: args.admin_token.clone(),
        },
    };
    let running = match server::start_with(limiter, &listeners, options).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("floodgate: {}", listen_error(&e));
            return 1;
        }
    };
    tracing::info!(
        grpc = %running.grpc_addr,
        http = %running.http_addr,
        admin = %running.admin_addr.map(|a| a.to_string()).unwrap_or_default(),
        prometheus = %running.prometheus_addr.map(|a| a.to_string()).unwrap_or_default(),
        tls = tls_mode,
        "floodgate serving"
    );
    shutdown_signal().await;
    tracing::info!(grace = ?args.shutdown_grace, "shutting down: finishing in-flight requests");
    tokio::select! {
        result = running.shutdown_within(args.shutdown_grace) => match result {
            Ok(()) => {
                tracing::info!("shutdown complete: every in-flight request finished");
                0
            }
            Err(e) => {
                eprintln!("floodgate: {e}");
                1
            }
        },
        // An operator who signals twice wants out now.
        () = shutdown_signal() => {
            eprintln!("floodgate: second signal during shutdown: stopping now");
            1
        }
    }
}

/// Why the server could not start, naming the address and the flag that
/// set it when a listener could not be bound.
fn listen_error(error: &std::io::Error) -> String {
    let Some(bind) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<server::BindError>())
    else {
        return format!("cannot listen: {error}");
    };
    let (what, flag, env) = match bind.listener {
        server::ListenerKind::Grpc => ("gRPC", "--grpc-addr", "FLOODGATE_GRPC_ADDR"),
        server::ListenerKind::Http => ("HTTP", "--http-addr", "FLOODGATE_HTTP_ADDR"),
        server::ListenerKind::Admin => ("admin", "--admin-addr", "FLOODGATE_ADMIN_ADDR"),
    };
    format!(
        "cannot listen on {} for {what} (set with {flag} or {env}): {}",
        bind.addr, bind.source
    )
}

/// The reference's stats and their sinks, as `args` ask; `None` when no
/// sink reads them. A mapping file that cannot be read or used is an error
/// (the reference ignores a broken one and serves unmapped names, which
/// would silently break every dashboard); a missing one is warned about
/// and the default mapping serves.
fn reference_sinks(args: &StatsArgs) -> Result<Option<ReferenceSinks>, String> {
    let statsd = args.use_statsd || args.use_dog_statsd;
    if args.disable_stats || !(statsd || args.use_prometheus) {
        return Ok(None);
    }
    let mapper = if !args.use_prometheus {
        None
    } else if let Some(path) = &args.prometheus_mapper_yaml {
        match std::fs::read_to_string(path) {
            Ok(text) => Some(Mapper::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?),
            // Envoy Gateway mounts its mapping from an optional ConfigMap:
            // without it, the reference's default names beat refusing to
            // start (and beat the reference's unmapped names).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    path = %path.display(),
                    "PROMETHEUS_MAPPER_YAML does not exist: serving the reference's default mapping"
                );
                Some(Mapper::reference_default(
                    args.prometheus_response_time_as_milliseconds,
                ))
            }
            Err(e) => return Err(format!("PROMETHEUS_MAPPER_YAML {}: {e}", path.display())),
        }
    } else {
        Some(Mapper::reference_default(
            args.prometheus_response_time_as_milliseconds,
        ))
    };
    let host = &args.statsd_host;
    let target = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", args.statsd_port)
    } else {
        format!("{host}:{}", args.statsd_port)
    };
    Ok(Some(ReferenceSinks {
        stats: Arc::new(ReferenceStats::new(mapper, args.stats_max_dynamic_keys)),
        prometheus: args
            .use_prometheus
            .then(|| (args.prometheus_addr, args.prometheus_path.clone())),
        statsd: statsd.then(|| StatsdOptions {
            target,
            interval: args.stats_flush_interval,
            tags: args.extra_tags.0.clone(),
            dogstatsd: args.use_dog_statsd,
        }),
    }))
}

/// The trace pipeline when `TRACING_ENABLED`; call on the runtime.
fn traces(args: &TracingArgs) -> Result<Option<Arc<Traces>>, String> {
    if !args.tracing_enabled {
        return Ok(None);
    }
    let options = TracingOptions {
        service_name: args.tracing_service_name.clone(),
        service_namespace: args.tracing_service_namespace.clone(),
        service_instance_id: args.tracing_service_instance_id.clone(),
        sampling_rate: args.tracing_sampling_rate,
        protocol: Protocol::parse(&args.tracing_exporter_protocol)?,
        endpoint: None,
    };
    let traces = Traces::new(&options)?;
    tracing::info!(
        service = %options.service_name,
        protocol = ?options.protocol,
        sampling_rate = options.sampling_rate,
        "exporting OpenTelemetry traces"
    );
    Ok(Some(Arc::new(traces)))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

impl From<OnStoreError> for StoreErrorPolicy {
    fn from(value: OnStoreError) -> StoreErrorPolicy {
        match value {
            OnStoreError::Allow => StoreErrorPolicy::Allow,
            OnStoreError::Deny => StoreErrorPolicy::Deny,
            OnStoreError::Error => StoreErrorPolicy::Error,
        }
    }
}
