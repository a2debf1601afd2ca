//! Every flag of `floodgate serve` and `floodgate check` (clap), with its
//! environment variable; the reference server's own variables become their
//! defaults ([`super::reference_env`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod observe;
mod store;
mod xds_server;

pub use observe::{StatsArgs, TracingArgs};
pub use store::{OnStoreError, StoreArgs, StoreModeArg, StoreTime};
pub use xds_server::XdsArgs;

use super::parse::{parse_bool, parse_duration, parse_ratio};
use crate::config::{LoadOptions, Source};
use crate::decide::validate::{
    DEFAULT_MAX_DESCRIPTOR_ENTRIES, DEFAULT_MAX_DESCRIPTORS, DEFAULT_MAX_KEY_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_VALUE_BYTES,
};

use crate::decide::RequestLimits;
use crate::server::{LoadedTls, TlsFiles};

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
    /// Set, list or delete operators' overrides on a running floodgate,
    /// through its admin API.
    Overrides(OverridesArgs),
}

/// `floodgate overrides`.
#[derive(Debug, Args)]
pub struct OverridesArgs {
    /// The admin server of the floodgate to change (`host:port`).
    #[arg(long, env = "FLOODGATE_ADMIN_ADDR", default_value = "127.0.0.1:6070")]
    pub admin_addr: String,

    /// The admin token (`--admin-token` of the server).
    #[arg(long, env = "FLOODGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub action: OverridesAction,
}

/// `floodgate overrides set|list|delete`.
#[derive(Debug, Subcommand)]
pub enum OverridesAction {
    /// Set the limits of one descriptor (replacing its override, if any).
    Set {
        /// The domain.
        #[arg(long)]
        domain: String,
        /// A descriptor entry `key=value`, in request order (repeat).
        #[arg(long = "entry", required = true)]
        entries: Vec<String>,
        /// A limit: `RPU/UNIT`, then optional `,key=value` settings
        /// (`name`, `algorithm`, `unit_multiplier`, `burst`, `calendar`,
        /// `time_zone`), e.g. `10/minute,algorithm=token_bucket,burst=20,name=burst`
        /// (repeat for several limits).
        #[arg(long = "limit", required = true)]
        limits: Vec<String>,
        /// When the override stops applying, in Unix seconds.
        #[arg(long)]
        expires_at: Option<u64>,
    },
    /// List the overrides (of one domain).
    List {
        /// Only this domain's.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Delete the override of one descriptor.
    Delete {
        /// The domain.
        #[arg(long)]
        domain: String,
        /// A descriptor entry `key=value`, in request order (repeat).
        #[arg(long = "entry", required = true)]
        entries: Vec<String>,
    },
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

    /// Count every `month` limit in UTC calendar months (from the 1st,
    /// 00:00 UTC) instead of 30-day windows since 1970.
    #[arg(long, env = "USE_CALENDAR_MONTH_RATE_LIMIT")]
    pub calendar_month: bool,
}

impl ConfigArgs {
    pub(crate) fn load_options(&self) -> LoadOptions {
        LoadOptions {
            merge_domains: self.merge_domain_config,
            calendar_month: self.calendar_month,
        }
    }
}

/// `floodgate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Fail (exit 1) when the config has warnings (a duplicate YAML key, a
    /// domain named twice, a key with no meaning where it is written).
    #[arg(long)]
    pub strict: bool,
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

    /// Most counters held in memory; when full, a counter not used recently
    /// is evicted (a CLOCK sweep: approximately least recently used).
    /// A key longer than 256 bytes counts as one more per further 256 bytes.
    #[arg(long, env = "FLOODGATE_MAX_COUNTERS", default_value_t = 1_000_000)]
    pub max_counters: u64,

    /// Where counters live (memory or Redis) and what to do when Redis fails.
    #[command(flatten)]
    pub store: StoreArgs,

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

