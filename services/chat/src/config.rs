//! Settings of the chat service, built by `main` from flags and env or directly by tests.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Ingest partitions; must match the edges'.
    pub partitions: u32,
    /// Most messages a partition's owner reads into one batch; a store round gathers up to
    /// four batches' worth from the partitions waiting for it.
    pub batch_size: usize,
    /// Store rounds this worker runs at once. A round takes the batches of every partition
    /// waiting when it starts through the steps together (one authorization, one transaction),
    /// so a busy worker runs fewer, larger transactions instead of one small one per partition
    /// contending for the CPU.
    pub store_concurrency: usize,
    /// Independent chains of store rounds, each for its share of the partitions
    /// (a partition taken joins the chain holding the fewest of this worker's) and with its
    /// share of `store_concurrency`. In one chain every
    /// partition's next batch waits for the round in flight and the one after it, so a
    /// message waits up to two rounds; chains side by side keep each round smaller and let
    /// the CPUs store two at once.
    pub store_chains: usize,
    /// How long a batch waiting for a store round may wait for other partitions' batches when
    /// a turn is free: a trickle of messages is then stored in fewer transactions instead of
    /// one tiny one after another as fast as the CPU allows.
    pub store_linger: Duration,
    /// How often this worker purges from the ingest stream what every partition has stored
    /// (the stream then holds the backlog, not the week of history Postgres already has).
    pub compact_every: Duration,
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
            store_chains: 2,
            store_linger: Duration::from_millis(5),
            compact_every: Duration::from_secs(30),
            open_private,
            recall_window,
            rpc_timeout,
            lease_interval: Duration::from_secs(1),
        }
    }
}
