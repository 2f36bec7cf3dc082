//! Waiting after a transient failure of a round's step: logs (the first and every 20th time),
//! keeps the round's batches from being redelivered meanwhile, and pauses; it stops waiting
//! when the worker shuts down or when owners of the round's batches were told to stop (a
//! partition handed over must not wait for a failing round), and says which.

use std::time::Duration;

use mesh_nats::Delivery;
use mesh_service_kit::pause;
use tokio_util::sync::CancellationToken;

use crate::store::partitions::Fence;

/// Pause before retrying a step that failed.
pub const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Why a round stopped retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// The worker shuts down: the whole round is left for the next owners.
    Shutdown,
    /// The owners of these partitions were told to stop: their batches leave the round.
    Released(Vec<Fence>),
}

/// The failures of one round so far, and what waiting needs.
pub struct Setback<'a> {
    stop: &'a CancellationToken,
    /// Each batch's partition and its owner's stop.
    owners: Vec<(Fence, &'a CancellationToken)>,
    /// The last delivery of each partition's batch: kept from redelivery while waiting.
    lasts: Vec<&'a Delivery>,
    failures: u32,
    halt: Option<Halt>,
}

impl<'a> Setback<'a> {
    pub fn new(
        stop: &'a CancellationToken,
        owners: Vec<(Fence, &'a CancellationToken)>,
        lasts: Vec<&'a Delivery>,
    ) -> Self {
        Self {
            stop,
            owners,
            lasts,
            failures: 0,
            halt: None,
        }
    }

    /// Waits before the next try; false when it must not be retried (`halt` says why): the
    /// batches it leaves are left unacknowledged for the next owners.
    pub async fn wait(&mut self, err: &(dyn std::fmt::Display + Sync)) -> bool {
        self.failures += 1;
        if self.failures == 1 || self.failures.is_multiple_of(20) {
            tracing::warn!(error = %err, failures = self.failures, "batch step failed; retrying");
        }
        for last in &self.lasts {
            last.in_progress().await;
        }
        let shutdown = pause(self.stop, RETRY_DELAY).await;
        self.halt = halt(shutdown, &self.owners);
        self.halt.is_none()
    }

    /// Why the last `wait` answered false; `Shutdown` when it was not asked.
    pub fn halt(&self) -> Halt {
        self.halt.clone().unwrap_or(Halt::Shutdown)
    }
}

/// Whether waiting ends: on shutdown, or for the batches whose owners were told to stop.
fn halt(shutdown: bool, owners: &[(Fence, &CancellationToken)]) -> Option<Halt> {
    if shutdown {
        return Some(Halt::Shutdown);
    }
    let released: Vec<Fence> = owners
        .iter()
        .filter(|(_, stop)| stop.is_cancelled())
        .map(|(fence, _)| *fence)
        .collect();
    (!released.is_empty()).then_some(Halt::Released(released))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_ends_on_shutdown_or_for_the_owners_told_to_stop() {
        let (kept, gone) = (CancellationToken::new(), CancellationToken::new());
        let at = time::OffsetDateTime::UNIX_EPOCH;
        let fence = |partition| Fence {
            partition,
            epoch: 7,
            incarnation: crate::domain::incarnation::Incarnation {
                stream: at,
                leases: at,
            },
        };
        let owners = [(fence(1), &kept), (fence(2), &gone)];
        assert_eq!(halt(false, &owners), None);
        gone.cancel();
        assert_eq!(halt(false, &owners), Some(Halt::Released(vec![fence(2)])));
        assert_eq!(halt(true, &owners), Some(Halt::Shutdown));
    }
}
