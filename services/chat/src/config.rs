//! Settings of the chat service, built by `main` from flags and env or directly by tests.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Ingest partitions; must match the edges'.
    pub partitions: u32,
    /// Most messages stored in one transaction.
    pub batch_size: usize,
    /// Partitions of this worker that take a batch through its steps at once. The others'
    /// messages wait and join their next batch, so a busy worker runs fewer, larger
    /// transactions instead of one small one per partition contending for the CPU.
    pub store_concurrency: usize,
    /// Any two users may message privately, not only friends.
    pub open_private: bool,
    /// How long after sending its sender may recall a message.
    pub recall_window: Duration,
    /// Deadline of calls to the social service.
    pub rpc_timeout: Duration,
    /// How often leases are renewed and partitions rebalanced.
    pub lease_interval: Duration,
}

impl ChatConfig {
    /// Defaults for everything but what deployments set.
    pub fn new(
        partitions: u32,
        open_private: bool,
        recall_window: Duration,
        rpc_timeout: Duration,
    ) -> Self {
        Self {
            partitions,
            batch_size: 256,
            store_concurrency: 4,
            open_private,
            recall_window,
            rpc_timeout,
            lease_interval: Duration::from_secs(1),
        }
    }
}
