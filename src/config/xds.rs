//! Rules pushed by an xDS management server: the reference's
//! `RateLimitConfig` resources (`ratelimit.config.ratelimit.v3`, one domain
//! each) turned into rules with the SAME validation as YAML files.
//!
//! Each resource is decoded, written out as the YAML schema's document (in
//! JSON, which the YAML loader reads) and loaded with every other resource
//! of the response through [`super::load_sources_with_warnings`], named
//! `xds:<resource name>` where a file name would be. So a duplicate
//! descriptor, a bad unit, an empty domain or a domain named twice (without
//! `MERGE_DOMAIN_CONFIG`) is the error it is in a file, and a response is
//! applied whole or not at all. The reference converts its protos to its
//! YAML model the same way (`config_xds.go`). `metadata` is not carried
//! over: floodgate's YAML loader accepts and ignores it too.
//!
//! [`XdsSettings`] says where the management server is and how to talk to
//! it; the stream itself (connect, ACK/NACK, backoff) is the edge tier's:
//! see `server::xds`.

use std::path::PathBuf;
use std::time::Duration;

use prost::Message;
use serde_json::{Map, Value, json};

use super::{ConfigError, ConfigErrors, LoadOptions, Loaded};
use crate::proto::ratelimit::config::ratelimit::v3::{
    RateLimitConfig, RateLimitDescriptor, RateLimitPolicy, RateLimitUnit,
};

/// The resource type floodgate subscribes to.
pub const RATE_LIMIT_CONFIG_TYPE: &str =
    "type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig";

/// The message name an `Any`'s type URL must end with (after its last `/`,
/// as protobuf's `Any` unpacking reads it).
const RATE_LIMIT_CONFIG_NAME: &str = "ratelimit.config.ratelimit.v3.RateLimitConfig";

/// The `--config` prefix that names an xDS management server:
/// `xds://host:port`.
pub const XDS_SCHEME: &str = "xds://";

/// Where the management server is and how to talk to it. The defaults are
/// the reference's (`src/settings/settings.go`).
#[derive(Clone, Debug, PartialEq)]
pub struct XdsSettings {
    /// `host:port` (the reference's `CONFIG_GRPC_XDS_SERVER_URL`).
    pub server: String,
    /// The node id the server keys its snapshots by (Envoy Gateway:
    /// `envoy-ratelimit`).
    pub node_id: String,
    /// The node's metadata, string values only.
    pub node_metadata: Vec<(String, String)>,
    /// Headers sent with the stream.
    pub headers: Vec<(String, String)>,
    /// TLS to the server; plaintext when `None`.
    pub tls: Option<XdsTls>,
    /// The largest response accepted, in bytes.
    pub max_message_bytes: usize,
    /// Wait between attempts to connect (jittered by ±50 %).
    pub connect_retry: Duration,
    /// Wait before opening a stream again after one broke.
    pub backoff: Backoff,
}

/// Default of [`XdsSettings::max_message_bytes`]: gRPC's 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

impl XdsSettings {
    /// The reference's defaults, for the server at `server` (`host:port`).
    pub fn new(server: &str) -> XdsSettings {
        XdsSettings {
            server: server.to_owned(),
            node_id: "default".to_owned(),
            node_metadata: Vec::new(),
            headers: Vec::new(),
            tls: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            connect_retry: Duration::from_secs(3),
            backoff: Backoff::default(),
        }
    }
}

/// TLS to the management server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsTls {
    /// The CA the server's certificate must chain to (PEM); the public web
    /// PKI roots when `None`.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name to check the server's certificate against, instead of the
    /// host of [`XdsSettings::server`].
    pub server_name: Option<String>,
}

