//! The outbox role: relays every service's outbox rows to the `EVENTS` stream (one active relay
//! per schema, by advisory lock), and keeps the audit log: it batch-writes the audit records
//! edges publish, deletes what is older than its retention, and answers admins' queries of it.

pub mod audit;
mod backlog;
mod config;
pub mod relay;

use std::future::Future;

use mesh_contracts::Service;
use mesh_nats::{Bus, ServiceHost};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use config::OutboxConfig;
pub use relay::Source;

/// What the outbox role needs from the outside world.
#[derive(Clone)]
pub struct OutboxDeps {
    pub bus: Bus,
    /// Each service's outbox to relay.
    pub sources: Vec<Source>,
    /// Where the audit log lives (schema `audit`).
    pub audit_pool: PgPool,
}

/// Creates the `audit` schema and applies pending migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    mesh_service_kit::postgres::migrate(pool, "audit", sqlx::migrate!("./migrations")).await
}

/// Runs the relays, the audit writer and the audit queries until `shutdown` resolves.
pub async fn run(
    deps: OutboxDeps,
    config: OutboxConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let backlog = backlog::State::new(&deps.bus, deps.sources.clone(), config.rpc_timeout);
    for source in deps.sources {
        tasks.push(AbortOnDropHandle::new(tokio::spawn(relay::run(
            deps.bus.clone(),
            source,
            config.clone(),
            stop.clone(),
        ))));
    }
    tasks.push(AbortOnDropHandle::new(tokio::spawn(audit::run_writer(
        deps.bus.clone(),
        deps.audit_pool.clone(),
        stop.clone(),
    ))));
    tasks.push(AbortOnDropHandle::new(tokio::spawn(audit::run_pruner(
        deps.audit_pool.clone(),
        config.audit_retention,
        stop.clone(),
    ))));
    let state = audit::State::new(deps.bus.clone(), deps.audit_pool, config.rpc_timeout);
    let host = ServiceHost::new(deps.bus, Service::Outbox, "event relay and audit log");
    let host = backlog::register(audit::register(host, state), backlog);
    let served = host.run(shutdown).await;
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    served.map_err(anyhow::Error::msg)
}
