//! OpenTelemetry traces, received by an OTLP/HTTP collector of the test's
//! own: a gRPC call carrying a W3C `traceparent` gives a server span in
//! that trace, the caller's span its parent, the service named as asked,
//! and a child span for the counter store's call. Spans are batched; the
//! server's shutdown exports what is left, so the test waits on no clock.

use crate::harness;

use std::sync::Arc;

use axum::body::Bytes;
use axum::routing::post;
use floodgate::clock::SystemClock;
use floodgate::config::{self, LoadOptions};
use floodgate::decide::{RateLimiter, ServiceOptions};
use floodgate::observe::traces::{
    Protocol, REQUEST_SPAN, STORE_SPAN, TracedStore, Traces, TracingOptions,
};
use floodgate::proto::RateLimitServiceClient;
use floodgate::server::{self, Listeners, ServerOptions};
use floodgate::store::memory::MemoryStore;
use harness::ops::{any_port, one_rule};
use harness::request_one;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::mpsc;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN_ID: &str = "b7ad6b7169203331";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn text_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            Some(Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

/// An OTLP/HTTP collector: every export request it receives, decoded.
pub async fn collector() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let router = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sender = sender.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export");
                let _ = sender.send(request);
                ExportTraceServiceResponse::default().encode_to_vec()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, receiver)
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_continue_the_callers_trace_and_reach_an_otlp_collector() {
    let (collector, mut exports) = collector().await;
    let traces = Arc::new(
        Traces::new(&TracingOptions {
            service_name: "floodgate-test".to_owned(),
            service_namespace: "ns".to_owned(),
            service_instance_id: String::new(),
            sampling_rate: 1.0,
            protocol: Protocol::Http,
            endpoint: Some(format!("http://{collector}/v1/traces")),
        })
        .expect("a trace pipeline"),
    );
    let rules = config::load_sources(
        &[("t.yaml".into(), one_rule("t", "k", "v", 100))],
        &LoadOptions::default(),
    )
    .expect("valid rules");
    let limiter = Arc::new(RateLimiter::new(
        rules,
        TracedStore::new(MemoryStore::new(100), Some(traces.tracer())),
        Arc::new(SystemClock),
        ServiceOptions::default(),
    ));
    let listeners = Listeners {
        grpc: any_port(),
        http: any_port(),
    };
    let options = ServerOptions {
        traces: Some(Arc::clone(&traces)),
        ..ServerOptions::default()
    };
    let running = server::start_with(limiter, &listeners, options)
        .await
        .expect("start the server");
    let mut client = RateLimitServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(request_one("t", &[("k", "v")]));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .expect("a metadata value"),
    );
    let answer = client.should_rate_limit(request).await.expect("a decision");
    assert_eq!(answer.into_inner().overall_code, 1);
    drop(client);
    // Shutting down exports the batch.
    running.shutdown().await.expect("clean shutdown");

    let mut spans: Vec<Span> = Vec::new();
    let mut service_names = Vec::new();
    while let Ok(export) = exports.try_recv() {
        for resource_spans in export.resource_spans {
            let attributes = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            service_names.push(text_attribute(&attributes, "service.name"));
            assert_eq!(
                text_attribute(&attributes, "service.namespace").as_deref(),
                Some("ns")
            );
            assert!(text_attribute(&attributes, "service.instance.id").is_some());
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    assert!(!service_names.is_empty(), "the collector received nothing");
    assert!(
        service_names
            .iter()
            .all(|name| name.as_deref() == Some("floodgate-test")),
        "{service_names:?}"
    );
    let request_span = spans
        .iter()
        .find(|span| span.name == REQUEST_SPAN)
        .unwrap_or_else(|| panic!("no request span in {spans:?}"));
    assert_eq!(hex(&request_span.trace_id), TRACE_ID);
    assert_eq!(hex(&request_span.parent_span_id), PARENT_SPAN_ID);
    let attribute = |key: &str| text_attribute(&request_span.attributes, key);
    assert_eq!(attribute("ratelimit.domain").as_deref(), Some("t"));
    assert_eq!(attribute("ratelimit.descriptors").as_deref(), Some("1"));
    assert_eq!(attribute("ratelimit.code").as_deref(), Some("OK"));
    let store_span = spans
        .iter()
        .find(|span| span.name == STORE_SPAN)
        .unwrap_or_else(|| panic!("no store span in {spans:?}"));
    assert_eq!(hex(&store_span.trace_id), TRACE_ID);
    assert_eq!(store_span.parent_span_id, request_span.span_id);
}
