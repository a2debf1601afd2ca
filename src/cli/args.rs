//! Every flag of `floodgate serve` and `floodgate check` (clap), with its
//! environment variable; the reference server's own variables become their
//! defaults ([`super::reference_env`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::parse::{
    Tags, parse_bool, parse_duration, parse_factor, parse_listen_addr, parse_pairs, parse_ratio,
    parse_tags,
};
use crate::config::xds::{self, Backoff, XdsSettings, XdsTls};
use crate::config::{LoadOptions, Source};
use crate::decide::validate::{
    DEFAULT_MAX_DESCRIPTOR_ENTRIES, DEFAULT_MAX_DESCRIPTORS, DEFAULT_MAX_KEY_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_VALUE_BYTES,
};

use crate::decide::RequestLimits;
use crate::health::Health;
use crate::server::{LoadedTls, TlsFiles};
use crate::store::AnyStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::{
    DEFAULT_KEY_PREFIX, RedisOptions, RedisStore, RedisTlsFiles, StoreMode, TimeSource,
    percent_encode,
};

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

/// The reference server's stats, under its names (its variables read as
/// they are). floodgate's own series at `GET /metrics` do not depend on any
/// of these.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Send the reference's stats to statsd (UDP). On by default, as in the
    /// reference, so that a replaced image keeps feeding a statsd pipeline;
    /// off when `USE_PROMETHEUS=true` leaves `USE_STATSD` unset (the
    /// reference refuses both at once).
    #[arg(long, env = "USE_STATSD", default_value_t = true, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub use_statsd: bool,

    /// Send them in DogStatsD format (tags as `|#key:value`).
    #[arg(long, env = "USE_DOG_STATSD", default_value_t = false, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub use_dog_statsd: bool,

    /// The statsd server's host.
    #[arg(long, env = "STATSD_HOST", default_value = "localhost")]
    pub statsd_host: String,

    /// The statsd server's port.
    #[arg(long, env = "STATSD_PORT", default_value_t = 8125)]
    pub statsd_port: u16,

    /// Tags on every statsd line: `key:value,key:value`.
    #[arg(long, env = "EXTRA_TAGS", default_value = "", value_parser = parse_tags)]
    pub extra_tags: Tags,

    /// How often statsd lines are sent.
    #[arg(long, env = "STATS_FLUSH_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub stats_flush_interval: Duration,

    /// Keep none of the reference's stats (statsd and the reference's
    /// Prometheus listener are off; `floodgate_*` series stay).
    #[arg(long, env = "DISABLE_STATS", default_value_t = false, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub disable_stats: bool,

    /// Serve the reference's series, named by its statsd-to-Prometheus
    /// mapping, on `--prometheus-addr`.
    #[arg(long, env = "USE_PROMETHEUS", default_value_t = false, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub use_prometheus: bool,

    /// Where the reference's series are served: `host:port` or `:port`.
    #[arg(long, env = "PROMETHEUS_ADDR", default_value = ":9090", value_parser = parse_listen_addr)]
    pub prometheus_addr: SocketAddr,

    /// The path they are served at.
    #[arg(long, env = "PROMETHEUS_PATH", default_value = "/metrics")]
    pub prometheus_path: String,

    /// A statsd_exporter mapping file replacing the reference's default
    /// mapping (see the README for what it may contain).
    #[arg(long, env = "PROMETHEUS_MAPPER_YAML")]
    pub prometheus_mapper_yaml: Option<PathBuf>,

    /// The response-time histogram in milliseconds instead of seconds.
    #[arg(long, env = "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS", default_value_t = false, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub prometheus_response_time_as_milliseconds: bool,

    /// Most stat keys named after request values (`detailed_metric` rules,
    /// request limit overrides), over the process's life; later values
    /// count under the rule's own key.
    #[arg(long, env = "FLOODGATE_STATS_MAX_DYNAMIC_KEYS", default_value_t = crate::observe::reference::DEFAULT_MAX_DYNAMIC_KEYS)]
    pub stats_max_dynamic_keys: usize,
}

/// OpenTelemetry traces (the reference's variables; the exporter reads the
/// standard `OTEL_EXPORTER_OTLP_*` variables itself).
#[derive(Debug, Args)]
pub struct TracingArgs {
    /// Export a span per `ShouldRateLimit` (and one per store call) over OTLP.
    #[arg(long, env = "TRACING_ENABLED", default_value_t = false, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub tracing_enabled: bool,

    /// The spans' `service.name`.
    #[arg(long, env = "TRACING_SERVICE_NAME", default_value = "RateLimit")]
    pub tracing_service_name: String,

    /// The spans' `service.namespace`.
    #[arg(long, env = "TRACING_SERVICE_NAMESPACE", default_value = "")]
    pub tracing_service_namespace: String,

