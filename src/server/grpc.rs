//! The gRPC transport: Envoy's `RateLimitService/ShouldRateLimit`.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::Extractor;
use tonic::metadata::{KeyRef, MetadataMap};
use tonic::{Request, Response, Status};

use crate::decide::{DecideError, RateLimiter};
use crate::health::Health;
use crate::observe::metrics::{Metrics, Transport};
use crate::observe::traces::{SpanCode, Traces};
use crate::proto::{RateLimitRequest, RateLimitResponse, RateLimitService};
use crate::respond::{self, ResponseOptions};
use crate::store::CounterStore;

/// Adapts the [`RateLimiter`] to tonic's generated service trait.
pub struct GrpcService<S> {
    limiter: Arc<RateLimiter<S>>,
    response: ResponseOptions,
    metrics: Option<Arc<Metrics>>,
    health: Option<Health>,
    traces: Option<Arc<Traces>>,
}

/// What the reference answers (gRPC UNKNOWN) while no config has ever
/// loaded: Envoy's `failure_mode_deny` then decides, as it would for the
/// reference.
pub(crate) const NO_CONFIG: &str = "no rate limit configuration loaded";

impl<S> GrpcService<S> {
    /// Serves decisions from `limiter`, answers carrying what `response`
    /// asks for besides statuses.
    pub fn new(limiter: Arc<RateLimiter<S>>, response: ResponseOptions) -> GrpcService<S> {
        GrpcService {
            limiter,
            response,
            metrics: None,
            health: None,
            traces: None,
        }
    }

    /// Answers `UNKNOWN` ("no rate limit configuration loaded", as the reference does) until `health` says rules have loaded.
    pub fn with_health(mut self, health: Health) -> GrpcService<S> {
        self.health = Some(health);
        self
    }

    /// Records every request in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> GrpcService<S> {
        self.metrics = Some(metrics);
        self
    }

    /// Traces every request with `traces`.
    pub fn with_traces(mut self, traces: Option<Arc<Traces>>) -> GrpcService<S> {
        self.traces = traces;
        self
    }
}

/// A request's gRPC metadata, read by the trace-context propagator.
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The gRPC status for a request that could not be decided.
pub fn status_of(error: &DecideError) -> Status {
    match error {
        DecideError::InvalidRequest(message) => Status::invalid_argument(message.clone()),
        DecideError::Store(e) => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl<S: CounterStore> RateLimitService for GrpcService<S> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        if let Some(health) = &self.health
            && !health.rules_loaded()
        {
            return Err(Status::unknown(NO_CONFIG));
        }
        let span = self
            .traces
            .as_ref()
            .map(|traces| traces.start_request(&MetadataExtractor(request.metadata())));
        let request = request.into_inner();
        let started = Instant::now();
        let result = match &span {
            None => self.limiter.decide(&request).await,
            // The store's span finds its parent in this context.
            Some(cx) => self.limiter.decide(&request).with_context(cx.clone()).await,
        };
        if let Some(metrics) = &self.metrics {
            metrics.observe(Transport::Grpc, &request, &result, started.elapsed());
        }
        if let Some(cx) = &span {
            let code = match &result {
                Ok(decision) if decision.over_limit => SpanCode::OverLimit,
                Ok(_) => SpanCode::Ok,
                Err(_) => SpanCode::Error,
            };
            Traces::finish_request(cx, &request.domain, request.descriptors.len(), code);
        }
        match result {
            Ok(decision) => Ok(Response::new(respond::to_response(
                &decision,
                &self.response,
            ))),
            Err(error) => Err(status_of(&error)),
        }
    }
}
