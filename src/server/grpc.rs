//! The gRPC transport: Envoy's `RateLimitService/ShouldRateLimit`.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::decide::{DecideError, RateLimiter};
use crate::health::Health;
use crate::observe::metrics::{Metrics, Transport};
use crate::proto::{RateLimitRequest, RateLimitResponse, RateLimitService};
use crate::respond::{self, ResponseOptions};
use crate::store::CounterStore;

/// Adapts the [`RateLimiter`] to tonic's generated service trait.
pub struct GrpcService<S> {
    limiter: Arc<RateLimiter<S>>,
    response: ResponseOptions,
    metrics: Option<Arc<Metrics>>,
    health: Option<Health>,
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
        }
    }

    /// Answers [`NO_CONFIG`] until `health` says rules have loaded.
    pub fn with_health(mut self, health: Health) -> GrpcService<S> {
        self.health = Some(health);
        self
    }

    /// Records every request in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> GrpcService<S> {
        self.metrics = Some(metrics);
        self
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
        let request = request.into_inner();
        let started = Instant::now();
        let result = self.limiter.decide(&request).await;
        if let Some(metrics) = &self.metrics {
            metrics.observe(Transport::Grpc, &request, &result, started.elapsed());
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
