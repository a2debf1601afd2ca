//! Graceful shutdown with a deadline.
//!
//! [`Running::shutdown`] waits for in-flight requests however long they
//! take; [`Running::shutdown_within`] gives them a grace period and then
//! stops the transports anyway, so a stuck client cannot keep a terminating
//! pod alive until the orchestrator kills it.

use std::time::Duration;

use super::Running;

/// Why a shutdown was not clean.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// A transport failed while draining.
    #[error("{0}")]
    Server(String),
    /// In-flight requests were still running when the grace period ended;
    /// the transports were stopped and those requests cut off.
    #[error("in-flight requests did not finish within the {0:?} grace period; they were cut off")]
    GraceExpired(Duration),
}

impl Running {
    /// Stops accepting connections and reports not-serving (gRPC health and
    /// `/healthcheck`), then lets in-flight requests finish for at most
    /// `grace`. After that the transports are aborted and
    /// [`ShutdownError::GraceExpired`] is returned.
    pub async fn shutdown_within(self, grace: Duration) -> Result<(), ShutdownError> {
        self.health.set_shutting_down();
        let _ = self.shutdown.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(|task| task.abort_handle()).collect();
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ShutdownError::Server(e)),
            Err(_elapsed) => {
                for abort in aborts {
                    abort.abort();
                }
                Err(ShutdownError::GraceExpired(grace))
            }
        }
    }
}
