//! Waiting after a transient failure of a round's step: logs (the first and every 20th time),
//! keeps the round's batches from being redelivered meanwhile, and pauses unless stopping or
//! abandoned by every owner.

use std::time::Duration;

use mesh_nats::Delivery;
use mesh_service_kit::pause;
use tokio_util::sync::CancellationToken;

/// Pause before retrying a step that failed.
pub const RETRY_DELAY: Duration = Duration::from_millis(500);

/// The failures of one round so far, and what waiting needs.
pub struct Setback<'a> {
    stop: &'a CancellationToken,
    /// The stops of the round's batches' owners: once all are cancelled, waiting ends.
    owners: Vec<&'a CancellationToken>,
    /// The last delivery of each partition's batch: kept from redelivery while waiting.
    lasts: Vec<&'a Delivery>,
    failures: u32,
}

impl<'a> Setback<'a> {
    pub fn new(
        stop: &'a CancellationToken,
        owners: Vec<&'a CancellationToken>,
        lasts: Vec<&'a Delivery>,
    ) -> Self {
        Self {
            stop,
            owners,
            lasts,
            failures: 0,
        }
    }

    /// Waits before the next try; false when stopped first, or when every owner of the
    /// round's batches was told to stop (the round is left unacknowledged for the next owners).
    pub async fn wait(&mut self, err: &(dyn std::fmt::Display + Sync)) -> bool {
        self.failures += 1;
        if self.failures == 1 || self.failures.is_multiple_of(20) {
            tracing::warn!(error = %err, failures = self.failures, "batch step failed; retrying");
        }
        for last in &self.lasts {
            last.in_progress().await;
        }
        !pause(self.stop, RETRY_DELAY).await && !self.abandoned()
    }

    /// Every owner of the round's batches was told to stop.
    fn abandoned(&self) -> bool {
        !self.owners.is_empty() && self.owners.iter().all(|owner| owner.is_cancelled())
    }
}
