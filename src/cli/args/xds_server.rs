//! Where the xDS client finds its management server: the reference's
//! `CONFIG_GRPC_XDS_*` and `XDS_CLIENT_*` variables as flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::super::parse::{parse_bool, parse_duration, parse_factor, parse_pairs};

use crate::config::xds::{self, Backoff, XdsSettings, XdsTls};

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
