//! The reference's stats (statsd, its Prometheus listener) and
//! OpenTelemetry traces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::super::parse::{Tags, parse_bool, parse_duration, parse_listen_addr, parse_tags};

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
