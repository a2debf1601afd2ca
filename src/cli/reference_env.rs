//! The reference server's environment, read so that floodgate can replace
//! envoyproxy/ratelimit in an existing Deployment without edits.
//!
//! Istio's sample Deployment sets `RUNTIME_ROOT`, `RUNTIME_SUBDIRECTORY`,
//! `PORT`, `LOG_LEVEL`, `REDIS_URL` and friends; [`ReferenceEnv`] reads
//! those names and turns them into **defaults** of floodgate's own flags.
//! Precedence is therefore, highest first: a command-line flag, floodgate's
//! own variable (`FLOODGATE_*`), the reference variable, the built-in
//! default. [`KNOWN_REFERENCE_VARS`] lists every variable of the reference
//! and what floodgate does with it (the README's table is checked against
//! it). Variables that floodgate accepts but does not act on are logged once
//! at start ([`Resolved::notes`]), so nobody believes they took effect;
//! values floodgate cannot serve with are refused. With no config named
//! anywhere and no `./config`, `--config` defaults to the built-in rules
//! ([`crate::config::Source::BuiltIn`]).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use super::parse::{parse_duration, parse_go_bool, redact_url};
use crate::config::source::EMBEDDED_CONFIG;

/// A reference variable with a value floodgate cannot use. The reference
/// panics at start on these too.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Not a boolean as Go's `strconv.ParseBool` reads them.
    #[error("{name}={value}: expected a boolean (true/false, 1/0, t/f)")]
    NotABool {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// Not a port number.
    #[error("{name}={value}: expected a port number")]
    NotAPort {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A host and port that do not resolve to an address.
    #[error("{host_name}/{port_name}: cannot resolve {host}:{port}: {reason}")]
    Unresolvable {
        /// The host variable.
        host_name: &'static str,
        /// The port variable.
        port_name: &'static str,
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// A value floodgate cannot act on, where serving anyway would break a
    /// promise the operator relies on (see [`Handling::Restricted`]).
    #[error("{name}={value} is not supported: {why}")]
    Refused {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why.
        why: &'static str,
    },
    /// A value that is not a duration.
    #[error("{name}={value}: {reason}")]
    NotADuration {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A setting whose security promise floodgate cannot keep; starting
    /// without it would silently accept clients the operator meant to
    /// refuse.
    #[error("{name} is set, but floodgate cannot enforce it: {reason}")]
    Unsupported {
        /// The variable.
        name: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
}

/// How loud a [`Note`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteLevel {
    /// Worth knowing.
    Info,
    /// Probably not what the operator expects.
    Warn,
}

/// Something to log once logging is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// How loud.
    pub level: NoteLevel,
    /// What to say.
    pub message: String,
}

/// How floodgate treats one of the reference server's variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// One of floodgate's flags reads this variable itself (its `env`).
    Flag(&'static str),
    /// [`ReferenceEnv::resolve`] turns it into the default of this flag.
    FlagDefault(&'static str),
    /// floodgate always behaves as the reference does with this value; any
    /// other value is logged as a warning at start.
    Fixed {
        /// The value floodgate behaves as (`true`/`false` for booleans).
        value: &'static str,
        /// Why, and what to use instead.
        why: &'static str,
    },
    /// Accepted and not acted on: a warning is logged at start when it is
    /// set, so nobody believes it took effect.
    Ignored(&'static str),
    /// Only these values are accepted (case-insensitive); any other one
    /// makes floodgate refuse to start, because serving anyway would break
    /// a promise the operator relies on.
    Restricted {
        /// The accepted values.
        accepted: &'static [&'static str],
        /// Why the others are refused.
        why: &'static str,
    },
}

const NO_STATSD: &str =
    "floodgate sends no statsd metrics; scrape GET /metrics on the HTTP address";

const NO_XDS: &str = "only read with CONFIG_TYPE=GRPC_XDS_SOTW, which floodgate refuses";
const NO_MEMCACHE: &str = "only read with BACKEND_TYPE=memcache, which floodgate refuses";

const NO_PERSECOND: &str =
    "only read with REDIS_PERSECOND=true; floodgate keeps every counter in REDIS_URL's Redis";

const NO_TRACING: &str = "floodgate exports no traces; it logs with tracing to stdout";
const REDIS_TLS_FILES: &str = "with REDIS_TLS floodgate verifies Redis against the public \
     web PKI roots and sends no client certificate; terminate TLS with a sidecar for a private CA";

/// Every variable of the reference server's settings
/// (envoyproxy/ratelimit `src/settings/settings.go`) and what floodgate
/// does with it. The README's table is checked against this list.
pub const KNOWN_REFERENCE_VARS: &[(&str, Handling)] = &[
    ("HOST", Handling::FlagDefault("--http-addr")),
    ("PORT", Handling::FlagDefault("--http-addr")),
    ("DEBUG_HOST", Handling::FlagDefault("--admin-addr")),
    ("DEBUG_PORT", Handling::FlagDefault("--admin-addr")),
    ("GRPC_HOST", Handling::FlagDefault("--grpc-addr")),
    ("GRPC_PORT", Handling::FlagDefault("--grpc-addr")),
    (
        "GRPC_UDS",
        Handling::Ignored("gRPC is served on TCP only (GRPC_HOST/GRPC_PORT)"),
    ),
    (
        "GRPC_MAX_CONNECTION_AGE",
        Handling::Ignored("connections are kept until the client closes them"),
    ),
    (
        "GRPC_MAX_CONNECTION_AGE_GRACE",
        Handling::Ignored("connections are kept until the client closes them"),
    ),
    ("GRPC_SERVER_USE_TLS", Handling::FlagDefault("--tls-cert")),
    ("GRPC_SERVER_TLS_CERT", Handling::FlagDefault("--tls-cert")),
    ("GRPC_SERVER_TLS_KEY", Handling::FlagDefault("--tls-key")),
    (
        "GRPC_CLIENT_TLS_CACERT",
        Handling::FlagDefault("--tls-client-ca"),
    ),
    (
        "GRPC_CLIENT_TLS_SAN",
        Handling::Restricted {
            accepted: &[],
            why: "with GRPC_SERVER_USE_TLS=true floodgate cannot check a client's SAN; \
                  issue client certificates from a dedicated CA instead",
        },
    ),
    ("LOG_LEVEL", Handling::Flag("--log-level")),
    ("LOG_FORMAT", Handling::FlagDefault("--log-format")),
    (
        "CONFIG_TYPE",
        Handling::Restricted {
            accepted: &["FILE"],
            why: "floodgate loads rules from files only, not from an xDS server",
        },
    ),
    (
        "FORCE_START_WITHOUT_INITIAL_CONFIG",
        Handling::Flag("--force-start-without-initial-config"),
    ),
    ("CONFIG_GRPC_XDS_NODE_ID", Handling::Ignored(NO_XDS)),
    ("CONFIG_GRPC_XDS_NODE_METADATA", Handling::Ignored(NO_XDS)),
    ("CONFIG_GRPC_XDS_SERVER_URL", Handling::Ignored(NO_XDS)),
    (
        "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
        Handling::Ignored(NO_XDS),
    ),
    (
        "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS",
        Handling::Ignored(NO_XDS),
    ),
    ("CONFIG_GRPC_XDS_SERVER_USE_TLS", Handling::Ignored(NO_XDS)),
    ("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", Handling::Ignored(NO_XDS)),
    ("CONFIG_GRPC_XDS_CLIENT_TLS_KEY", Handling::Ignored(NO_XDS)),
    (
        "CONFIG_GRPC_XDS_SERVER_TLS_CACERT",
        Handling::Ignored(NO_XDS),
    ),
    ("CONFIG_GRPC_XDS_SERVER_TLS_SAN", Handling::Ignored(NO_XDS)),
    (
        "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL",
        Handling::Ignored(NO_XDS),
    ),
    ("XDS_CLIENT_BACKOFF_MAX_INTERVAL", Handling::Ignored(NO_XDS)),
    (
        "XDS_CLIENT_BACKOFF_RANDOM_FACTOR",
        Handling::Ignored(NO_XDS),
    ),
    ("XDS_CLIENT_BACKOFF_JITTER", Handling::Ignored(NO_XDS)),
    (
        "USE_STATSD",
        Handling::Fixed {
            value: "false",
            why: NO_STATSD,
        },
    ),
    ("STATSD_HOST", Handling::Ignored(NO_STATSD)),
    ("STATSD_PORT", Handling::Ignored(NO_STATSD)),
    (
        "USE_DOG_STATSD",
        Handling::Fixed {
            value: "false",
            why: NO_STATSD,
        },
    ),
    ("USE_DOG_STATSD_MOGRIFIERS", Handling::Ignored(NO_STATSD)),
    ("EXTRA_TAGS", Handling::Ignored(NO_STATSD)),
    ("STATS_FLUSH_INTERVAL", Handling::Ignored(NO_STATSD)),
    (
        "DISABLE_STATS",
        Handling::Fixed {
            value: "false",
            why: "metrics are always kept (they cost a few atomic adds); do not scrape them",
        },
    ),
    (
        "USE_PROMETHEUS",
        Handling::Fixed {
            value: "true",
            why: "Prometheus text is always served, at GET /metrics on the HTTP address",
        },
    ),
    (
        "PROMETHEUS_ADDR",
        Handling::Ignored("metrics are served at GET /metrics on the HTTP address (--http-addr)"),
    ),
    (
        "PROMETHEUS_PATH",
        Handling::Ignored("metrics are served at GET /metrics on the HTTP address (--http-addr)"),
    ),
    (
        "PROMETHEUS_MAPPER_YAML",
        Handling::Ignored("floodgate's metric names are fixed (see the README)"),
    ),
    ("RUNTIME_ROOT", Handling::FlagDefault("--config")),
    ("RUNTIME_SUBDIRECTORY", Handling::FlagDefault("--config")),
    ("RUNTIME_APPDIRECTORY", Handling::FlagDefault("--config")),
    (
        "RUNTIME_IGNOREDOTFILES",
        Handling::Fixed {
            value: "true",
            why: "files and directories whose names start with '.' are never loaded",
        },
    ),
    (
        "RUNTIME_WATCH_ROOT",
        Handling::FlagDefault("--config-watch-root"),
    ),
    (
        "EXPIRATION_JITTER_MAX_SECONDS",
        Handling::Ignored("Redis keys expire exactly when their state stops mattering"),
    ),
    (
        "LOCAL_CACHE_SIZE_IN_BYTES",
        Handling::Ignored("the local over-limit cache is always on, bounded to 100 000 keys"),
    ),
    ("NEAR_LIMIT_RATIO", Handling::Flag("--near-limit-ratio")),
    ("CACHE_KEY_PREFIX", Handling::FlagDefault("--key-prefix")),
    (
        "BACKEND_TYPE",
        Handling::Restricted {
            accepted: &["redis"],
            why: "counters are kept in memory or in Redis, not in memcached",
        },
    ),
    (
        "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT",
        Handling::Flag("--stop-cache-key-increment-when-overlimit"),
    ),
    (
        "LIMIT_RESPONSE_HEADERS_ENABLED",
        Handling::Flag("--limit-response-headers-enabled"),
    ),
    ("LIMIT_LIMIT_HEADER", Handling::Flag("--limit-limit-header")),
    (
        "LIMIT_REMAINING_HEADER",
        Handling::Flag("--limit-remaining-header"),
    ),
    ("LIMIT_RESET_HEADER", Handling::Flag("--limit-reset-header")),
    (
        "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED",
        Handling::Fixed {
            value: "true",
            why: "health is NOT_SERVING until rules have loaded once",
        },
    ),
    ("REDIS_SOCKET_TYPE", Handling::Flag("--redis-socket-type")),
    ("REDIS_TYPE", Handling::Flag("--redis-type")),
    ("REDIS_URL", Handling::Flag("--redis-url")),
    (
        "REDIS_POOL_SIZE",
        Handling::Ignored("requests are pipelined over 2 multiplexed connections"),
    ),
    ("REDIS_AUTH", Handling::Flag("--redis-auth")),
    ("REDIS_TLS", Handling::Flag("--redis-tls")),
    ("REDIS_TLS_CLIENT_CERT", Handling::Ignored(REDIS_TLS_FILES)),
    ("REDIS_TLS_CLIENT_KEY", Handling::Ignored(REDIS_TLS_FILES)),
    ("REDIS_TLS_CACERT", Handling::Ignored(REDIS_TLS_FILES)),
    (
        "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION",
        Handling::Fixed {
            value: "false",
            why: "Redis's certificate is always verified",
        },
    ),
    (
        "REDIS_PIPELINE_WINDOW",
        Handling::Ignored("concurrent requests are always pipelined, without a window"),
    ),
    (
        "REDIS_PIPELINE_LIMIT",
        Handling::Ignored("concurrent requests are always pipelined, without a limit"),
    ),
    (
        "REDIS_PERSECOND",
        Handling::Fixed {
            value: "false",
            why: "every counter, per-second ones included, is kept in REDIS_URL's Redis",
        },
    ),
    (
        "REDIS_PERSECOND_SOCKET_TYPE",
        Handling::Ignored(NO_PERSECOND),
    ),
    ("REDIS_PERSECOND_TYPE", Handling::Ignored(NO_PERSECOND)),
    ("REDIS_PERSECOND_URL", Handling::Ignored(NO_PERSECOND)),
    ("REDIS_PERSECOND_POOL_SIZE", Handling::Ignored(NO_PERSECOND)),
    ("REDIS_PERSECOND_AUTH", Handling::Ignored(NO_PERSECOND)),
    ("REDIS_PERSECOND_TLS", Handling::Ignored(NO_PERSECOND)),
    (
        "REDIS_PERSECOND_PIPELINE_WINDOW",
        Handling::Ignored(NO_PERSECOND),
    ),
    (
        "REDIS_PERSECOND_PIPELINE_LIMIT",
        Handling::Ignored(NO_PERSECOND),
    ),
    (
        "REDIS_SENTINEL_AUTH",
        Handling::Ignored("Redis Sentinel is not supported (REDIS_TYPE=sentinel is refused)"),
    ),
    (
        "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION",
        Handling::Flag("--redis-health-check-active-connection"),
    ),
    ("REDIS_TIMEOUT", Handling::FlagDefault("--store-timeout")),
    ("MEMCACHE_HOST_PORT", Handling::Ignored(NO_MEMCACHE)),
    ("MEMCACHE_MAX_IDLE_CONNS", Handling::Ignored(NO_MEMCACHE)),
    ("MEMCACHE_SRV", Handling::Ignored(NO_MEMCACHE)),
    ("MEMCACHE_SRV_REFRESH", Handling::Ignored(NO_MEMCACHE)),
    ("MEMCACHE_TLS", Handling::Ignored(NO_MEMCACHE)),
    ("MEMCACHE_TLS_CLIENT_CERT", Handling::Ignored(NO_MEMCACHE)),
    ("MEMCACHE_TLS_CLIENT_KEY", Handling::Ignored(NO_MEMCACHE)),
    ("MEMCACHE_TLS_CACERT", Handling::Ignored(NO_MEMCACHE)),
    (
        "MEMCACHE_TLS_SKIP_HOSTNAME_VERIFICATION",
        Handling::Ignored(NO_MEMCACHE),
    ),
    ("SHADOW_MODE", Handling::Flag("--shadow-mode")),
    (
        "RESPONSE_DYNAMIC_METADATA",
        Handling::FlagDefault("--dynamic-metadata"),
    ),
    (
        "MERGE_DOMAIN_CONFIG",
        Handling::Flag("--merge-domain-config"),
    ),
    (
        "USE_CALENDAR_MONTH_RATE_LIMIT",
        Handling::Flag("--calendar-month"),
    ),
    (
        "TRACING_ENABLED",
        Handling::Fixed {
            value: "false",
            why: NO_TRACING,
        },
    ),
    ("TRACING_SERVICE_NAME", Handling::Ignored(NO_TRACING)),
    ("TRACING_SERVICE_NAMESPACE", Handling::Ignored(NO_TRACING)),
    ("TRACING_SERVICE_INSTANCE_ID", Handling::Ignored(NO_TRACING)),
    ("TRACING_SAMPLING_RATE", Handling::Ignored(NO_TRACING)),
    ("TRACING_EXPORTER_PROTOCOL", Handling::Ignored(NO_TRACING)),
    (
        "PROTO",
        Handling::Fixed {
            value: "tcp",
            why: "the HTTP and admin servers listen on TCP",
        },
    ),
];

/// The reference server's variables, as found in the environment.
#[derive(Clone, Debug, Default)]
pub struct ReferenceEnv {
    vars: BTreeMap<String, String>,
}

/// What the reference variables amount to.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// Defaults for floodgate's flags, by clap argument id (the field name:
    /// `grpc_addr`, `config`, ...).
    pub defaults: Vec<(&'static str, String)>,
    /// The admin (debug) address from `DEBUG_HOST`/`DEBUG_PORT`, when
    /// either is set.
    pub admin_addr: Option<SocketAddr>,
    /// What to log at start.
    pub notes: Vec<Note>,
}

impl ReferenceEnv {
    /// Reads the process environment.
    pub fn from_env() -> ReferenceEnv {
        ReferenceEnv::from_vars(std::env::vars())
    }

    /// Reads the given variables (tests pass their own).
    pub fn from_vars<I, K, V>(vars: I) -> ReferenceEnv
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        ReferenceEnv {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        // envconfig treats an empty variable as unset.
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, SettingsError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => parse_go_bool(value).ok_or_else(|| SettingsError::NotABool {
                name,
                value: value.to_owned(),
            }),
        }
    }

    fn port(&self, name: &'static str, default: u16) -> Result<u16, SettingsError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| SettingsError::NotAPort {
                name,
                value: value.to_owned(),
            }),
        }
    }

    /// `HOST`/`PORT`-style pair to an address, when either is set.
    fn address(
        &self,
        host_name: &'static str,
        port_name: &'static str,
        default_port: u16,
    ) -> Result<Option<SocketAddr>, SettingsError> {
        if !self.is_set(host_name) && !self.is_set(port_name) {
            return Ok(None);
        }
        let host = self.get(host_name).unwrap_or("0.0.0.0");
        let port = self.port(port_name, default_port)?;
        let unresolvable = |reason: String| SettingsError::Unresolvable {
            host_name,
            port_name,
            host: host.to_owned(),
            port,
            reason,
        };
        // Go accepts a bare IPv6 host here; so do we, brackets or not.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            return Ok(Some(SocketAddr::new(ip, port)));
        }
        let mut addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| unresolvable(e.to_string()))?;
        addrs
            .next()
            .map(Some)
            .ok_or_else(|| unresolvable("no address".to_owned()))
    }

    /// Turns the variables into flag defaults and notes. `config_dir_exists`
    /// says whether `./config` exists (passed in so tests need no chdir).
    pub fn resolve(&self, config_dir_exists: bool) -> Result<Resolved, SettingsError> {
        let mut resolved = Resolved::default();
        let defaults = &mut resolved.defaults;
        let notes = &mut resolved.notes;

        if let Some(addr) = self.address("GRPC_HOST", "GRPC_PORT", 8081)? {
            defaults.push(("grpc_addr", addr.to_string()));
        }
        if let Some(addr) = self.address("HOST", "PORT", 8080)? {
            defaults.push(("http_addr", addr.to_string()));
        }
        resolved.admin_addr = self.address("DEBUG_HOST", "DEBUG_PORT", 6070)?;
        if let Some(addr) = resolved.admin_addr {
            defaults.push(("admin_addr", addr.to_string()));
        }

        // Config discovery, as the reference does it. With
        // RUNTIME_WATCH_ROOT=true (its default) it reads the app directory
        // (RUNTIME_APPDIRECTORY, `config`) under root/subdirectory and
        // watches for a swap of the RUNTIME_ROOT symlink; with false it
        // reads and watches `root/subdirectory/config`, whatever
        // RUNTIME_APPDIRECTORY says. floodgate watches that directory itself
        // either way (which is what sees a ConfigMap update), and the root
        // symlink too when the reference would.
        let watch_root = self.bool("RUNTIME_WATCH_ROOT", true)?;
        if let Some(root) = self.get("RUNTIME_ROOT") {
            let mut path = PathBuf::from(root);
            if let Some(sub) = self.get("RUNTIME_SUBDIRECTORY") {
                path.push(sub);
            }
            let app = self.get("RUNTIME_APPDIRECTORY").unwrap_or("config");
            if watch_root {
                path.push(app);
                // The reference watches RUNTIME_ROOT's parent for a swap of
                // the RUNTIME_ROOT symlink; floodgate watches that too.
                defaults.push(("config_watch_root", root.to_owned()));
            } else {
                path.push("config");
                if app != "config" {
                    notes.push(Note {
                        level: NoteLevel::Warn,
                        message: format!(
                            "RUNTIME_APPDIRECTORY={app} is not used with RUNTIME_WATCH_ROOT=false: \
                             rules are read from {}, as the reference reads them",
                            path.display()
                        ),
                    });
                }
            }
            notes.push(Note {
                level: NoteLevel::Info,
                message: format!(
                    "rules from RUNTIME_ROOT: {} (its *.yaml and *.yml files, recursively)",
                    path.display()
                ),
            });
            defaults.push(("config", path.display().to_string()));
        } else if !config_dir_exists {
            defaults.push(("config", EMBEDDED_CONFIG.to_owned()));
        }

        if let Some(format) = self.get("LOG_FORMAT") {
            defaults.push(("log_format", format.to_ascii_lowercase()));
        }

        // TLS: the reference reads the files only when GRPC_SERVER_USE_TLS is on.
        if self.bool("GRPC_SERVER_USE_TLS", false)? {
            if self.is_set("GRPC_CLIENT_TLS_SAN") {
                return Err(SettingsError::Unsupported {
                    name: "GRPC_CLIENT_TLS_SAN",
                    reason: "client certificates are checked against GRPC_CLIENT_TLS_CACERT only; \
                             issue client certificates from a dedicated CA instead",
                });
            }
            for (var, arg) in [
                ("GRPC_SERVER_TLS_CERT", "tls_cert"),
                ("GRPC_SERVER_TLS_KEY", "tls_key"),
                ("GRPC_CLIENT_TLS_CACERT", "tls_client_ca"),
            ] {
                if let Some(path) = self.get(var) {
                    defaults.push((arg, path.to_owned()));
                }
            }
        }

        if let Some(prefix) = self.get("CACHE_KEY_PREFIX") {
            defaults.push(("key_prefix", prefix.to_owned()));
        }
        if let Some(timeout) = self.get("REDIS_TIMEOUT") {
            let duration =
                parse_duration(timeout).map_err(|reason| SettingsError::NotADuration {
                    name: "REDIS_TIMEOUT",
                    value: timeout.to_owned(),
                    reason,
                })?;
            defaults.push(("store_timeout", format!("{}us", duration.as_micros())));
        }
        if self.is_set("RESPONSE_DYNAMIC_METADATA") {
            let on = self.bool("RESPONSE_DYNAMIC_METADATA", false)?;
            defaults.push(("dynamic_metadata", on.to_string()));
        }
        if let Some(url) = self.get("REDIS_URL") {
            notes.push(Note {
                level: NoteLevel::Info,
                message: format!(
                    "REDIS_URL={}: counters are kept in that Redis, shared by every instance \
                     using it (unless --store says otherwise)",
                    redact_url(url)
                ),
            });
        }
        self.check_known(notes)?;
        Ok(resolved)
    }

    /// Warns about every set variable that floodgate does not act on, and
    /// refuses the values it cannot serve with ([`KNOWN_REFERENCE_VARS`]).
    fn check_known(&self, notes: &mut Vec<Note>) -> Result<(), SettingsError> {
        for (name, handling) in KNOWN_REFERENCE_VARS {
            let Some(value) = self.get(name) else {
                continue;
            };
            match handling {
                Handling::Flag(_) | Handling::FlagDefault(_) => {}
                Handling::Fixed { value: fixed, why } => {
                    let same = match *fixed {
                        "true" | "false" => parse_go_bool(value) == Some(*fixed == "true"),
                        _ => value.eq_ignore_ascii_case(fixed),
                    };
                    if !same {
                        notes.push(Note {
                            level: NoteLevel::Warn,
                            message: format!(
                                "{name}={value} is ignored: floodgate always behaves as \
                                 {name}={fixed} ({why})"
                            ),
                        });
                    }
                }
                Handling::Ignored(why) => notes.push(Note {
                    level: NoteLevel::Warn,
                    message: format!("{name}={value} is ignored: {why}"),
                }),
                // Checked with the TLS variables, where it matters.
                Handling::Restricted { .. } if *name == "GRPC_CLIENT_TLS_SAN" => {}
                Handling::Restricted { accepted, why } => {
                    if !accepted.iter().any(|a| a.eq_ignore_ascii_case(value)) {
                        return Err(SettingsError::Refused {
                            name,
                            value: value.to_owned(),
                            why,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

impl Resolved {
    /// `command` (floodgate's clap command) with these defaults applied to
    /// every subcommand that has the argument.
    pub fn apply(&self, mut command: clap::Command) -> clap::Command {
        let names: Vec<String> = command
            .get_subcommands()
            .map(|sub| sub.get_name().to_owned())
            .collect();
        for name in names {
            command = command.mut_subcommand(name, |mut sub| {
                for (id, value) in &self.defaults {
                    // `mut_arg` panics on an unknown id: skip the ones this
                    // subcommand (or this build) does not have.
                    if sub.get_arguments().any(|arg| arg.get_id() == id) {
                        let value = value.clone();
                        sub = sub.mut_arg(id, |arg| arg.default_value(value));
                    }
                }
                sub
            });
        }
        command
    }

    /// Logs [`Resolved::notes`]; call once logging is set up.
    pub fn log_notes(&self) {
        for note in &self.notes {
            match note.level {
                NoteLevel::Info => {
                    tracing::info!(target: "floodgate::cli::reference_env", "{}", note.message)
                }
                NoteLevel::Warn => {
                    tracing::warn!(target: "floodgate::cli::reference_env", "{}", note.message)
                }
            }
        }
    }
}

/// Resolves the process environment, looking for `./config` in the
/// working directory.
pub fn resolve_from_env() -> Result<Resolved, SettingsError> {
    ReferenceEnv::from_env().resolve(Path::new("config").exists())
}

#[cfg(test)]
mod tests;
