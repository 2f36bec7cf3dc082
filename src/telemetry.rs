//! Gauges that nothing updates on its own, sampled on a timer while the roles run: the NATS
//! connection, each service's Postgres pool, the backlog of the EVENTS and AUDIT consumers,
//! and the build info of the process.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_contracts::Stream;
use mesh_nats::Bus;
use mesh_observability::Readiness;
use mesh_observability::metrics::{
    BUILD_INFO, CONSUMER_PENDING, DB_POOL_CONNECTIONS, DB_POOL_MAX, NATS_CONNECTED,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Role;

/// How often sampled gauges are refreshed (well under a scrape interval).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The commit the binary was built from (`MESH_GIT_COMMIT` at build time, else git's HEAD).
const COMMIT: &str = env!("MESH_GIT_COMMIT");

/// The roles of a process as one label: `edge`, `chat`, ... or `edge+user+social+chat+outbox`.
fn roles_label(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| format!("{r:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join("+")
}

/// The OpenTelemetry `service.name` of a process: `nats-mesh` for every role in one process,
/// `nats-mesh-<role>` for one role, `nats-mesh-migrate` for migrations.
pub fn service_name(roles: &[Role], migrate: bool) -> String {
    match roles {
        _ if migrate => "nats-mesh-migrate".to_owned(),
        [role] => format!("nats-mesh-{}", roles_label(&[*role])),
        _ => "nats-mesh".to_owned(),
    }
}

/// The service label of Postgres statements that run outside any span naming a service: the
/// role of a one-role process, `migrate`, or `mesh` for several roles in one process.
pub fn default_db_service(roles: &[Role], migrate: bool) -> String {
    match roles {
        _ if migrate => "migrate".to_owned(),
        [role] => roles_label(&[*role]),
        _ => "mesh".to_owned(),
    }
}

/// Sets `mesh_build_info` for a process running `roles`.
pub fn record_build_info(roles: &[Role]) {
    BUILD_INFO.reset();
    mesh_observability::metrics::set_build_info(
        env!("CARGO_PKG_VERSION"),
        COMMIT,
        &roles_label(roles),
    );
}

/// Runs `sample` now and then every `SAMPLE_EVERY` until `shutdown`.
fn every<F, Fut>(shutdown: &CancellationToken, mut sample: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => sample().await,
            }
        }
    });
}

/// The sampled gauges of the roles of one process, until shutdown; also tells readiness.
#[derive(Clone)]
pub struct Watch {
    shutdown: CancellationToken,
    buses: Arc<Mutex<Vec<Bus>>>,
}

impl Watch {
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            shutdown: shutdown.clone(),
            buses: Arc::default(),
        }
    }

    /// Keeps `mesh_nats_connected{connection=role}` and, for a role with a database, its pool's
    /// gauges (`pool`) current.
    pub fn role(&self, role: &'static str, bus: &Bus, pool: Option<&PgPool>) {
        self.buses.lock().expect("bus list lock").push(bus.clone());
        let bus = bus.clone();
        every(&self.shutdown, move || {
            NATS_CONNECTED
                .with_label_values(&[role])
                .set(i64::from(bus.is_connected()));
            async {}
        });
        if let Some(pool) = pool {
            self.pool(role, pool);
        }
    }

    /// Keeps `mesh_db_pool_connections{service,state}` and `mesh_db_pool_max_connections{service}`
    /// of one Postgres pool current: a role's own, or one the outbox relay reads a schema with.
    pub fn pool(&self, service: &'static str, pool: &PgPool) {
        DB_POOL_MAX
            .with_label_values(&[service])
            .set(i64::from(pool.options().get_max_connections()));
        let pool = pool.clone();
        every(&self.shutdown, move || {
            let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
            let busy = i64::from(pool.size()) - idle;
            DB_POOL_CONNECTIONS
                .with_label_values(&[service, "idle"])
                .set(idle);
            DB_POOL_CONNECTIONS
                .with_label_values(&[service, "busy"])
                .set(busy.max(0));
            async {}
        });
    }

    /// Keeps `mesh_consumer_pending` of the EVENTS and AUDIT streams' durable consumers
    /// current (the outbox role samples it: it relays the one and writes the other).
    pub fn consumer_backlogs(&self, bus: &Bus) {
        let bus = bus.clone();
        every(&self.shutdown, move || {
            let bus = bus.clone();
            async move {
                let mut samples = Vec::new();
                for (stream, label) in [(Stream::Events, "events"), (Stream::Audit, "audit")] {
                    for backlog in bus.durable_backlogs(stream).await.unwrap_or_default() {
                        samples.push((label, backlog));
                    }
                }
                // Consumers that went away must not keep their last value.
                CONSUMER_PENDING.reset();
                for (stream, backlog) in samples {
                    let gauge = |state| {
                        CONSUMER_PENDING.with_label_values(&[
                            stream,
                            backlog.consumer.as_str(),
                            state,
                        ])
                    };
                    gauge("pending").set(i64::try_from(backlog.pending).unwrap_or(i64::MAX));
                    gauge("ack_pending")
                        .set(i64::try_from(backlog.ack_pending).unwrap_or(i64::MAX));
                }
            }
        });
    }

    /// Ready while every watched role's NATS connection is up.
    pub fn readiness(&self) -> Readiness {
        let buses = self.buses.clone();
        Arc::new(move || {
            let buses = buses.lock().expect("bus list lock");
            !buses.is_empty() && buses.iter().all(Bus::is_connected)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_the_roles() {
        assert_eq!(service_name(Role::ALL, false), "nats-mesh");
        assert_eq!(service_name(&[Role::Chat], false), "nats-mesh-chat");
        assert_eq!(service_name(&[], true), "nats-mesh-migrate");
        assert_eq!(roles_label(Role::ALL), "edge+user+social+chat+outbox");
        assert_eq!(default_db_service(&[Role::Chat], false), "chat");
        assert_eq!(default_db_service(Role::ALL, false), "mesh");
    }
}