/// Jittered exponential backoff between streams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// With `jitter`, each wait is drawn from `wait × (1 ± random_factor)`.
    pub random_factor: f64,
    /// Randomise waits, so a fleet does not reconnect in step.
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(60),
            random_factor: 0.5,
            jitter: true,
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt` (0 for the first retry): doubling
    /// from `initial`, at most `max`; `random` (in `0..1`) jitters it.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let max = self.max.as_secs_f64();
        let base = (self.initial.as_secs_f64() * 2f64.powi(attempt.min(62) as i32)).min(max);
        let factor = self.random_factor.clamp(0.0, 1.0);
        let seconds = if self.jitter {
            base * (1.0 + factor * (2.0 * random.clamp(0.0, 1.0) - 1.0))
        } else {
            base
        };
        Duration::try_from_secs_f64(seconds.clamp(0.0, max)).unwrap_or(self.max)
    }
}

/// Loads one discovery response: its `type_url` must be
/// [`RATE_LIMIT_CONFIG_TYPE`], and its resources are loaded with
/// [`load_resources`].
pub fn load_response(
    type_url: &str,
    resources: &[prost_types::Any],
    options: &LoadOptions,
) -> Result<Loaded, ConfigErrors> {
    if type_url != RATE_LIMIT_CONFIG_TYPE {
        return Err(ConfigErrors(vec![resource_error(
            PathBuf::from("xds:response"),
            format!("a response of type '{type_url}' (subscribed to {RATE_LIMIT_CONFIG_TYPE})"),
        )]));
    }
    load_resources(resources, options)
}

/// Loads the resources of one response (the whole rule set: a domain not
/// among them is gone) into a rule set, or every reason why not: a resource
/// of another type, one that does not decode, and every config error of
/// the resources that do.
pub fn load_resources(
    resources: &[prost_types::Any],
    options: &LoadOptions,
) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let mut sources = Vec::with_capacity(resources.len());
    for (index, resource) in resources.iter().enumerate() {
        let unnamed = || PathBuf::from(format!("xds:resources[{index}]"));
        let type_name = resource.type_url.rsplit('/').next().unwrap_or_default();
        if type_name != RATE_LIMIT_CONFIG_NAME {
            errors.push(resource_error(
                unnamed(),
                format!(
                    "not a RateLimitConfig: type URL '{}' (expected {RATE_LIMIT_CONFIG_TYPE})",
                    resource.type_url
                ),
            ));
            continue;
        }
        match RateLimitConfig::decode(resource.value.as_slice()) {
            Ok(config) => {
                let name = if config.name.is_empty() {
                    unnamed()
                } else {
                    PathBuf::from(format!("xds:{}", config.name))
                };
                sources.push((name, yaml_of(&config)));
            }
            Err(e) => errors.push(resource_error(
                unnamed(),
                format!("the RateLimitConfig does not decode: {e}"),
            )),
        }
    }
    let loaded = super::load_sources_with_warnings(&sources, options).map_err(|more| {
        // Lines and columns point into the generated document, which nobody
        // sees: the resource and the rule path say where the problem is.
        ConfigErrors(more.0.into_iter().map(without_position).collect())
    });
    match loaded {
        Ok(loaded) if errors.is_empty() => Ok(Loaded {
            warnings: loaded.warnings.into_iter().map(without_position).collect(),
            ..loaded
        }),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(more) => {
            errors.extend(more.0);
            Err(ConfigErrors(errors))
        }
    }
}

fn resource_error(file: PathBuf, reason: String) -> ConfigError {
    ConfigError {
        file,
        line: None,
        column: None,
        rule_path: String::new(),
        reason,
    }
}

fn without_position(error: ConfigError) -> ConfigError {
    ConfigError {
        line: None,
        column: None,
        ..error
    }
}

/// The YAML schema's document of one resource, written as JSON (a YAML
/// flow document). Proto3 defaults (an empty value, a false flag, no
/// name) are left out, as the reference's YAML model has them as zero
/// values; everything else is written as given, for validation to judge.
pub fn yaml_of(config: &RateLimitConfig) -> String {
    let document = json!({
        "domain": config.domain,
        "descriptors": config.descriptors.iter().map(descriptor_of).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

fn descriptor_of(descriptor: &RateLimitDescriptor) -> Value {
    let mut out = Map::new();
    out.insert("key".to_owned(), json!(descriptor.key));
    if !descriptor.value.is_empty() {
        out.insert("value".to_owned(), json!(descriptor.value));
    }
    if let Some(policy) = &descriptor.rate_limit {
        out.insert("rate_limit".to_owned(), policy_of(policy));
    }
    if !descriptor.descriptors.is_empty() {
        let nested: Vec<Value> = descriptor.descriptors.iter().map(descriptor_of).collect();
        out.insert("descriptors".to_owned(), Value::Array(nested));
    }
    for (flag, on) in [
        ("shadow_mode", descriptor.shadow_mode),
        ("detailed_metric", descriptor.detailed_metric),
        ("quota_mode", descriptor.quota_mode),
    ] {
        if on {
            out.insert(flag.to_owned(), Value::Bool(true));
        }
    }
    Value::Object(out)
}

fn policy_of(policy: &RateLimitPolicy) -> Value {
    let mut out = Map::new();
    // The enum's name, as the reference writes it (`MINUTE`); a number no
    // unit has is written as the number, which validation refuses.
    let unit = RateLimitUnit::try_from(policy.unit)
        .map(|unit| unit.as_str_name().to_owned())
        .unwrap_or_else(|_| policy.unit.to_string());
    out.insert("unit".to_owned(), json!(unit));
    out.insert(
        "requests_per_unit".to_owned(),
        json!(policy.requests_per_unit),
    );
    if policy.unlimited {
        out.insert("unlimited".to_owned(), Value::Bool(true));
    }
    if !policy.name.is_empty() {
        out.insert("name".to_owned(), json!(policy.name));
    }
    if !policy.replaces.is_empty() {
        let replaces: Vec<Value> = policy
            .replaces
            .iter()
            .map(|replace| json!({ "name": replace.name }))
            .collect();
        out.insert("replaces".to_owned(), Value::Array(replaces));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests;
