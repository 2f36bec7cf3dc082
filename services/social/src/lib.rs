//! The social worker: friend requests, friends, blocks, groups, membership and join
//! requests, served over NATS.
//!
//! `domain/` holds the rules (pure), `store/` the SQL, `handlers/` one function per RPC
//! operation, `cache` the hot reads, and `run` wires them to the service host. Users are
//! checked against the user service over NATS; the `users` schema is never read.

mod cache;
mod config;
mod domain;
mod handlers;
mod invalidation;
mod store;

use std::future::Future;

use mesh_nats::{Bus, ServiceHost};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use config::SocialConfig;
pub use store::migrate;

/// What the social role needs from the outside world.
#[derive(Clone)]
pub struct SocialDeps {
    pub bus: Bus,
    pub pool: PgPool,
}

/// Runs the social service until `shutdown` resolves. Migrations must have run.
pub async fn run(
    deps: SocialDeps,
    config: SocialConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let state = handlers::State::new(deps, config);
    let stop = CancellationToken::new();
    let invalidating =
        AbortOnDropHandle::new(tokio::spawn(invalidation::run(state.clone(), stop.clone())));
    let host = ServiceHost::new(
        state.bus().clone(),
        mesh_contracts::Service::Social,
        "friends, blocks and groups",
    );
    let host = handlers::register(host, state);
    let served = host.run(shutdown).await;
    stop.cancel();
    let _ = invalidating.await;
    served.map_err(anyhow::Error::msg)
}
