//! [`KNOWN_REFERENCE_VARS`]: every variable of the reference server and
//! what floodgate does with it.

use super::Handling;

const NO_MEMCACHE: &str = "only read with BACKEND_TYPE=memcache, which floodgate refuses";

const NO_PERSECOND: &str =
    "only read with REDIS_PERSECOND=true; floodgate keeps every counter in REDIS_URL's Redis";

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
        Handling::Flag("--grpc-max-connection-age"),
    ),
    (
        "GRPC_MAX_CONNECTION_AGE_GRACE",
        Handling::Flag("--grpc-max-connection-age-grace"),
    ),
    ("GRPC_SERVER_USE_TLS", Handling::FlagDefault("--tls-cert")),
    ("GRPC_SERVER_TLS_CERT", Handling::FlagDefault("--tls-cert")),
    ("GRPC_SERVER_TLS_KEY", Handling::FlagDefault("--tls-key")),
    (
        "GRPC_CLIENT_TLS_CACERT",
        Handling::FlagDefault("--tls-client-ca"),
    ),
    // Not the reference's: Envoy Gateway sets it (for the client CA), and
    // the reference never reads it. floodgate takes it as
    // GRPC_CLIENT_TLS_CACERT when that is not set.
    (
        "GRPC_SERVER_TLS_CA_CERT",
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
            accepted: &["FILE", "GRPC_XDS_SOTW"],
            why: "rules come from files or from an xDS server over state-of-the-world ADS",
        },
    ),
    (
        "FORCE_START_WITHOUT_INITIAL_CONFIG",
        Handling::Flag("--force-start-without-initial-config"),
    ),
    ("CONFIG_GRPC_XDS_NODE_ID", Handling::Flag("--xds-node-id")),
    (
        "CONFIG_GRPC_XDS_NODE_METADATA",
        Handling::Flag("--xds-node-metadata"),
    ),
    (
        "CONFIG_GRPC_XDS_SERVER_URL",
        Handling::FlagDefault("--config"),
    ),
    (
        "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
        Handling::Flag("--xds-connect-retry-interval"),
    ),
    (
        "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS",
        Handling::Flag("--xds-headers"),
    ),
    (
        "CONFIG_GRPC_XDS_SERVER_USE_TLS",
        Handling::Flag("--xds-tls"),
    ),
    (
        "CONFIG_GRPC_XDS_CLIENT_TLS_CERT",
        Handling::Flag("--xds-tls-cert"),
    ),
    (
        "CONFIG_GRPC_XDS_CLIENT_TLS_KEY",
        Handling::Flag("--xds-tls-key"),
    ),
    (
        "CONFIG_GRPC_XDS_SERVER_TLS_CACERT",
        Handling::Flag("--xds-tls-ca"),
    ),
    (
        "CONFIG_GRPC_XDS_SERVER_TLS_SAN",
        Handling::Flag("--xds-tls-server-name"),
    ),
    (
        "XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES",
        Handling::Flag("--xds-max-message-bytes"),
    ),
    (
        "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL",
        Handling::Flag("--xds-backoff-initial"),
    ),
    (
        "XDS_CLIENT_BACKOFF_MAX_INTERVAL",
        Handling::Flag("--xds-backoff-max"),
    ),
    (
        "XDS_CLIENT_BACKOFF_RANDOM_FACTOR",
        Handling::Flag("--xds-backoff-random-factor"),
    ),
    (
        "XDS_CLIENT_BACKOFF_JITTER",
        Handling::Flag("--xds-backoff-jitter"),
    ),
    ("USE_STATSD", Handling::Flag("--use-statsd")),
    ("STATSD_HOST", Handling::Flag("--statsd-host")),
    ("STATSD_PORT", Handling::Flag("--statsd-port")),
    ("USE_DOG_STATSD", Handling::Flag("--use-dog-statsd")),
    (
        "USE_DOG_STATSD_MOGRIFIERS",
        Handling::Ignored("DogStatsD lines keep the reference's statsd names, untransformed"),
    ),
    ("EXTRA_TAGS", Handling::Flag("--extra-tags")),
    (
        "STATS_FLUSH_INTERVAL",
        Handling::Flag("--stats-flush-interval"),
    ),
    ("DISABLE_STATS", Handling::Flag("--disable-stats")),
    ("USE_PROMETHEUS", Handling::Flag("--use-prometheus")),
    ("PROMETHEUS_ADDR", Handling::Flag("--prometheus-addr")),
    ("PROMETHEUS_PATH", Handling::Flag("--prometheus-path")),
    (
        "PROMETHEUS_MAPPER_YAML",
        Handling::Flag("--prometheus-mapper-yaml"),
    ),
    (
        "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS",
        Handling::Flag("--prometheus-response-time-as-milliseconds"),
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
        Handling::Flag("--healthy-with-at-least-one-config-loaded"),
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
    (
        "REDIS_TLS_CLIENT_CERT",
        Handling::Flag("--redis-tls-client-cert"),
    ),
    (
        "REDIS_TLS_CLIENT_KEY",
        Handling::Flag("--redis-tls-client-key"),
    ),
    ("REDIS_TLS_CACERT", Handling::Flag("--redis-tls-cacert")),
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
        Handling::Flag("--redis-sentinel-auth"),
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
    ("TRACING_ENABLED", Handling::Flag("--tracing-enabled")),
    (
        "TRACING_SERVICE_NAME",
        Handling::Flag("--tracing-service-name"),
    ),
    (
        "TRACING_SERVICE_NAMESPACE",
        Handling::Flag("--tracing-service-namespace"),
    ),
    (
        "TRACING_SERVICE_INSTANCE_ID",
        Handling::Flag("--tracing-service-instance-id"),
    ),
    (
        "TRACING_SAMPLING_RATE",
        Handling::Flag("--tracing-sampling-rate"),
    ),
    (
        "TRACING_EXPORTER_PROTOCOL",
        Handling::Flag("--tracing-exporter-protocol"),
    ),
    (
        "PROTO",
        Handling::Fixed {
            value: "tcp",
            why: "the HTTP and admin servers listen on TCP",
        },
    ),
];
