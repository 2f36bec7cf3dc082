//! The backlog a partition's owner reports to the edges: messages of the partition accepted
//! but not stored yet, as last seen from its feed (those still in the stream after the newest
//! delivery, plus the batches in hand). Reported every `BACKLOG_REPORT_EVERY` by a task of its
//! own, so a batch stuck retrying keeps the edges holding back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_contracts::chat::{BACKLOG_REPORT_EVERY, ChatBacklog};
use mesh_nats::Delivery;
use mesh_service_kit::pause;
use tokio_util::sync::CancellationToken;

use crate::state::State;
use crate::store::partitions::Fence;

/// The owner's latest counts, shared with its reporting task.
#[derive(Clone, Default)]
pub struct Backlog(Arc<Counts>);

#[derive(Default)]
struct Counts {
    /// Still in the stream after the newest message taken.
    waiting: AtomicU64,
    /// Taken in batches that are not stored yet.
    in_hand: AtomicU64,
}

impl Backlog {
    /// A batch arrived: it and everything still waiting after it are unstored.
    pub fn taking(&self, batch: &[Delivery]) {
        if let Some(last) = batch.last() {
            self.took(batch.len(), last.pending);
        }
    }

    /// `size` messages taken, `waiting` left in the stream after them.
    fn took(&self, size: usize, waiting: u64) {
        self.0.waiting.store(waiting, Ordering::Relaxed);
        self.0.in_hand.fetch_add(size as u64, Ordering::Relaxed);
    }

    /// A batch of `size` messages is stored and acknowledged.
    pub fn done(&self, size: usize) {
        let _ = self
            .0
            .in_hand
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(size as u64))
            });
    }

    /// Accepted but not stored, as far as the owner knows.
    fn unstored(&self) -> u64 {
        self.0.waiting.load(Ordering::Relaxed) + self.0.in_hand.load(Ordering::Relaxed)
    }

    /// Reports the count for `fence` until `stop`.
    pub async fn report_until(self, state: State, fence: Fence, stop: CancellationToken) {
        loop {
            let report = ChatBacklog {
                epoch: fence.epoch,
                unstored: self.unstored(),
            };
            state
                .bus()
                .report_chat_backlog(fence.partition, report)
                .await;
            if pause(&stop, BACKLOG_REPORT_EVERY).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_batches_in_hand_count_until_each_is_stored() {
        let backlog = Backlog::default();
        backlog.took(10, 30);
        assert_eq!(backlog.unstored(), 40);
        // The next batch is taken while the first is still being stored.
        backlog.took(20, 15);
        assert_eq!(backlog.unstored(), 45);
        backlog.done(10);
        assert_eq!(backlog.unstored(), 35);
        backlog.done(20);
        assert_eq!(backlog.unstored(), 15);
        backlog.done(5);
        assert_eq!(backlog.unstored(), 15, "never below what is waiting");
    }
}
