//! The one harness of the integration tests. Each test binary declares
//! `mod harness;` and takes what it needs:
//!
//! - this module: request builders and readers of answers;
//! - [`server`]: an in-process server on 127.0.0.1:0 (gRPC and HTTP) with a
//!   manual clock and a connected tonic client;
//! - [`ops`]: an in-process server that loads and reloads rules from a
//!   config path, with an admin listener; Prometheus text; bounded polling;
//! - [`http`]: a minimal HTTP/1.1 client over a plain TCP stream;
//! - [`process`]: the `floodgate` binary as a child process, free ports;
//! - [`redis`]: a `redis-server` of the test's own on a free port;
//! - [`tls`]: a test CA that signs server and client certificates;
//! - [`tools`]: the external programs some tests run, checked all at once.
//! - [`xds`]: a test xDS management server (ADS, state of the world) and a
//!   floodgate fed by it.

#![allow(dead_code, unused_imports)] // each test crate uses a different subset

pub mod http;
pub mod ops;
pub mod process;
pub mod redis;
pub mod server;
pub mod tls;
pub mod tools;
pub mod xds;

use floodgate::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitOverride, RateLimitRequest, RateLimitResponse,
};

pub use http::{HttpResponse, http, http_get, http_post, http_with};
pub use server::{
    HOUR_START, Options, START, START_SECS, TestServer, load_yaml, rules, secs, shipped_rules,
};

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

/// A request of plain descriptors (each a list of key/value pairs),
/// request-level `hits_addend` 0.
pub fn request(domain: &str, descriptors: &[&[(&str, &str)]]) -> RateLimitRequest {
    request_of(
        domain,
        descriptors.iter().map(|d| descriptor(d)).collect(),
        0,
    )
}

/// A request of one plain descriptor.
pub fn request_one(domain: &str, entries: &[(&str, &str)]) -> RateLimitRequest {
    request(domain, &[entries])
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

pub fn is_over(response: &RateLimitResponse) -> bool {
    overall(response) == Code::OverLimit
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
        .map(|m| struct_json(&m.to_struct().expect("the metadata decodes as a Struct")))
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
