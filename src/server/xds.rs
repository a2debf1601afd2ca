//! The xDS rule source's client: one state-of-the-world ADS stream to a
//! management server (Envoy Gateway's, or any go-control-plane server),
//! subscribed to the reference's `RateLimitConfig` type.
//!
//! Each response is the whole rule set. It is loaded with the YAML files'
//! validation ([`config::xds::load_response`]) and [recorded](Reloader::record)
//! as a reload is, so logs, metrics, `/reload` and the dashboard say the
//! same for files and for xDS. A response that loads is applied atomically
//! and ACKed (its `version_info` and `nonce`); one that does not is NACKed
//! with the errors as `error_detail` (and the version last accepted), and
//! the rules serving stay.
//!
//! A connection that fails is tried again every `connect_retry` (jittered);
//! a stream that breaks (the server closed it, sent what does not decode or
//! is larger than the limit, went away) is opened again after a jittered
//! exponential backoff, reset by every response. A new stream resumes from
//! the version last accepted. HTTP/2 keepalives find a server that vanished
//! without closing; a server that is there but has nothing to send (Envoy
//! Gateway without any rate-limit policy) is simply waited for.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::reload::{Reloader, unix_seconds};
use super::tls::error_chain;
use crate::config::xds::{RATE_LIMIT_CONFIG_TYPE, XdsSettings};
use crate::config::{self, ConfigErrors, LoadOptions};
use crate::observe::metrics::Metrics;
use crate::proto::encoded_struct::StructWriter;
use crate::proto::envoy::config::core::v3::Node;
use crate::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::proto::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use crate::proto::google::rpc::Status;
use crate::store::CounterStore;

/// What the reloader records an xDS response as.
const TRIGGER: &str = "xDS";

/// A NACK's `error_detail` is cut to this many bytes.
const MAX_ERROR_DETAIL: usize = 16 * 1024;

/// `google.rpc.Code.INVALID_ARGUMENT`, a NACK's code.
const INVALID_ARGUMENT: i32 = 3;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 pings while idle, to find a server that vanished.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A checked [`XdsSettings`]: the endpoint with its TLS, the stream's
/// headers and the node. Built at start, so a missing certificate or a bad
/// header stops `serve` with a message rather than every connection.
#[derive(Clone, Debug)]
pub struct XdsClient {
    settings: XdsSettings,
    endpoint: Endpoint,
    headers: MetadataMap,
    node: Node,
}

impl XdsClient {
    /// Reads the TLS files and checks the server address and the headers.
    pub fn prepare(settings: &XdsSettings) -> Result<XdsClient, String> {
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let uri = format!("{scheme}://{}", settings.server);
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| format!("xDS server '{}' is not host:port: {e}", settings.server))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(tls) = &settings.tls {
            let read = |what: &str, path: &std::path::Path| {
                std::fs::read(path)
                    .map_err(|e| format!("cannot read the xDS {what} {}: {e}", path.display()))
            };
            let mut config = ClientTlsConfig::new();
            config = match &tls.ca {
                Some(ca) => config.ca_certificate(Certificate::from_pem(read("CA", ca)?)),
                None => config.with_webpki_roots(),
            };
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(
                    read("client certificate", cert)?,
                    read("client key", key)?,
                ));
            }
            if let Some(name) = &tls.server_name {
                config = config.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| format!("xDS TLS settings cannot be used: {e}"))?;
        }
        let mut headers = MetadataMap::new();
        for (name, value) in &settings.headers {
            let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("xDS header name '{name}' is not a valid header name"))?;
            let value = MetadataValue::try_from(value.as_str())
                .map_err(|_| format!("xDS header '{name}' has a value that is not allowed"))?;
            headers.insert(key, value);
        }
        let mut metadata = StructWriter::with_capacity(64);
        for (key, value) in &settings.node_metadata {
            metadata.string(key, value);
        }
        let node = Node {
            id: settings.node_id.clone(),
            cluster: String::new(),
            metadata: (!settings.node_metadata.is_empty()).then(|| metadata.finish()),
            user_agent_name: "floodgate".to_owned(),
        };
        Ok(XdsClient {
            settings: settings.clone(),
            endpoint,
            headers,
            node,
        })
    }

    fn request(&self, version_info: &str, nonce: &str, error: Option<String>) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version_info.to_owned(),
            node: Some(self.node.clone()),
            resource_names: Vec::new(),
            type_url: RATE_LIMIT_CONFIG_TYPE.to_owned(),
            response_nonce: nonce.to_owned(),
            error_detail: error.map(|message| Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
        }
    }
}

