//! The audit log: records published by edges, batch-written into `audit.records` by the
//! writer, queried by admins through `list_audit`.
//!
//! `query` and `access` are pure (the parsed query, who may read), `store` the SQL, `writer`
//! the stream consumer, `retention` the deletion of old records, `handlers` the RPC operation.

mod access;
mod handlers;
mod query;
mod retention;
mod store;
mod writer;

use std::time::Duration;

use mesh_contracts::audit::ListAudit;
use mesh_nats::{Bus, RpcClient, ServiceHost};
use sqlx::PgPool;

pub use access::caller_must_hold;
pub use retention::{prune, run_pruner};
pub use writer::run_writer;

/// What the audit handlers use; cheap to clone.
#[derive(Clone)]
pub struct State {
    pool: PgPool,
    /// Calls to the user service (who the caller is now).
    rpc: RpcClient,
}

impl State {
    pub fn new(bus: Bus, pool: PgPool, rpc_timeout: Duration) -> Self {
        Self {
            pool,
            rpc: bus.rpc_client(rpc_timeout),
        }
    }
}

/// Wires the audit operations to the service host.
pub fn register(host: ServiceHost, state: State) -> ServiceHost {
    mesh_nats::operations!(host, state;
        ListAudit => handlers::list,
    )
}
