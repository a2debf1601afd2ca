//! Hostile and extreme requests over real gRPC (and `/json`): every request
//! limit answers `INVALID_ARGUMENT` naming the problem and the limit, bytes
//! that are not a valid message (invalid UTF-8, a truncated frame) and
//! oversized messages too, and hit counts at the edges of `u32`/`u64`
//! saturate instead of wrapping, for every algorithm.

use crate::harness;

use floodgate::decide::{RequestLimits, ServiceOptions};
use floodgate::proto::{
    Code, RateLimitDescriptor, RateLimitOverride, RateLimitRequest, RateLimitResponse,
};
use harness::{START, TestServer, descriptor, rules};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Status, codegen::http::uri::PathAndQuery};

const YAML: &str =
    "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 10}\n";

/// A request to domain `d`.
fn request_of(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    harness::request_of("d", descriptors, 0)
}

async fn status_of(h: &mut TestServer, request: RateLimitRequest) -> Status {
    match h.client.should_rate_limit(request).await {
        Ok(response) => panic!("expected an error, got {:?}", response.into_inner()),
        Err(status) => status,
    }
}

fn small_limits() -> RequestLimits {
    RequestLimits {
        max_descriptors: 4,
        max_descriptor_entries: 3,
        max_key_bytes: 16,
        max_value_bytes: 32,
        max_message_bytes: 4096,
    }
}

async fn serve_with(limits: RequestLimits) -> TestServer {
    let options = ServiceOptions {
        request_limits: limits,
        ..ServiceOptions::default()
    };
    TestServer::serve_at(rules(YAML), options, START).await
}

#[test]
fn defaults_are_the_documented_ones() {
    let limits = RequestLimits::default();
    assert_eq!(limits.max_descriptors, 64);
    assert_eq!(limits.max_descriptor_entries, 32);
    assert_eq!(limits.max_key_bytes, 1024);
    assert_eq!(limits.max_value_bytes, 64 * 1024);
    assert_eq!(limits.max_message_bytes, 1024 * 1024);
}

#[tokio::test]
async fn each_limit_answers_invalid_argument_naming_it() {
    let mut h = serve_with(small_limits()).await;
    let value = "v".repeat(32);
    // Exactly at every limit: answered.
    let at_limits = request_of(vec![
        descriptor(&[("k", &value), ("k2", "x"), ("k3", "y")]),
        descriptor(&[("k", "a")]),
        descriptor(&[("kkkkkkkkkkkkkkkk", "a")]),
        descriptor(&[("k", "b")]),
    ]);
    let response = h.send(at_limits).await;
    assert_eq!(response.statuses.len(), 4);

    let cases: Vec<(RateLimitRequest, &str)> = vec![
        (
            request_of(vec![descriptor(&[("k", "a")]); 5]),
            "request has 5 descriptors, more than the limit of 4 (--max-descriptors)",
        ),
        (
            request_of(vec![descriptor(&[
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
                ("d", "4"),
            ])]),
            "descriptor 0 has 4 entries, more than the limit of 3 (--max-descriptor-entries)",
        ),
        (
            request_of(vec![
                descriptor(&[("k", "a")]),
                descriptor(&[(&"k".repeat(17), "a")]),
            ]),
            "descriptor 1 entry 0 has a key of 17 bytes, more than the limit of 16 (--max-key-bytes)",
        ),
        (
            request_of(vec![descriptor(&[("k", "a"), ("k", &"v".repeat(33))])]),
            "descriptor 0 entry 1 (key \"k\") has a value of 33 bytes, more than the limit of 32 (--max-value-bytes)",
        ),
        (
            RateLimitRequest {
                domain: "d".repeat(17),
                ..request_of(vec![descriptor(&[("k", "a")])])
            },
            "domain is 17 bytes, more than the limit of 16 (--max-key-bytes)",
        ),
    ];
    for (request, message) in cases {
        let status = status_of(&mut h, request).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), message);
    }
    // The server still answers.
    assert_eq!(
        h.should("d", &[&[("k", "a")]]).await.overall_code,
        Code::Ok as i32
    );
    h.shutdown().await;
}

