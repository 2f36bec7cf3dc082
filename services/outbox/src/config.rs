//! Settings of the outbox role, built by `main` from flags and env or directly by tests.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// How often the relay looks for rows when no notification woke it.
    pub poll_interval: Duration,
    /// How long relayed rows are kept before they are pruned.
    pub retention: Duration,
    /// Most rows relayed per step.
    pub batch: i64,
    /// Deadline of calls to other services (the user service, for admin checks).
    pub rpc_timeout: Duration,
    /// How long audit records are kept (`MESH_AUDIT_RETENTION`).
    pub audit_retention: Duration,
}

impl OutboxConfig {
    pub fn new(rpc_timeout: Duration, audit_retention: Duration) -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            batch: 500,
            rpc_timeout,
            audit_retention,
        }
    }
}