    #[command(flatten)]
    pub tls: TlsArgs,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish;
    /// then floodgate exits anyway, with status 1.
    #[arg(long, env = "FLOODGATE_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// After this, a gRPC connection is told to go away (HTTP/2 GOAWAY) and
    /// the client reconnects, so a fleet scaled out rebalances Envoy's
    /// long-lived connections; `0` never ages a connection.
    #[arg(long, env = "GRPC_MAX_CONNECTION_AGE", default_value = "24h", value_parser = parse_duration)]
    pub grpc_max_connection_age: Duration,

    /// How long an aged connection may finish its requests before it is
    /// closed.
    #[arg(long, env = "GRPC_MAX_CONNECTION_AGE_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub grpc_max_connection_age_grace: Duration,

    /// Address of the admin server (`/rlconfig`, `/usage`, `/reload`).
    /// Loopback by default: it shows every rule and counter.
    #[arg(long, env = "FLOODGATE_ADMIN_ADDR", default_value = "127.0.0.1:6070")]
    pub admin_addr: SocketAddr,

    /// The bearer token `PUT`/`DELETE /overrides` (and `POST /reload`)
    /// need. Without it, overrides can be changed only on a loopback admin
    /// address.
    #[arg(long, env = "FLOODGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// With the memory store: the file operators' overrides persist in
    /// (JSON, written atomically on every change, read at start). With
    /// Redis, overrides live in Redis and this is not used.
    #[arg(long, env = "FLOODGATE_OVERRIDES_FILE")]
    pub overrides_file: Option<PathBuf>,

    /// Hits above this share of a limit count as near the limit (metrics only).
    #[arg(long, env = "NEAR_LIMIT_RATIO", default_value_t = crate::observe::metrics::DEFAULT_NEAR_LIMIT_RATIO, value_parser = parse_ratio)]
    pub near_limit_ratio: f32,

    /// Reload the rules when the config file or directory changes (SIGHUP
    /// reloads them either way).
    #[arg(long, env = "FLOODGATE_CONFIG_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub config_watch: bool,

    /// Also reload when this symlink (above `--config`) is replaced, as
    /// the reference does for `RUNTIME_ROOT` with `RUNTIME_WATCH_ROOT=true`.
    #[arg(long, env = "FLOODGATE_CONFIG_WATCH_ROOT")]
    pub config_watch_root: Option<PathBuf>,

    /// Start even when the config cannot be loaded: the server then
    /// reports NOT_SERVING until a reload (file change, SIGHUP, admin)
    /// succeeds, instead of exiting. With an xDS server: serve (healthy,
    /// unless `--healthy-with-at-least-one-config-loaded true`) before its
    /// first rules arrive, as Envoy Gateway runs the reference.
    #[arg(long, env = "FORCE_START_WITHOUT_INITIAL_CONFIG")]
    pub force_start_without_initial_config: bool,

    /// Whether health needs rules loaded at least once. Default: true,
    /// except with an xDS server and `--force-start-without-initial-config`,
    /// where it is the reference's default, false (Envoy Gateway's
    /// readiness probe must pass before the first config arrives).
    #[arg(long, env = "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED", value_parser = parse_bool)]
    pub healthy_with_at_least_one_config_loaded: Option<bool>,

    /// How to reach an xDS management server (`--config xds://host:port`).
    #[command(flatten)]
    pub xds: XdsArgs,

    /// Refuse a reload whose config has no rules at all while rules are
    /// serving (an emptied directory, every file deleted): the previous
    /// rules keep serving and the reload counts as failed. Without it such
    /// a reload removes every limit, with an error line in the log and in
    /// `floodgate_config_empty_loads_total`.
    #[arg(long, env = "FLOODGATE_REFUSE_EMPTY_CONFIG")]
    pub refuse_empty_config: bool,

    /// The largest request accepted (`--max-descriptors`, ...).
    #[command(flatten)]
    pub request_limits: RequestLimitArgs,

    /// The reference's stats: statsd and its Prometheus listener.
    #[command(flatten)]
    pub stats: StatsArgs,

    /// OpenTelemetry traces, as the reference exports them.
    #[command(flatten)]
    pub tracing: TracingArgs,
}