#[tokio::test]
async fn oversized_messages_are_invalid_argument_naming_the_limit() {
    let mut h = serve_with(small_limits()).await;
    // Over the message size, whatever else is wrong with it.
    let big = request_of(vec![descriptor(&[("k", &"v".repeat(8 * 1024))])]);
    let status = status_of(&mut h, big).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("4096"), "{}", status.message());
    assert!(
        status.message().contains("--max-message-bytes"),
        "{}",
        status.message()
    );
    assert_eq!(
        h.should("d", &[&[("k", "a")]]).await.overall_code,
        Code::Ok as i32
    );
    h.shutdown().await;

    // The 1 MiB default, with a 2 MiB message.
    let mut h = serve_with(RequestLimits::default()).await;
    let big = request_of(vec![descriptor(&[("k", &"v".repeat(2 << 20))])]);
    let status = status_of(&mut h, big).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("1048576"), "{}", status.message());
    h.shutdown().await;
}

#[tokio::test]
async fn json_bodies_over_the_limit_get_413_naming_it() {
    let h = serve_with(small_limits()).await;
    let body = format!(
        r#"{{"domain":"d","descriptors":[{{"entries":[{{"key":"k","value":"{}"}}]}}]}}"#,
        "v".repeat(8 * 1024)
    );
    let (status, text) = harness::http_post(h.http_addr, "/json", &body).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("limit of 4096 bytes"), "{text}");
    // Within the size, over a request limit: 400 with the same message as gRPC.
    let body = format!(
        r#"{{"domain":"d","descriptors":[{{"entries":[{{"key":"k","value":"{}"}}]}}]}}"#,
        "v".repeat(33)
    );
    let (status, text) = harness::http_post(h.http_addr, "/json", &body).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("more than the limit of 32 (--max-value-bytes)"),
        "{text}"
    );
    h.shutdown().await;
}

/// Sends bytes as they are and returns the bytes answered.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

