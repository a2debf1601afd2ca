//! OpenTelemetry traces, configured as the reference configures them
//! (`TRACING_*`, and the exporter's standard `OTEL_EXPORTER_OTLP_*`
//! variables, which `opentelemetry-otlp` reads itself).
//!
//! Each gRPC `ShouldRateLimit` gets a server span named after the method
//! (as the reference's gRPC instrumentation names it), continuing the
//! caller's W3C `traceparent` and sampled parent-based with
//! `TRACING_SAMPLING_RATE` for callers that did not decide. It carries the
//! domain, the number of descriptors and the overall code. The counter
//! store's call is its child span ([`TracedStore`]). Finished spans are
//! batched and exported by a task on the runtime, off the request path.
//!
//! With tracing off, the transport holds no [`Traces`] and the store's
//! tracer is `None`: a request pays one branch in each, nothing else.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SdkTracer, SdkTracerProvider,
};

use crate::limit::Nanos;
use crate::store::{Check, CounterStore, Outcomes, StoreError};

/// The request span's name: the gRPC method, as the reference's gRPC
/// instrumentation names its server span.
pub const REQUEST_SPAN: &str = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// The store call's span.
pub const STORE_SPAN: &str = "counter store";

/// How spans are exported (`TRACING_EXPORTER_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (the reference's default).
    Http,
    /// OTLP/gRPC.
    Grpc,
}

impl Protocol {
    /// The reference's values: `http` (or empty) and `grpc`.
    pub fn parse(text: &str) -> Result<Protocol, String> {
        match text {
            "http" | "" => Ok(Protocol::Http),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(format!(
                "TRACING_EXPORTER_PROTOCOL={other}: expected http or grpc"
            )),
        }
    }
}

/// What the spans say about the service, and how they are sent.
#[derive(Clone, Debug)]
pub struct TracingOptions {
    /// `service.name` (`TRACING_SERVICE_NAME`).
    pub service_name: String,
    /// `service.namespace` (`TRACING_SERVICE_NAMESPACE`).
    pub service_namespace: String,
    /// `service.instance.id` (`TRACING_SERVICE_INSTANCE_ID`; a random UUID
    /// when empty, as in the reference).
    pub service_instance_id: String,
    /// Share of the traces this service starts that are sampled.
    pub sampling_rate: f64,
    /// OTLP over HTTP or gRPC.
    pub protocol: Protocol,
    /// The collector's URL; `None`: from `OTEL_EXPORTER_OTLP_*` (or the
    /// exporter's default, `http://localhost:4318/v1/traces` for HTTP).
    pub endpoint: Option<String>,
}

/// The trace pipeline: a provider that batches and exports, its tracer and
/// the W3C trace-context propagator.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

/// The code a finished request span reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanCode {
    /// Answered OK.
    Ok,
    /// Answered OVER_LIMIT.
    OverLimit,
    /// Not answered (invalid request, store error under `error`).
    Error,
}

impl Traces {
    /// Builds the pipeline; must be called on the tokio runtime that will
    /// export (the batch task is spawned on it).
    pub fn new(options: &TracingOptions) -> Result<Traces, String> {
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let exporter = match (options.protocol, &options.endpoint) {
            (Protocol::Http, None) => builder.with_http().build(),
            (Protocol::Http, Some(url)) => builder.with_http().with_endpoint(url).build(),
            (Protocol::Grpc, None) => builder.with_tonic().build(),
            (Protocol::Grpc, Some(url)) => builder.with_tonic().with_endpoint(url).build(),
        }
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
        let instance = if options.service_instance_id.is_empty() {
            random_uuid()
        } else {
            options.service_instance_id.clone()
        };
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", options.service_name.clone()),
                KeyValue::new("service.namespace", options.service_namespace.clone()),
                KeyValue::new("service.instance.id", instance),
            ])
            .build();
        let rate = if options.sampling_rate.is_finite() {
            options.sampling_rate
        } else {
            1.0
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter, Tokio).build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                rate,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("floodgate");
        Ok(Traces {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// The tracer, for [`TracedStore`].
    pub fn tracer(&self) -> SdkTracer {
        self.tracer.clone()
    }

    /// Starts a request's span, the child of the trace context `headers`
    /// carry (`traceparent`), and returns the context holding it.
    pub fn start_request(&self, headers: &dyn Extractor) -> Context {
        let parent = self.propagator.extract(headers);
        let span = self
            .tracer
            .span_builder(REQUEST_SPAN)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", "envoy.service.ratelimit.v3.RateLimitService"),
                KeyValue::new("rpc.method", "ShouldRateLimit"),
            ])
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// Ends the request span of `cx` with what was decided.
    pub fn finish_request(cx: &Context, domain: &str, descriptors: usize, code: SpanCode) {
        let span = cx.span();
        span.set_attribute(KeyValue::new("ratelimit.domain", domain.to_owned()));
        span.set_attribute(KeyValue::new(
            "ratelimit.descriptors",
            i64::try_from(descriptors).unwrap_or(i64::MAX),
        ));
        let code = match code {
            SpanCode::Ok => "OK",
            SpanCode::OverLimit => "OVER_LIMIT",
            SpanCode::Error => {
                span.set_status(Status::error("the request was not decided"));
                "ERROR"
            }
        };
        span.set_attribute(KeyValue::new("ratelimit.code", code));
        span.end();
    }

    /// Exports what is still batched and stops the exporter. Blocks: call
    /// it off the runtime's worker threads (`spawn_blocking`).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces: shutdown did not export everything");
        }
    }
}

/// A random UUID (version 4) for `service.instance.id`.
fn random_uuid() -> String {
    let mut bytes = RandomIdGenerator::default().new_trace_id().to_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A counter store whose calls are child spans of the request's span (the
/// OpenTelemetry context the decision runs in), when tracing is on.
#[derive(Debug)]
pub struct TracedStore<S> {
    inner: S,
    tracer: Option<SdkTracer>,
}

impl<S> TracedStore<S> {
    /// `inner`, traced with `tracer` (`None`: not traced).
    pub fn new(inner: S, tracer: Option<SdkTracer>) -> TracedStore<S> {
        TracedStore { inner, tracer }
    }

    /// The store itself.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: CounterStore> CounterStore for TracedStore<S> {
    async fn apply<'a>(
        &'a self,
        checks: &'a [Check<'a>],
        now: Nanos,
        out: &'a mut Outcomes,
    ) -> Result<(), StoreError> {
        let Some(tracer) = &self.tracer else {
            return self.inner.apply(checks, now, out).await;
        };
        let parent = Context::current();
        if !parent.has_active_span() {
            return self.inner.apply(checks, now, out).await;
        }
        let mut span = tracer
            .span_builder(STORE_SPAN)
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new(
                "store.checks",
                i64::try_from(checks.len()).unwrap_or(i64::MAX),
            )])
            .start_with_context(tracer, &parent);
        let result = self.inner.apply(checks, now, out).await;
        if let Err(error) = &result {
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
        result
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn held(&self) -> Option<u64> {
        self.inner.held()
    }

    fn evictions(&self) -> u64 {
        self.inner.evictions()
    }
}