/// How a stream ended.
enum StreamEnd {
    Shutdown,
    /// The stream broke; `responded`: the server had sent a response on it.
    Failed {
        error: String,
        responded: bool,
    },
}

/// Streams rules from the management server into `reloader` until
/// `shutdown` turns true.
pub(crate) fn spawn<S: CounterStore>(
    client: XdsClient,
    reloader: Arc<Reloader<S>>,
    load_options: LoadOptions,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<Result<(), String>> {
    reloader.update_xds(|status| {
        status.server = client.settings.server.clone();
        status.node_id = client.settings.node_id.clone();
    });
    metrics.set_xds_connected(false);
    tokio::spawn(async move {
        let mut accepted_version = String::new();
        let mut attempt = 0u32;
        loop {
            tracing::info!(server = %client.settings.server, node = %client.settings.node_id, "connecting to the xDS server");
            let connected = tokio::select! {
                connected = client.endpoint.connect() => Some(connected),
                () = stopped(&mut shutdown) => None,
            };
            let wait = match connected {
                None => break,
                Some(Err(e)) => {
                    let error = format!("cannot connect: {}", error_chain(&e));
                    failed(&reloader, &metrics, &client, &error);
                    jittered(client.settings.connect_retry, 0.5)
                }
                Some(Ok(channel)) => {
                    let session = Session {
                        client: &client,
                        reloader: &reloader,
                        load_options: &load_options,
                        metrics: &metrics,
                    };
                    match session
                        .run(channel, &mut accepted_version, &mut shutdown)
                        .await
                    {
                        StreamEnd::Shutdown => break,
                        StreamEnd::Failed { error, responded } => {
                            failed(&reloader, &metrics, &client, &error);
                            if responded {
                                attempt = 0;
                            }
                            let wait = client.settings.backoff.delay(attempt, random_unit());
                            attempt = attempt.saturating_add(1);
                            wait
                        }
                    }
                }
            };
            tracing::info!(wait = ?wait, "reconnecting to the xDS server after a pause");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut shutdown) => break,
            }
        }
        metrics.set_xds_connected(false);
        Ok(())
    })
}

/// One stream's worth of state.
struct Session<'a, S> {
    client: &'a XdsClient,
    reloader: &'a Arc<Reloader<S>>,
    load_options: &'a LoadOptions,
    metrics: &'a Arc<Metrics>,
}