async fn send_raw(h: &TestServer, bytes: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = Channel::from_shared(format!("http://{}", h.grpc_addr))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path =
        PathAndQuery::from_static("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit");
    grpc.unary(tonic::Request::new(bytes), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A length-delimited protobuf field.
fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let mut out = Vec::new();
    encode_key(tag, WireType::LengthDelimited, &mut out);
    encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// `RateLimitRequest { domain, descriptors: [{ entries: [{ key, value }] }] }`
/// from raw bytes (field numbers of rls.proto).
fn raw_request(domain: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let entry = [field(1, key), field(2, value)].concat();
    let descriptor = field(1, &entry);
    [field(1, domain), field(2, &descriptor)].concat()
}

#[tokio::test]
async fn undecodable_bytes_are_invalid_argument() {
    let h = serve_with(RequestLimits::default()).await;
    // The raw path itself works: valid bytes get a real answer.
    let answer = send_raw(&h, raw_request(b"d", b"k", b"a"))
        .await
        .expect("valid bytes are answered");
    let response = RateLimitResponse::decode(answer.as_slice()).expect("a response");
    assert_eq!(response.overall_code, Code::Ok as i32);

    let invalid_utf8: [(&str, Vec<u8>); 3] = [
        ("domain", raw_request(b"d\xff", b"k", b"a")),
        ("key", raw_request(b"d", b"\xc3\x28", b"a")),
        ("value", raw_request(b"d", b"k", b"\xf0\x28\x8c\xbc")),
    ];
    for (what, bytes) in invalid_utf8 {
        let status = send_raw(&h, bytes).await.expect_err("invalid UTF-8");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        assert!(
            status.message().contains("malformed RateLimitRequest")
                && status.message().contains("UTF-8"),
            "{what}: {}",
            status.message()
        );
    }
    // A field whose length runs past the end of the message.
    let mut truncated = raw_request(b"d", b"k", b"a");
    truncated[1] = 100;
    let status = send_raw(&h, truncated).await.expect_err("truncated");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // A wire type that does not exist (7).
    let status = send_raw(&h, vec![0x0f, 0x00])
        .await
        .expect_err("bad wire type");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    h.shutdown().await;
}

/// Rules with a limit of `u32::MAX` (the largest a config accepts) for each
/// algorithm.
const HUGE: &str = "domain: d
descriptors:
  - key: fixed
    rate_limit: {unit: minute, requests_per_unit: 4294967295}
  - key: sliding
    rate_limit: {algorithm: sliding_window, unit: minute, requests_per_unit: 4294967295}
  - key: bucket
    rate_limit: {algorithm: token_bucket, unit: minute, requests_per_unit: 4294967295}
  - key: small_bucket
    rate_limit: {algorithm: token_bucket, unit: minute, requests_per_unit: 1}
";

fn with_hits(key: &str, hits: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        hits_addend: hits,
        ..descriptor(&[(key, "x")])
    }
}

async fn ask(h: &mut TestServer, descriptor: RateLimitDescriptor, hits: u32) -> (Code, u32) {
    let response = h
        .send(RateLimitRequest {
            domain: "d".into(),
            descriptors: vec![descriptor],
            hits_addend: hits,
        })
        .await;
    let status = &response.statuses[0];
    let code = Code::try_from(status.code).unwrap_or(Code::Unknown);
    assert_eq!(response.overall_code, status.code);
    if let Some(limit) = &status.current_limit {
        assert!(
            status.limit_remaining <= limit.requests_per_unit,
            "{status:?}"
        );
    }
    (code, status.limit_remaining)
}

#[tokio::test]
async fn hits_at_the_integer_edges_saturate_for_every_algorithm() {
    let mut h = TestServer::serve_at(rules(HUGE), ServiceOptions::default(), START).await;
    for key in ["fixed", "sliding", "bucket"] {
        // u32::MAX hits fill a limit of u32::MAX exactly.
        assert_eq!(
            ask(&mut h, with_hits(key, None), u32::MAX).await,
            (Code::Ok, 0),
            "{key}"
        );
        // One more is over, and u64::MAX more is over, without wrapping a
        // counter back under the limit.
        assert_eq!(
            ask(&mut h, with_hits(key, None), 1).await,
            (Code::OverLimit, 0),
            "{key}"
        );
        let over = ask(&mut h, with_hits(key, Some(u64::MAX)), 0).await;
        assert_eq!(over, (Code::OverLimit, 0), "{key}");
        assert_eq!(
            ask(&mut h, with_hits(key, None), 1).await,
            (Code::OverLimit, 0),
            "{key}"
        );
    }
    // A fresh key: u64::MAX hits at once are over, never admitted.
    for key in ["fixed", "sliding", "bucket", "small_bucket"] {
        let mut d = with_hits(key, Some(u64::MAX));
        d.entries[0].value = "fresh".into();
        assert_eq!(
            ask(&mut h, d.clone(), 0).await,
            (Code::OverLimit, 0),
            "{key}"
        );
        assert_eq!(ask(&mut h, d, 0).await, (Code::OverLimit, 0), "{key}");
        // The key still admits a normal request afterwards (fixed windows
        // count denied hits as the reference does, so only after the window).
        let normal = |value: &str| {
            let mut d = with_hits(key, None);
            d.entries[0].value = value.into();
            d
        };
        let (code, _) = ask(&mut h, normal("fresh"), 0).await;
        if key != "fixed" {
            assert_eq!(code, Code::Ok, "{key}");
        }
    }
    // Two windows later everything admits again: nothing is locked out.
    h.advance_secs(120);
    for key in ["fixed", "sliding", "bucket", "small_bucket"] {
        for value in ["x", "fresh"] {
            let mut d = with_hits(key, None);
            d.entries[0].value = value.into();
            assert_eq!(ask(&mut h, d, 0).await.0, Code::Ok, "{key} {value}");
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn overrides_at_the_integer_edges_saturate() {
    let mut h = TestServer::serve_at(rules(HUGE), ServiceOptions::default(), START).await;
    let override_of = |hits| RateLimitDescriptor {
        limit: Some(RateLimitOverride {
            requests_per_unit: u32::MAX,
            unit: 2, // MINUTE
        }),
        ..with_hits("anything", hits)
    };
    assert_eq!(
        ask(&mut h, override_of(None), u32::MAX).await,
        (Code::Ok, 0)
    );
    assert_eq!(
        ask(&mut h, override_of(Some(u64::MAX)), 0).await,
        (Code::OverLimit, 0)
    );
    assert_eq!(
        ask(&mut h, override_of(Some(u64::MAX)), 0).await,
        (Code::OverLimit, 0)
    );
    assert_eq!(
        ask(&mut h, override_of(None), 1).await,
        (Code::OverLimit, 0)
    );
    // Checking without counting (a descriptor's hits_addend of 0).
    assert_eq!(ask(&mut h, override_of(Some(0)), 0).await.1, 0);
    h.advance_secs(60);
    let (code, remaining) = ask(&mut h, override_of(None), 1).await;
    assert_eq!((code, remaining), (Code::Ok, u32::MAX - 1));
    // A limit override of 0 requests: everything is over, nothing panics.
    let zero = RateLimitDescriptor {
        limit: Some(RateLimitOverride {
            requests_per_unit: 0,
            unit: 1,
        }),
        ..with_hits("zero", Some(u64::MAX))
    };
    assert_eq!(ask(&mut h, zero, u32::MAX).await, (Code::OverLimit, 0));
    h.shutdown().await;
}
