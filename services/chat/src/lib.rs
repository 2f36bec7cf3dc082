//! The chat worker: owns ingest partitions through leases, stores accepted messages with
//! gap-free per-conversation seqs, pushes them to members, and serves history, read state,
//! conversation settings, typing and presence over NATS.
//!
//! `domain/` holds the rules (pure), `store/` the SQL, `ingest/` the partition owners,
//! `events/` the consumers of social's events (projection, notifications), `membership` who
//! may post (projection first, then social), `push` the fan-out, and `handlers/` one
//! function per RPC operation.

mod config;
mod domain;
mod events;
mod handlers;
mod ingest;
mod last_seen;
mod lately;
mod membership;
mod push;
mod rosters;
mod state;
mod store;

use std::future::Future;

use mesh_nats::{Bus, ServiceHost};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use config::ChatConfig;
pub use ingest::most_frames_per_round;
pub use store::migrate;

/// What the chat role needs from the outside world.
#[derive(Clone)]
pub struct ChatDeps {
    pub bus: Bus,
    pub pool: PgPool,
}

/// Runs the chat service until `shutdown` resolves. Migrations must have run.
pub async fn run(
    deps: ChatDeps,
    config: ChatConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let state = state::State::new(deps, config).await?;
    let stop = CancellationToken::new();
    // Dropping this future (a killed process, in tests) also drops the partition owners.
    let owner = AbortOnDropHandle::new(tokio::spawn(ingest::run(state.clone(), stop.clone())));
    let consumers = AbortOnDropHandle::new(tokio::spawn(events::run(state.clone(), stop.clone())));
    let host = ServiceHost::new(
        state.bus().clone(),
        mesh_contracts::Service::Chat,
        "conversations, messages, read state and presence",
    );
    let host = handlers::register(host, state);
    let served = host.run(shutdown).await;
    stop.cancel();
    for (task, name) in [(owner, "partition owner"), (consumers, "event consumers")] {
        if let Err(err) = task.await {
            tracing::error!(error = %err, task = name, "chat task failed");
        }
    }
    served.map_err(anyhow::Error::msg)
}
