//! `grpc.health.v1.Health` whose `Watch` streams end at shutdown.
//!
//! tonic-health's `Watch` streams last as long as the client keeps them
//! open, and client-side gRPC health checking and several load balancers
//! keep one open for good: graceful shutdown would then wait the whole
//! grace period for a call that never ends. This wrapper answers `Check`
//! as tonic-health does and ends every `Watch` stream once shutdown has
//! begun, after a last `NOT_SERVING` if the stream had not sent one yet.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

/// The health service of `reporter`, whose `Watch` streams end when
/// `ended` turns true.
pub(super) fn service(
    reporter: HealthReporter,
    ended: watch::Receiver<bool>,
) -> HealthServer<EndingHealth> {
    HealthServer::new(EndingHealth {
        inner: HealthService::from_health_reporter(reporter),
        ended,
    })
}

/// See the module doc.
pub(super) struct EndingHealth {
    inner: HealthService,
    ended: watch::Receiver<bool>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for EndingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let updates = self.inner.watch(request).await?.into_inner();
        let mut ended = self.ended.clone();
        let not_serving = ServingStatus::NotServing as i32;
        let last = Arc::new(AtomicI32::new(-1));
        let seen = Arc::clone(&last);
        let updates = updates
            .take_until(async move {
                let _ = ended.wait_for(|ended| *ended).await;
            })
            .inspect(move |item| {
                if let Ok(response) = item {
                    seen.store(response.status, Ordering::Relaxed);
                }
            });
        // The watcher learns the server is going away before its stream
        // ends, even when shutdown overtook the last status change.
        let farewell = futures_util::stream::once(async move {
            (last.load(Ordering::Relaxed) != not_serving).then_some(Ok(HealthCheckResponse {
                status: not_serving,
            }))
        })
        .filter_map(std::future::ready);
        Ok(Response::new(Box::pin(updates.chain(farewell))))
    }
}