    /// The spans' `service.instance.id` (a random UUID when empty).
    #[arg(long, env = "TRACING_SERVICE_INSTANCE_ID", default_value = "")]
    pub tracing_service_instance_id: String,

    /// Share of traces sampled when the caller did not decide (0 to 1).
    #[arg(long, env = "TRACING_SAMPLING_RATE", default_value_t = 1.0)]
    pub tracing_sampling_rate: f64,

    /// OTLP over `http` (protobuf) or `grpc`.
    #[arg(long, env = "TRACING_EXPORTER_PROTOCOL", default_value = "http")]
    pub tracing_exporter_protocol: String,
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

/// The xDS client's flags (`--config xds://host:port`); each reads the
/// reference's variable of the same meaning.
#[derive(Debug, Args)]
pub struct XdsArgs {
    /// The node id to subscribe as; the management server keys its
    /// snapshots by it (Envoy Gateway: `envoy-ratelimit`).
    #[arg(long, env = "CONFIG_GRPC_XDS_NODE_ID", default_value = "default")]
    pub xds_node_id: String,
    /// The node's metadata: `key1=value1,key2=value2`.
    #[arg(long, env = "CONFIG_GRPC_XDS_NODE_METADATA", default_value = "")]
    pub xds_node_metadata: String,
    /// Headers sent with the stream: `name1:value1,name2:value2`.
    #[arg(
        long,
        env = "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS",
        default_value = ""
    )]
    pub xds_headers: String,
    /// Connect to the management server over TLS.
    #[arg(long, env = "CONFIG_GRPC_XDS_SERVER_USE_TLS")]
    pub xds_tls: bool,
    /// With `--xds-tls`: a client certificate (PEM), for mutual TLS.
    #[arg(long, env = "CONFIG_GRPC_XDS_CLIENT_TLS_CERT")]
    pub xds_tls_cert: Option<PathBuf>,
    /// With `--xds-tls`: the client certificate's key (PEM).
    #[arg(long, env = "CONFIG_GRPC_XDS_CLIENT_TLS_KEY")]
    pub xds_tls_key: Option<PathBuf>,
    /// With `--xds-tls`: the CA the server's certificate must chain to
    /// (PEM); the public web PKI roots without it.
    #[arg(long, env = "CONFIG_GRPC_XDS_SERVER_TLS_CACERT")]
    pub xds_tls_ca: Option<PathBuf>,
    /// With `--xds-tls`: the name the server's certificate must carry,
    /// instead of the host in `--config`.
    #[arg(long, env = "CONFIG_GRPC_XDS_SERVER_TLS_SAN")]
    pub xds_tls_server_name: Option<String>,
    /// The largest response accepted, in bytes (0: gRPC's 4 MiB). Envoy
    /// Gateway's rule sets have passed 4 MiB.
    #[arg(long, env = "XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES", default_value_t = 0)]
    pub xds_max_message_bytes: usize,
    /// Wait between attempts to connect (jittered by ±50 %).
    #[arg(long, env = "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL", default_value = "3s", value_parser = parse_duration)]
    pub xds_connect_retry_interval: Duration,
    /// First wait before opening a stream again after one broke; doubles
    /// on each further failure.
    #[arg(long, env = "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub xds_backoff_initial: Duration,
    /// Longest wait between streams.
    #[arg(long, env = "XDS_CLIENT_BACKOFF_MAX_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub xds_backoff_max: Duration,
    /// With jitter, each wait is drawn from `wait × (1 ± factor)`.
    #[arg(long, env = "XDS_CLIENT_BACKOFF_RANDOM_FACTOR", default_value = "0.5", value_parser = parse_factor)]
    pub xds_backoff_random_factor: f64,
    /// Randomise the waits between streams.
    #[arg(long, env = "XDS_CLIENT_BACKOFF_JITTER", default_value = "true", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub xds_backoff_jitter: bool,
}

