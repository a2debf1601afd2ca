//! Every flag of `floodgate serve` and `floodgate check` (clap), with its
//! environment variable; the reference server's own variables become their
//! defaults ([`super::reference_env`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::parse::{encode, parse_duration, parse_ratio};
use crate::config::LoadOptions;
use crate::decide::validate::{
    DEFAULT_MAX_DESCRIPTOR_ENTRIES, DEFAULT_MAX_DESCRIPTORS, DEFAULT_MAX_KEY_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_VALUE_BYTES,
};

use crate::decide::RequestLimits;
use crate::health::Health;
use crate::server::{LoadedTls, TlsFiles};
use crate::store::AnyStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::{DEFAULT_KEY_PREFIX, RedisOptions, RedisStore, TimeSource};

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
    /// succeeds, instead of exiting.
    #[arg(long, env = "FORCE_START_WITHOUT_INITIAL_CONFIG")]
    pub force_start_without_initial_config: bool,

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

    /// `single` or `cluster` (`REDIS_URL` then lists `host:port,host:port`).
    #[arg(long, env = "REDIS_TYPE", default_value = "single")]
    pub redis_type: String,

    /// Redis password, or `user:password`.
    #[arg(long, env = "REDIS_AUTH", hide_env_values = true)]
    pub redis_auth: Option<String>,

    /// Connect to Redis over TLS.
    #[arg(long, env = "REDIS_TLS")]
    pub redis_tls: bool,

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
        if self.redis_type.eq_ignore_ascii_case("cluster") {
            scheme.push_str("+cluster");
        } else if !self.redis_type.eq_ignore_ascii_case("single") {
            return Err(format!(
                "REDIS_TYPE must be single or cluster, not {:?}",
                self.redis_type
            ));
        }
        let auth = match self.redis_auth.as_deref().filter(|a| !a.is_empty()) {
            Some(auth) => match auth.split_once(':') {
                Some((user, password)) => format!("{}:{}@", encode(user), encode(password)),
                None => format!(":{}@", encode(auth)),
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
            return Ok(AnyStore::Memory(MemoryStore::new(max_counters)));
        };
        let options = RedisOptions {
            key_prefix: self.key_prefix.clone(),
            timeout: self.store_timeout,
            time_source: match self.store_time {
                StoreTime::Redis => TimeSource::Redis,
                StoreTime::Local => TimeSource::Caller,
            },
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

#[cfg(test)]
mod store_args_tests {
    use super::*;

    fn args(list: &[&str]) -> StoreArgs {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            store: StoreArgs,
        }
        let mut all = vec!["x"];
        all.extend_from_slice(list);
        match Wrap::try_parse_from(all) {
            Ok(wrap) => wrap.store,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn reference_variables_build_a_url() {
        let a = args(&["--redis-url", "cache:6379", "--redis-auth", "u:p@ss"]);
        assert_eq!(
            a.redis_url(),
            Ok(Some("redis://u:p%40ss@cache:6379".into()))
        );
        let a = args(&[
            "--redis-url",
            "a:1,b:2",
            "--redis-type",
            "cluster",
            "--redis-tls",
        ]);
        assert_eq!(a.redis_url(), Ok(Some("rediss+cluster://a:1,b:2".into())));
        let a = args(&["--redis-url", "/run/redis.sock"]);
        assert_eq!(
            a.redis_url(),
            Ok(Some("redis+unix:///run/redis.sock".into()))
        );
        let a = args(&["--store", "memory", "--redis-url", "cache:6379"]);
        assert_eq!(a.redis_url(), Ok(None));
    }
}

#[cfg(test)]
mod reference_var_tests {
    use super::*;
    use crate::cli::reference_env::{Handling, KNOWN_REFERENCE_VARS, ReferenceEnv};
    use clap::{CommandFactory, FromArgMatches};

    fn serve_command() -> clap::Command {
        match Cli::command().find_subcommand("serve") {
            Some(serve) => serve.clone(),
            None => panic!("no serve subcommand"),
        }
    }

    fn arg<'a>(serve: &'a clap::Command, flag: &str) -> &'a clap::Arg {
        serve
            .get_arguments()
            .find(|a| a.get_long().is_some_and(|l| format!("--{l}") == flag))
            .unwrap_or_else(|| panic!("serve has no {flag}"))
    }

    #[test]
    fn a_bare_ratelimit_serves() {
        let args = |list: &[&str]| -> Vec<std::ffi::OsString> {
            list.iter().map(std::ffi::OsString::from).collect()
        };
        assert_eq!(
            reference_invocation(args(&["/bin/ratelimit"])),
            args(&["/bin/ratelimit", "serve"])
        );
        assert_eq!(
            reference_invocation(args(&["/bin/ratelimit", "check"])),
            args(&["/bin/ratelimit", "check"])
        );
        assert_eq!(
            reference_invocation(args(&["floodgate"])),
            args(&["floodgate"])
        );
    }

    /// A variable said to be read by a flag is that flag's `env`; one said
    /// to set a flag's default names a real flag.
    #[test]
    fn reference_variables_name_real_flags() {
        let serve = serve_command();
        for (name, handling) in KNOWN_REFERENCE_VARS {
            match handling {
                Handling::Flag(flag) => assert_eq!(
                    arg(&serve, flag).get_env(),
                    Some(std::ffi::OsStr::new(name)),
                    "{flag} should read {name}"
                ),
                Handling::FlagDefault(flag) => {
                    arg(&serve, flag);
                }
                _ => {}
            }
        }
    }

    /// Every default the reference variables produce lands on a real
    /// argument of `serve`, and the values parse.
    #[test]
    fn reference_defaults_apply_and_parse() {
        let env = ReferenceEnv::from_vars([
            ("HOST", "127.0.0.1"),
            ("PORT", "18080"),
            ("GRPC_PORT", "18081"),
            ("DEBUG_PORT", "16070"),
            ("RUNTIME_ROOT", "/data"),
            ("RUNTIME_SUBDIRECTORY", "ratelimit"),
            ("LOG_FORMAT", "JSON"),
            ("CACHE_KEY_PREFIX", "rl_"),
            ("REDIS_TIMEOUT", "250ms"),
            ("RESPONSE_DYNAMIC_METADATA", "false"),
        ]);
        let resolved = match env.resolve(true) {
            Ok(resolved) => resolved,
            Err(e) => panic!("{e}"),
        };
        let serve = serve_command();
        for (id, _) in &resolved.defaults {
            assert!(
                serve.get_arguments().any(|a| a.get_id() == id),
                "no argument {id}"
            );
        }
        let matches = resolved
            .apply(Cli::command())
            .try_get_matches_from(["floodgate", "serve"]);
        let cli = match matches.and_then(|m| Cli::from_arg_matches(&m)) {
            Ok(cli) => cli,
            Err(e) => panic!("{e}"),
        };
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.http_addr.to_string(), "127.0.0.1:18080");
        assert_eq!(args.grpc_addr.port(), 18081);
        assert_eq!(args.admin_addr.port(), 16070);
        assert_eq!(args.config.config, PathBuf::from("/data/ratelimit/config"));
        assert_eq!(args.config_watch_root, Some(PathBuf::from("/data")));
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.store.key_prefix, "rl_");
        assert_eq!(args.store.store_timeout, Duration::from_millis(250));
        assert!(!args.dynamic_metadata);
    }
}

#[cfg(test)]
mod store_health_tests {
    use super::*;

    #[test]
    fn an_outage_matters_to_health_when_it_fails_requests_or_when_asked() {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            store: StoreArgs,
        }
        let unhealthy = |list: &[&str]| {
            let all = std::iter::once("x").chain(list.iter().copied());
            match Wrap::try_parse_from(all) {
                Ok(wrap) => wrap.store.outage_makes_unhealthy(),
                Err(e) => panic!("{e}"),
            }
        };
        assert!(!unhealthy(&[]));
        assert!(unhealthy(&["--on-store-error", "deny"]));
        assert!(unhealthy(&["--on-store-error", "error"]));
        assert!(unhealthy(&["--redis-health-check-active-connection"]));
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