impl<S: CounterStore> Session<'_, S> {
    /// Subscribes (resuming from `accepted_version`) and answers every
    /// response with an ACK or a NACK, until the stream breaks or shutdown.
    async fn run(
        &self,
        channel: Channel,
        accepted_version: &mut String,
        shutdown: &mut watch::Receiver<bool>,
    ) -> StreamEnd {
        let client = self.client;
        let failed = |error: String, responded: bool| StreamEnd::Failed { error, responded };
        // One request is answered before the next is sent: a small buffer
        // never fills.
        let (requests, outbound) = mpsc::channel::<DiscoveryRequest>(4);
        if requests
            .send(client.request(accepted_version, "", None))
            .await
            .is_err()
        {
            return failed("the request stream closed".to_owned(), false);
        }
        let mut request = tonic::Request::new(ReceiverStream::new(outbound));
        *request.metadata_mut() = client.headers.clone();
        let mut ads = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(client.settings.max_message_bytes);
        let opened = tokio::select! {
            opened = ads.stream_aggregated_resources(request) => opened,
            () = stopped(shutdown) => return StreamEnd::Shutdown,
        };
        let mut responses = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => return failed(format!("cannot open the stream: {status}"), false),
        };
        tracing::info!(server = %client.settings.server, resume = %accepted_version, "xDS stream open");
        self.metrics.set_xds_connected(true);
        self.reloader.update_xds(|status| status.connected = true);
        let mut responded = false;
        loop {
            let next = tokio::select! {
                next = responses.message() => next,
                () = stopped(shutdown) => return StreamEnd::Shutdown,
            };
            let response = match next {
                Ok(Some(response)) => response,
                Ok(None) => return failed("the server closed the stream".to_owned(), responded),
                Err(status) => return failed(format!("the stream failed: {status}"), responded),
            };
            responded = true;
            let answer = self.apply(response, accepted_version).await;
            if requests.send(answer).await.is_err() {
                return failed("the request stream closed".to_owned(), responded);
            }
        }
    }

    /// Loads and records one response; the ACK or NACK to send.
    async fn apply(
        &self,
        response: DiscoveryResponse,
        accepted_version: &mut String,
    ) -> DiscoveryRequest {
        let DiscoveryResponse {
            version_info,
            resources,
            type_url,
            nonce,
            ..
        } = response;
        tracing::info!(version = %version_info, resources = resources.len(), "xDS response");
        let reloader = Arc::clone(self.reloader);
        let options = self.load_options.clone();
        // Compiling a large rule set is CPU work: off the async workers.
        let loaded = tokio::task::spawn_blocking(move || {
            let result = config::xds::load_response(&type_url, &resources, &options);
            reloader.record(result, TRIGGER)
        })
        .await;
        let outcome: Result<(), String> = match loaded {
            Ok(Ok(())) => Ok(()),
            Ok(Err(errors)) => Err(error_detail(&errors)),
            // The load panicked: the rules serving stay, as for any failure.
            Err(e) => {
                tracing::error!(error = %e, "loading an xDS response failed");
                Err(format!("floodgate could not load the response: {e}"))
            }
        };
        let now = unix_seconds();
        match outcome {
            Ok(()) => {
                tracing::info!(version = %version_info, "xDS response applied: ACK");
                *accepted_version = version_info.clone();
                self.reloader.update_xds(|status| {
                    status.accepted_version = Some(version_info);
                    status.last_ack_unix_seconds = Some(now);
                    status.last_nack_error = None;
                    status.acks += 1;
                });
                self.client.request(accepted_version, &nonce, None)
            }
            Err(detail) => {
                tracing::error!(version = %version_info, keep = %accepted_version, "xDS response refused: NACK; the previous rules keep serving");
                let sent = detail.clone();
                self.reloader.update_xds(|status| {
                    status.rejected_version = Some(version_info);
                    status.last_nack_unix_seconds = Some(now);
                    status.last_nack_error = Some(detail);
                    status.nacks += 1;
                });
                self.client.request(accepted_version, &nonce, Some(sent))
            }
        }
    }
}

/// Logs, counts and keeps in the status a failed connection or stream.
fn failed<S: CounterStore>(
    reloader: &Reloader<S>,
    metrics: &Metrics,
    client: &XdsClient,
    error: &str,
) {
    tracing::error!(server = %client.settings.server, error, "xDS server unavailable; the rules serving stay");
    metrics.set_xds_connected(false);
    metrics.record_xds_stream_failure();
    reloader.update_xds(|status| {
        status.connected = false;
        status.stream_failures += 1;
        status.last_stream_error = Some(error.to_owned());
    });
}

/// The errors of a refused response, one per line, cut to
/// [`MAX_ERROR_DETAIL`] bytes.
fn error_detail(errors: &ConfigErrors) -> String {
    let mut text = errors.to_string();
    if text.len() > MAX_ERROR_DETAIL {
        let mut end = MAX_ERROR_DETAIL;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n...");
    }
    text
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// `wait × (1 ± factor)`.
fn jittered(wait: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(wait.as_secs_f64() * (1.0 + factor * (2.0 * random_unit() - 1.0)))
        .unwrap_or(wait)
}

/// A number in `0..1`, random enough to spread a fleet's reconnects.
fn random_unit() -> f64 {
    let bits = RandomState::new().build_hasher().finish() >> 11;
    bits as f64 / (1u64 << 53) as f64
}
