//! The user worker: accounts, credentials, sessions and JWT issuing, served over NATS.
//!
//! `domain/` holds the rules (pure), `store/` the SQL, `handlers/` one function per RPC
//! operation, and `run` wires them to the service host.

mod config;
mod domain;
mod handlers;
mod hashing;
pub mod keys;
pub mod login_failures;
mod store;
mod tokens;

use std::future::Future;

use mesh_nats::{Bus, ServiceHost};
use sqlx::PgPool;

pub use config::{LoginThrottle, UserConfig};
pub use store::migrate;

/// What the user role needs from the outside world.
#[derive(Clone)]
pub struct UserDeps {
    pub bus: Bus,
    pub pool: PgPool,
}

/// Runs the user service until `shutdown` resolves. Migrations must have run.
pub async fn run(
    deps: UserDeps,
    config: UserConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let state = handlers::State::new(deps, config).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let failures = state.login_failures().clone();
    let follower = tokio::spawn(async move { failures.follow(stopped).await });
    let host = ServiceHost::new(
        state.bus().clone(),
        mesh_contracts::Service::User,
        "accounts, sessions and tokens",
    );
    let host = handlers::register(host, state);
    let served = host.run(shutdown).await.map_err(anyhow::Error::msg);
    let _ = stop.send(true);
    let _ = follower.await;
    served
}
