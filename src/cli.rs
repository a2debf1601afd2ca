//! The command line: `floodgate serve` and `floodgate check`.
//!
//! Every flag can also be set from an environment variable (shown in
//! `--help`). Where the reference server has a variable of the same meaning
//! (`SHADOW_MODE`, `MERGE_DOMAIN_CONFIG`, ...), floodgate reads that name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clock::SystemClock;
use crate::config::{self, LoadOptions};
use crate::policy::{LimitHeaderNames, ResponseOptions};
use crate::rules::RuleSet;
use crate::server::{self, ConfigSource, Listeners, ServerOptions};
use crate::service::{RateLimiter, RequestLimits, ServiceOptions};
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
    Serve(Box<ServeArgs>),
    /// Validate a config file or directory and summarise it.
    Check(CheckArgs),
}

/// Where rules come from, shared by `serve` and `check`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// A YAML rules file, or a directory of `*.yaml`/`*.yml` files.
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
    /// A key longer than 256 bytes counts as one more per further 256 bytes.
    #[arg(long, env = "FLOODGATE_MAX_COUNTERS", default_value_t = 1_000_000)]
    pub max_counters: u64,

    /// Report every over-limit descriptor as OK, but keep counting.
    #[arg(long, env = "SHADOW_MODE")]
    pub shadow_mode: bool,

    /// A request denied by any descriptor consumes nothing from any counter.
    #[arg(long, env = "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT")]
    pub stop_cache_key_increment_when_overlimit: bool,

    /// Add limit, remaining and reset headers to every answer with a limit,
    /// chosen as the reference server chooses them (smallest remaining; the
    /// last OVER_LIMIT descriptor wins).
    #[arg(long, env = "LIMIT_RESPONSE_HEADERS_ENABLED")]
    pub limit_response_headers_enabled: bool,

    /// Name of the limit header.
    #[arg(long, env = "LIMIT_LIMIT_HEADER", default_value = "RateLimit-Limit")]
    pub limit_limit_header: String,

    /// Name of the remaining header.
    #[arg(
        long,
        env = "LIMIT_REMAINING_HEADER",
        default_value = "RateLimit-Remaining"
    )]
    pub limit_remaining_header: String,

    /// Name of the reset header (seconds until the window resets).
    #[arg(long, env = "LIMIT_RESET_HEADER", default_value = "RateLimit-Reset")]
    pub limit_reset_header: String,

    /// Attach dynamic metadata (matched rules, remaining counts) to every answer.
    #[arg(long, env = "FLOODGATE_DYNAMIC_METADATA", default_value_t = true, action = clap::ArgAction::Set)]
    pub dynamic_metadata: bool,

    /// Log level or `tracing` filter (e.g. `info`, `floodgate=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, env = "FLOODGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Address of the admin server (`/rlconfig`, `/usage`, `/reload`).
    /// Loopback by default: it shows every rule and counter.
    #[arg(long, env = "FLOODGATE_ADMIN_ADDR", default_value = "127.0.0.1:6070")]
    pub admin_addr: SocketAddr,

    /// Hits above this share of a limit count as near the limit (metrics only).
    #[arg(long, env = "NEAR_LIMIT_RATIO", default_value_t = crate::metrics::DEFAULT_NEAR_LIMIT_RATIO, value_parser = parse_ratio)]
    pub near_limit_ratio: f32,

    /// Reload the rules when the config file or directory changes (SIGHUP
    /// reloads them either way).
    #[arg(long, env = "FLOODGATE_CONFIG_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub config_watch: bool,

    /// The largest request accepted (`--max-descriptors`, ...).
    #[command(flatten)]
    pub request_limits: RequestLimits,
}

fn parse_ratio(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("expected a number from 0 to 1, got '{text}'")),
    }
}

/// Loads rules, printing every error (file, line, reason) to stderr.
fn load_rules(path: &Path, options: &LoadOptions) -> Result<RuleSet, ()> {
    config::load_path(path, options).map_err(|errors| {
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
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `floodgate serve`: runs until SIGINT or SIGTERM; 0 after a clean
/// shutdown, 1 when the config is invalid or a listener cannot start.
pub async fn serve(args: ServeArgs) -> i32 {
    let Ok(rules) = load_rules(&args.config.config, &args.config.load_options()) else {
        return 1;
    };
    // The server loads the path again at start (its reloader logs the
    // summary and records the version); this load only refuses to start on
    // a bad config.
    let limiter = Arc::new(RateLimiter::new(
        rules,
        MemoryStore::new(args.max_counters),
        Arc::new(SystemClock),
        ServiceOptions {
            shadow_mode: args.shadow_mode,
            stop_increment_when_over_limit: args.stop_cache_key_increment_when_overlimit,
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
            request_limits: args.request_limits.clone(),
        },
    ));
    let listeners = Listeners {
        grpc: args.grpc_addr,
        http: args.http_addr,
    };
    let options = ServerOptions {
        admin: Some(args.admin_addr),
        config: Some(ConfigSource {
            path: args.config.config.clone(),
            load_options: args.config.load_options(),
            watch: args.config_watch,
            reload_on_sighup: true,
        }),
        near_limit_ratio: args.near_limit_ratio,
        ..ServerOptions::default()
    };
    let running = match server::start_with(limiter, &listeners, options).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("floodgate: cannot listen: {e}");
            return 1;
        }
    };
    tracing::info!(
        grpc = %running.grpc_addr,
        http = %running.http_addr,
        admin = %running.admin_addr.map(|a| a.to_string()).unwrap_or_default(),
        "floodgate serving"
    );
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    match running.shutdown().await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("floodgate: {e}");
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
