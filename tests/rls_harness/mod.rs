//! Shared by `decisions.rs` and `http_json.rs`: a real floodgate server on
//! 127.0.0.1:0 (gRPC and HTTP) with a manual clock, a connected tonic client,
//! request builders, and a tiny HTTP/1.1 client over a plain TCP stream.
//!
//! (`tests/common` belongs to the `respond_*` suites; this harness adds what
//! the decision tests need: the limiter itself for hot swaps, load options,
//! per-descriptor overrides and hits, and the HTTP address.)

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use floodgate::clock::ManualClock;
use floodgate::config::{self, LoadOptions};
use floodgate::limit::{NANOS_PER_SECOND, Nanos};
use floodgate::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitOverride, RateLimitRequest, RateLimitResponse,
    RateLimitServiceClient,
};
use floodgate::rules::RuleSet;
use floodgate::server::{self, Listeners, Running};
use floodgate::service::{RateLimiter, ServiceOptions};
use floodgate::store::memory::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// 2023-11-15T00:00:00Z in seconds: a day boundary, so second, minute, hour
/// and day windows all start here.
pub const START_SECS: u64 = 1_700_006_400;

/// [`START_SECS`] in nanoseconds.
pub const START: Nanos = START_SECS * NANOS_PER_SECOND;

/// Seconds to nanoseconds.
pub const fn secs(s: u64) -> Nanos {
    s * NANOS_PER_SECOND
}

/// A running server, its clock and a client.
pub struct TestServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub clock: ManualClock,
    pub client: RateLimitServiceClient<Channel>,
    pub limiter: Arc<RateLimiter<MemoryStore>>,
    running: Running,
}

impl TestServer {
    /// Serves one YAML text with default options, the clock at [`START`].
    pub async fn start(yaml: &str) -> TestServer {
        TestServer::start_with(yaml, ServiceOptions::default(), LoadOptions::default()).await
    }

    /// Serves one YAML text with `options`, the clock at [`START`].
    pub async fn start_with(yaml: &str, options: ServiceOptions, load: LoadOptions) -> TestServer {
        TestServer::serve(load_yaml(yaml, &load), options).await
    }

    /// Serves a rule set, the clock at [`START`].
    pub async fn serve(rules: RuleSet, options: ServiceOptions) -> TestServer {
        let clock = ManualClock::new(START);
        let limiter = Arc::new(RateLimiter::new(
            rules,
            MemoryStore::new(100_000),
            Arc::new(clock.clone()),
            options,
        ));
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let running = server::start(
            Arc::clone(&limiter),
            &Listeners {
                grpc: any,
                http: any,
            },
        )
        .await
        .expect("server starts");
        let client = connect(running.grpc_addr).await;
        TestServer {
            grpc_addr: running.grpc_addr,
            http_addr: running.http_addr,
            clock,
            client,
            limiter,
            running,
        }
    }

    /// A new client on its own connection.
    pub async fn new_client(&self) -> RateLimitServiceClient<Channel> {
        connect(self.grpc_addr).await
    }

    /// Sends a request, expecting an answer.
    pub async fn send(&mut self, request: RateLimitRequest) -> RateLimitResponse {
        match self.client.should_rate_limit(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => panic!("expected an answer, got {status:?}"),
        }
    }

    /// Sends a request, returning the gRPC error if any.
    pub async fn try_send(
        &mut self,
        request: RateLimitRequest,
    ) -> Result<RateLimitResponse, tonic::Status> {
        self.client
            .should_rate_limit(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Asks about `domain` and `descriptors` (each a list of key/value pairs).
    pub async fn should(
        &mut self,
        domain: &str,
        descriptors: &[&[(&str, &str)]],
    ) -> RateLimitResponse {
        self.send(request(domain, descriptors)).await
    }

    /// Moves the clock forward by whole seconds.
    pub fn advance_secs(&self, seconds: u64) {
        self.clock.advance(secs(seconds));
    }

    /// Sets the clock to `START + seconds`.
    pub fn at_secs(&self, seconds: u64) {
        self.clock.set(START + secs(seconds));
    }

    /// Stops the server, expecting a clean shutdown.
    pub async fn shutdown(self) {
        drop(self.client);
        self.running.shutdown().await.expect("clean shutdown");
    }
}

async fn connect(addr: SocketAddr) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("client connects")
}

/// Rules from one YAML text named `test.yaml`, panicking with the errors.
pub fn load_yaml(yaml: &str, load: &LoadOptions) -> RuleSet {
    config::load_sources(&[(PathBuf::from("test.yaml"), yaml.to_owned())], load)
        .unwrap_or_else(|errors| panic!("config should load:\n{errors}"))
}

/// A descriptor of key/value pairs.
pub fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

/// A descriptor with its own `hits_addend`.
pub fn descriptor_with_hits(entries: &[(&str, &str)], hits: u64) -> RateLimitDescriptor {
    RateLimitDescriptor {
        hits_addend: Some(hits),
        ..descriptor(entries)
    }
}

/// A descriptor with a request limit override (`unit`: envoy.type.v3.RateLimitUnit).
pub fn descriptor_with_override(
    entries: &[(&str, &str)],
    requests_per_unit: u32,
    unit: i32,
) -> RateLimitDescriptor {
    RateLimitDescriptor {
        limit: Some(RateLimitOverride {
            requests_per_unit,
            unit,
        }),
        ..descriptor(entries)
    }
}

/// A request of plain descriptors, request-level `hits_addend` 0.
pub fn request(domain: &str, descriptors: &[&[(&str, &str)]]) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: descriptors.iter().map(|d| descriptor(d)).collect(),
        hits_addend: 0,
    }
}

/// A request of given descriptors and request-level hits.
pub fn request_of(
    domain: &str,
    descriptors: Vec<RateLimitDescriptor>,
    hits: u32,
) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors,
        hits_addend: hits,
    }
}

pub fn overall(response: &RateLimitResponse) -> Code {
    Code::try_from(response.overall_code).unwrap_or(Code::Unknown)
}

pub fn codes(response: &RateLimitResponse) -> Vec<Code> {
    response
        .statuses
        .iter()
        .map(|s| Code::try_from(s.code).unwrap_or(Code::Unknown))
        .collect()
}

pub fn remaining(response: &RateLimitResponse) -> Vec<u32> {
    response
        .statuses
        .iter()
        .map(|s| s.limit_remaining)
        .collect()
}

/// The `current_limit.name` of status `index` (`None` when no limit).
pub fn limit_name(response: &RateLimitResponse, index: usize) -> Option<String> {
    response.statuses[index]
        .current_limit
        .as_ref()
        .map(|l| l.name.clone())
}

/// `duration_until_reset` of status `index` as (seconds, nanos).
pub fn reset(response: &RateLimitResponse, index: usize) -> Option<(i64, i32)> {
    response.statuses[index]
        .duration_until_reset
        .as_ref()
        .map(|d| (d.seconds, d.nanos))
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`, read to the end.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP server");
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body.as_bytes()).await.expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read answer");
    parse_http(&raw)
}

fn parse_http(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
