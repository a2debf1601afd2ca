//! Shared by the `respond_*` tests: a real server on 127.0.0.1:0 with a
//! manual clock, a tonic client, and helpers to read answers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use floodgate::clock::ManualClock;
use floodgate::config::{self, LoadOptions};
use floodgate::limit::{NANOS_PER_SECOND, Nanos};
use floodgate::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitRequest, RateLimitResponse, RateLimitServiceClient,
};
use floodgate::rules::RuleSet;
use floodgate::server::{self, Listeners, Running};
use floodgate::service::{RateLimiter, ServiceOptions};
use floodgate::store::memory::MemoryStore;
use tonic::transport::Channel;

/// 2023-11-14T22:13:00Z: the start of a minute, of a 30-minute window and
/// of an hour (1_699_999_200 is a multiple of 3600).
pub const HOUR_START: u64 = 1_699_999_200;

/// Seconds to nanoseconds.
pub const fn secs(s: u64) -> Nanos {
    s * NANOS_PER_SECOND
}

/// A running server and a client for it.
pub struct Harness {
    pub client: RateLimitServiceClient<Channel>,
    pub clock: ManualClock,
    running: Running,
}

impl Harness {
    /// Serves `rules` with `options`, the clock at `now`.
    pub async fn start(rules: RuleSet, options: ServiceOptions, now: Nanos) -> Harness {
        let clock = ManualClock::new(now);
        let limiter = Arc::new(RateLimiter::new(
            rules,
            MemoryStore::new(10_000),
            Arc::new(clock.clone()),
            options,
        ));
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let running = server::start(
            limiter,
            &Listeners {
                grpc: any,
                http: any,
            },
        )
        .await
        .expect("server starts");
        let client = RateLimitServiceClient::connect(format!("http://{}", running.grpc_addr))
            .await
            .expect("client connects");
        Harness {
            client,
            clock,
            running,
        }
    }

    /// The bound gRPC address, for clients other than [`Harness::client`].
    pub fn grpc_addr(&self) -> SocketAddr {
        self.running.grpc_addr
    }

    /// The bound HTTP address (`/json`, `/healthcheck`, `/metrics`).
    pub fn http_addr(&self) -> SocketAddr {
        self.running.http_addr
    }

    /// Serves one YAML text with default options.
    pub async fn yaml(yaml: &str, now: Nanos) -> Harness {
        Harness::start(rules(yaml), ServiceOptions::default(), now).await
    }

    /// Serves the shipped `config/` directory with default options.
    pub async fn shipped(now: Nanos) -> Harness {
        Harness::start(shipped_rules(), ServiceOptions::default(), now).await
    }

    /// Asks once.
    pub async fn ask(&mut self, request: RateLimitRequest) -> RateLimitResponse {
        self.client
            .should_rate_limit(request)
            .await
            .expect("answer")
            .into_inner()
    }

    /// Asks `domain` about `descriptors` (each a list of key/value pairs).
    pub async fn call(
        &mut self,
        domain: &str,
        descriptors: &[&[(&str, &str)]],
    ) -> RateLimitResponse {
        self.ask(request(domain, descriptors)).await
    }

    pub async fn stop(self) {
        self.running.shutdown().await.expect("clean shutdown");
    }
}

/// Rules from one YAML text.
pub fn rules(yaml: &str) -> RuleSet {
    config::load_sources(
        &[(PathBuf::from("test.yaml"), yaml.to_owned())],
        &LoadOptions::default(),
    )
    .unwrap_or_else(|errors| panic!("config should load:\n{errors}"))
}

/// The shipped `config/` directory.
pub fn shipped_rules() -> RuleSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    config::load_path(&dir, &LoadOptions::default())
        .unwrap_or_else(|errors| panic!("config/ should load:\n{errors}"))
}

pub fn request(domain: &str, descriptors: &[&[(&str, &str)]]) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: descriptors
            .iter()
            .map(|entries| RateLimitDescriptor {
                entries: entries
                    .iter()
                    .map(|(key, value)| Entry {
                        key: (*key).to_owned(),
                        value: (*value).to_owned(),
                    })
                    .collect(),
                ..RateLimitDescriptor::default()
            })
            .collect(),
        hits_addend: 0,
    }
}

/// `response_headers_to_add` as (name, value) pairs, in order.
pub fn headers(response: &RateLimitResponse) -> Vec<(String, String)> {
    response
        .response_headers_to_add
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

/// Header pairs from string literals, for comparisons.
pub fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// One header's value.
pub fn header<'a>(response: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    response
        .response_headers_to_add
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

pub fn is_over(response: &RateLimitResponse) -> bool {
    response.overall_code == Code::OverLimit as i32
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

/// The body as JSON.
pub fn body_json(response: &RateLimitResponse) -> serde_json::Value {
    serde_json::from_slice(&response.raw_body).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {}",
            String::from_utf8_lossy(&response.raw_body)
        )
    })
}

/// The dynamic metadata as JSON.
pub fn metadata(response: &RateLimitResponse) -> serde_json::Value {
    response
        .dynamic_metadata
        .as_ref()
        .map(struct_json)
        .unwrap_or(serde_json::Value::Null)
}

fn struct_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

fn value_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::json!(*n as u64),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_json).collect())
        }
    }
}
