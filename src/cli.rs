//! The command line: `floodgate serve` and `floodgate check`.
//!
//! Every flag can also be set from an environment variable (shown in
//! `--help`). Where the reference server has a variable of the same meaning
//! (`SHADOW_MODE`, `MERGE_DOMAIN_CONFIG`, ...), floodgate reads that name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clock::SystemClock;
use crate::config::{self, LoadOptions};
use crate::rules::RuleSet;
use crate::server::{self, Listeners, ServerOptions};
use crate::service::{RateLimiter, ServiceOptions};
use crate::settings::{self, TlsArgs};
use crate::store::memory::MemoryStore;

/// floodgate: a rate-limit decision service for Envoy, Istio and gRPC clients.
#[derive(Debug, Parser)]
#[command(name = "floodgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve rate-limit decisions over gRPC and HTTP.
    Serve(ServeArgs),
    /// Validate a config file or directory and summarise it.
    Check(CheckArgs),
}

/// Where rules come from, shared by `serve` and `check`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// A YAML rules file, or a directory of `*.yaml`/`*.yml` files;
    /// `embedded:` serves the rules built into the binary.
    #[arg(long, env = "FLOODGATE_CONFIG", default_value = "config")]
    pub config: PathBuf,

    /// Let several files add descriptors to one domain.
    #[arg(long, env = "MERGE_DOMAIN_CONFIG")]
    pub merge_domain_config: bool,
}

impl ConfigArgs {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            merge_domains: self.merge_domain_config,
        }
    }
}

/// `floodgate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `floodgate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Address of the gRPC server (RLS v3, health, reflection).
    #[arg(long, env = "FLOODGATE_GRPC_ADDR", default_value = "0.0.0.0:8081")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP server (`POST /json`, `GET /healthcheck`).
    #[arg(long, env = "FLOODGATE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Most counters held in memory; the least recently used are evicted first.
    #[arg(long, env = "FLOODGATE_MAX_COUNTERS", default_value_t = 1_000_000)]
    pub max_counters: u64,

    /// Report every over-limit descriptor as OK, but keep counting.
    #[arg(long, env = "SHADOW_MODE")]
    pub shadow_mode: bool,

    /// A request denied by any descriptor consumes nothing from any counter.
    #[arg(long, env = "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT")]
    pub stop_cache_key_increment_when_overlimit: bool,

    /// Log level or `tracing` filter (e.g. `info`, `floodgate=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, env = "FLOODGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish;
    /// then floodgate exits anyway, with status 1.
    #[arg(long, env = "FLOODGATE_SHUTDOWN_GRACE", default_value = "10s", value_parser = settings::parse_duration)]
    pub shutdown_grace: Duration,
}

/// Loads rules, printing every error (file, line, reason) to stderr.
fn load_rules(path: &Path, options: &LoadOptions) -> Result<RuleSet, ()> {
    settings::load_config(path, options).map_err(|errors| {
        eprintln!("floodgate: invalid config {}:", path.display());
        eprintln!("{errors}");
    })
}

/// `floodgate check`: 0 when valid (one summary line per domain), 1 when not.
pub fn check(args: &CheckArgs) -> i32 {
    match load_rules(&args.config.config, &args.config.load_options()) {
        Ok(rules) => {
            for line in config::summary(&rules) {
                println!("{line}");
            }
            0
        }
        Err(()) => 1,
    }
}

/// Sets up `tracing` as asked.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(settings::tracing_filter(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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
    let Ok(rules) = load_rules(&args.config.config, &args.config.load_options()) else {
        return 1;
    };
    for line in config::summary(&rules) {
        tracing::info!(target: "floodgate", "loaded {line}");
    }
    let limiter = Arc::new(RateLimiter::new(
        rules,
        MemoryStore::new(args.max_counters),
        Arc::new(SystemClock),
        ServiceOptions {
            shadow_mode: args.shadow_mode,
            stop_increment_when_over_limit: args.stop_cache_key_increment_when_overlimit,
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
    let running = match server::start_with(limiter, &listeners, ServerOptions { tls }).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("floodgate: cannot listen: {e}");
            return 1;
        }
    };
    tracing::info!(grpc = %running.grpc_addr, http = %running.http_addr, tls = tls_mode, "floodgate serving");
    shutdown_signal().await;
    tracing::info!(grace = ?args.shutdown_grace, "shutting down: finishing in-flight requests");
    tokio::select! {
        result = running.shutdown_within(args.shutdown_grace) => match result {
            Ok(()) => 0,
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