impl XdsArgs {
    /// Sets `settings` (the server's defaults) from the flags; an error
    /// names the flag whose value cannot be used.
    pub fn apply(&self, settings: &mut XdsSettings) -> Result<(), String> {
        settings.node_id = self.xds_node_id.clone();
        // As the reference: an item without `=` is skipped.
        settings.node_metadata = self
            .xds_node_metadata
            .split(',')
            .filter_map(|item| item.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .filter(|(key, _)| !key.is_empty())
            .collect();
        settings.headers = parse_pairs(&self.xds_headers, ':').map_err(|e| {
            format!("--xds-headers (CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS): {e}")
        })?;
        settings.tls = if self.xds_tls {
            let identity = match (&self.xds_tls_cert, &self.xds_tls_key) {
                (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
                (None, None) => None,
                _ => return Err("--xds-tls-cert and --xds-tls-key go together".to_owned()),
            };
            Some(XdsTls {
                ca: self.xds_tls_ca.clone(),
                identity,
                server_name: self.xds_tls_server_name.clone().filter(|n| !n.is_empty()),
            })
        } else {
            None
        };
        settings.max_message_bytes = match self.xds_max_message_bytes {
            0 => xds::DEFAULT_MAX_MESSAGE_BYTES,
            bytes => bytes,
        };
        settings.connect_retry = self.xds_connect_retry_interval;
        settings.backoff = Backoff {
            initial: self.xds_backoff_initial,
            max: self.xds_backoff_max.max(self.xds_backoff_initial),
            random_factor: self.xds_backoff_random_factor,
            jitter: self.xds_backoff_jitter,
        };
        Ok(())
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

/// What a request gets when the counter store fails (`--on-store-error`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OnStoreError {
    /// OK without limit information (fail open).
    #[default]
    Allow,
    /// OVER_LIMIT (fail closed).
    Deny,
    /// gRPC UNAVAILABLE: Envoy's `failure_mode_deny` decides.
    Error,
}

/// How a fleet shares counters in Redis (`--store-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum StoreModeArg {
    /// Every decision one atomic call: exact counts.
    #[default]
    Exact,
    /// Blocks of fixed windows' quotas claimed from Redis.
    Leased,
}

/// Whose clock the Redis store counts with (`--store-time`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum StoreTime {
    /// Redis's `TIME`: one clock for the whole fleet.
    #[default]
    Redis,
    /// This instance's clock.
    Local,
}

/// The counter store flags.
///
/// floodgate keeps counters in memory unless `--store` names a Redis URL or,
/// as with the reference server, `REDIS_URL` is set (the reference defaults
/// to Redis with `BACKEND_TYPE=redis` and a nutcracker socket; floodgate
/// needs no Redis unless one is named).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// `memory`, or a Redis URL: `redis://host:port[/db]`, `rediss://...`
    /// (TLS), `redis+unix:///path.sock`, `redis+cluster://h1:p1,h2:p2`.
    #[arg(long = "store", env = "FLOODGATE_STORE")]
    pub url: Option<String>,

    /// How long a request waits for Redis (`10ms`, `0.5s`, `800us`; a bare
    /// number is milliseconds). Keep it under Envoy's rate-limit timeout
    /// (20 ms by default) so floodgate's failure policy answers first.
    #[arg(long, env = "FLOODGATE_STORE_TIMEOUT", default_value = "10ms", value_parser = parse_duration)]
    pub store_timeout: Duration,

    /// What a request gets when Redis is down or too slow.
    #[arg(long, env = "FLOODGATE_ON_STORE_ERROR", value_enum, default_value_t = OnStoreError::Allow)]
    pub on_store_error: OnStoreError,

    /// Prepended to every Redis key, so deployments can share one Redis.
    #[arg(long, env = "FLOODGATE_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,

    /// `exact` (every decision one atomic call to Redis) or `leased` (fixed
    /// windows admitted from blocks of quota claimed from Redis: never more
    /// than the limit fleet-wide, far fewer round trips; README "Leased
    /// mode").
    #[arg(long, env = "FLOODGATE_STORE_MODE", value_enum, default_value_t = StoreModeArg::Exact)]
    pub store_mode: StoreModeArg,

    /// Whose clock Redis counters use.
    #[arg(long, env = "FLOODGATE_STORE_TIME", value_enum, default_value_t = StoreTime::Redis)]
    pub store_time: StoreTime,

    /// The reference's Redis address (`host:port`, or a socket path), used
    /// when `--store` is not given.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// `tcp` or `unix` (default: `unix` when `REDIS_URL` starts with `/`).
    #[arg(long, env = "REDIS_SOCKET_TYPE")]
    pub redis_socket_type: Option<String>,

    /// `single`, `cluster` (`REDIS_URL` then lists `host:port,host:port`) or
    /// `sentinel` (`REDIS_URL` is `master-name,host:port,host:port`: the
    /// master's name, then the sentinels).
    #[arg(long, env = "REDIS_TYPE", default_value = "single")]
    pub redis_type: String,

    /// The password of the Redis Sentinels themselves (`REDIS_AUTH` is the
    /// master's).
    #[arg(long, env = "REDIS_SENTINEL_AUTH", hide_env_values = true)]
    pub redis_sentinel_auth: Option<String>,

    /// Redis password, or `user:password`.
    #[arg(long, env = "REDIS_AUTH", hide_env_values = true)]
    pub redis_auth: Option<String>,

    /// Connect to Redis over TLS.
    #[arg(long, env = "REDIS_TLS")]
    pub redis_tls: bool,

