//! The backlog a partition's owner reports to the edges: messages of the partition accepted
//! but not stored yet, as last seen from its feed (those still in the stream after the newest
//! delivery, plus the batch in hand). Reported every `BACKLOG_REPORT_EVERY` by a task of its
//! own, so a batch stuck retrying keeps the edges holding back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_contracts::chat::{BACKLOG_REPORT_EVERY, ChatBacklog};
use mesh_nats::Delivery;
use mesh_service_kit::pause;
use tokio_util::sync::CancellationToken;

use crate::state::State;
use crate::store::partitions::Fence;

/// The owner's latest count, shared with its reporting task.
#[derive(Clone, Default)]
pub struct Backlog(Arc<AtomicU64>);

impl Backlog {
    /// A batch arrived: it and everything still waiting after it are unstored.
    pub fn taking(&self, batch: &[Delivery]) {
        if let Some(last) = batch.last() {
            self.0
                .store(last.pending + batch.len() as u64, Ordering::Relaxed);
        }
    }

    /// The batch is stored and acknowledged: what was waiting after its last message
    /// (`pending`) remains.
    pub fn done(&self, pending: u64) {
        self.0.store(pending, Ordering::Relaxed);
    }

    /// Reports the count for `fence` until `stop`.
    pub async fn report_until(self, state: State, fence: Fence, stop: CancellationToken) {
        loop {
            let report = ChatBacklog {
                epoch: fence.epoch,
                unstored: self.0.load(Ordering::Relaxed),
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