impl ServeArgs {
    /// The rule source `--config` names, with the xDS flags applied to an
    /// `xds://` one.
    pub fn source(&self) -> Result<Source, String> {
        let mut source = Source::from_arg(&self.config.config);
        if let Source::Xds(settings) = &mut source {
            self.xds.apply(settings)?;
        }
        Ok(source)
    }

    /// Whether health needs rules loaded at least once, for `source`.
    pub fn rules_required(&self, source: &Source) -> bool {
        self.healthy_with_at_least_one_config_loaded
            .unwrap_or(!(source.is_pushed() && self.force_start_without_initial_config))
    }
}

/// The command line to parse: `args` as given, except that a binary named
/// `ratelimit` (the reference's `/bin/ratelimit`, which the container image
/// links to floodgate) run without arguments serves, as the reference does,
/// so a Deployment whose `command` is `["/bin/ratelimit"]` works unchanged.
pub fn reference_invocation(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let named_ratelimit = args
        .first()
        .and_then(|program| Path::new(program).file_name())
        .is_some_and(|name| name == "ratelimit");
    if named_ratelimit && args.len() == 1 {
        args.push("serve".into());
    }
    args
}

/// TLS on the gRPC port: `serve`'s flags.
#[derive(Clone, Debug, Default, Args)]
pub struct TlsArgs {
    /// Serve gRPC over TLS with this certificate chain (PEM). Needs
    /// `--tls-key`. Also `GRPC_SERVER_TLS_CERT` with `GRPC_SERVER_USE_TLS=true`.
    #[arg(long, env = "FLOODGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM). Also `GRPC_SERVER_TLS_KEY`.
    #[arg(long, env = "FLOODGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS.
    /// Also `GRPC_CLIENT_TLS_CACERT`.
    #[arg(long, env = "FLOODGATE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to load: `None` for plaintext; an error when only part of
    /// a TLS setup is given (a key without a certificate, a client CA
    /// without a server certificate), rather than silently serving
    /// plaintext.
    pub fn files(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            (Some(_), None) => Err("--tls-cert needs --tls-key".to_owned()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert".to_owned()),
            (None, None) if self.tls_client_ca.is_some() => {
                Err("--tls-client-ca needs --tls-cert and --tls-key".to_owned())
            }
            (None, None) => Ok(None),
        }
    }

    /// [`TlsArgs::files`], read and checked: the message names the file
    /// and what is wrong with it.
    pub fn load(&self) -> Result<Option<LoadedTls>, String> {
        match self.files()? {
            Some(files) => files.load().map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }
}

/// The largest request accepted: the flags of [`RequestLimits`].
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct RequestLimitArgs {
    /// Most descriptors in one request.
    #[arg(long, env = "FLOODGATE_MAX_DESCRIPTORS", default_value_t = DEFAULT_MAX_DESCRIPTORS)]
    pub max_descriptors: usize,

    /// Most entries in one descriptor.
    #[arg(long, env = "FLOODGATE_MAX_DESCRIPTOR_ENTRIES", default_value_t = DEFAULT_MAX_DESCRIPTOR_ENTRIES)]
    pub max_descriptor_entries: usize,

    /// Longest entry key, and longest domain, in bytes.
    #[arg(long, env = "FLOODGATE_MAX_KEY_BYTES", default_value_t = DEFAULT_MAX_KEY_BYTES)]
    pub max_key_bytes: usize,

    /// Longest entry value in bytes.
    #[arg(long, env = "FLOODGATE_MAX_VALUE_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,

    /// Largest request message in bytes: a gRPC message (after
    /// decompression) or a `POST /json` body.
    #[arg(long, env = "FLOODGATE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
}

impl From<&RequestLimitArgs> for RequestLimits {
    fn from(args: &RequestLimitArgs) -> RequestLimits {
        RequestLimits {
            max_descriptors: args.max_descriptors,
            max_descriptor_entries: args.max_descriptor_entries,
            max_key_bytes: args.max_key_bytes,
            max_value_bytes: args.max_value_bytes,
            max_message_bytes: args.max_message_bytes,
        }
    }
}

#[cfg(test)]
mod tests;