    /// Trust only this CA (PEM) for Redis over TLS, instead of the public
    /// web PKI roots (a private CA, as managed Redis services use).
    #[arg(long, env = "REDIS_TLS_CACERT")]
    pub redis_tls_cacert: Option<std::path::PathBuf>,

    /// Present this client certificate (PEM) to Redis over TLS.
    #[arg(long, env = "REDIS_TLS_CLIENT_CERT")]
    pub redis_tls_client_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of `--redis-tls-client-cert`.
    #[arg(long, env = "REDIS_TLS_CLIENT_KEY")]
    pub redis_tls_client_key: Option<std::path::PathBuf>,

    /// Report NOT_SERVING while Redis is unreachable even under
    /// `--on-store-error allow` (with `deny` or `error` it always is).
    #[arg(long, env = "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION")]
    pub redis_health_check_active_connection: bool,
}

impl StoreArgs {
    /// The Redis URL the flags name, or `None` for the memory store.
    pub fn redis_url(&self) -> Result<Option<String>, String> {
        if let Some(url) = &self.url {
            return Ok((!url.trim().eq_ignore_ascii_case("memory")).then(|| url.trim().to_owned()));
        }
        let Some(address) = self.redis_url.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if address.contains("://") {
            return Ok(Some(address.to_owned()));
        }
        let unix = match self.redis_socket_type.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("unix") => true,
            Some(t) if t.eq_ignore_ascii_case("tcp") => false,
            Some(t) => return Err(format!("REDIS_SOCKET_TYPE must be tcp or unix, not {t:?}")),
            None => address.starts_with('/'),
        };
        if unix {
            return Ok(Some(format!("redis+unix://{address}")));
        }
        let mut scheme = String::from(if self.redis_tls { "rediss" } else { "redis" });
        let mut address = address.to_owned();
        if self.redis_type.eq_ignore_ascii_case("cluster") {
            scheme.push_str("+cluster");
        } else if self.redis_type.eq_ignore_ascii_case("sentinel") {
            // The reference's form: the master's name, then the sentinels.
            let Some((master, sentinels)) = address.split_once(',') else {
                return Err(format!(
                    "with REDIS_TYPE=sentinel, REDIS_URL is master-name,host:port[,host:port...], \
                     not {address:?}"
                ));
            };
            address = format!("{}/{}", sentinels.trim(), master.trim());
            scheme.push_str("+sentinel");
        } else if !self.redis_type.eq_ignore_ascii_case("single") {
            return Err(format!(
                "REDIS_TYPE must be single, cluster or sentinel, not {:?}",
                self.redis_type
            ));
        }
        let auth = match self.redis_auth.as_deref().filter(|a| !a.is_empty()) {
            Some(auth) => match auth.split_once(':') {
                Some((user, password)) => {
                    format!("{}:{}@", percent_encode(user), percent_encode(password))
                }
                None => format!(":{}@", percent_encode(auth)),
            },
            None => String::new(),
        };
        Ok(Some(format!("{scheme}://{auth}{address}")))
    }

    /// Whether an unreachable store should make the server NOT_SERVING:
    /// when store errors deny or fail requests, or when asked to.
    pub fn outage_makes_unhealthy(&self) -> bool {
        self.on_store_error != OnStoreError::Allow || self.redis_health_check_active_connection
    }

    /// Opens the store the flags name; a Redis store reports whether it is
    /// reachable to `health`.
    pub async fn open(&self, max_counters: u64, health: &Health) -> Result<AnyStore, String> {
        let Some(url) = self.redis_url()? else {
            if self.store_mode == StoreModeArg::Leased {
                return Err(
                    "--store-mode leased shares quotas through Redis: name one with --store \
                     or REDIS_URL"
                        .to_owned(),
                );
            }
            return Ok(AnyStore::Memory(MemoryStore::new(max_counters)));
        };
        let options = RedisOptions {
            key_prefix: self.key_prefix.clone(),
            timeout: self.store_timeout,
            time_source: match self.store_time {
                StoreTime::Redis => TimeSource::Redis,
                StoreTime::Local => TimeSource::Caller,
            },
            sentinel_password: self.redis_sentinel_auth.clone(),
            mode: match self.store_mode {
                StoreModeArg::Exact => StoreMode::Exact,
                StoreModeArg::Leased => StoreMode::Leased,
            },
            tls: (self.redis_tls_cacert.is_some()
                || self.redis_tls_client_cert.is_some()
                || self.redis_tls_client_key.is_some())
            .then(|| RedisTlsFiles {
                ca: self.redis_tls_cacert.clone(),
                client_cert: self.redis_tls_client_cert.clone(),
                client_key: self.redis_tls_client_key.clone(),
            }),
            ..RedisOptions::new(url)
        };
        RedisStore::connect(options)
            .await
            .map(|store| AnyStore::Redis(store.with_health(health.clone())))
            .map_err(|e| e.to_string())
    }
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
