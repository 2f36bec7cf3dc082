//! Starts roles: each is a library `run(deps, config, shutdown)`; this module only builds their
//! dependencies from `Settings` and runs them side by side until shutdown.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use mesh_chat::{ChatConfig, ChatDeps};
use mesh_contracts::Service;
use mesh_contracts::nats_permissions::NatsRole;
use mesh_edge::{EdgeConfig, EdgeDeps};
use mesh_nats::{Bus, TopologySettings};
use mesh_outbox::{OutboxConfig, OutboxDeps};
use mesh_social::{SocialConfig, SocialDeps};
use mesh_user::{UserConfig, UserDeps};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{Databases, EdgeRole, Settings, UserRole};
use crate::telemetry::Watch;

/// How long the first NATS connection may take before start-up fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects role `role` to NATS with its own credentials and inbox prefix, and checks that
/// the streams and buckets it uses exist (it never creates them: `mesh migrate` does).
pub async fn connect_bus(settings: &Settings, role: NatsRole, name: &str) -> anyhow::Result<Bus> {
    let bus = Bus::connect_with(
        &settings.nats_url,
        &settings.nats_credentials_for(role),
        settings.prefix.clone(),
        name,
        CONNECT_TIMEOUT,
    )
    .await?;
    let needs = topology_settings(settings).needs();
    bus.require_topology(&role.streams(), &role.buckets(), needs)
        .await?;
    tracing::info!(server = %bus.server_version(), prefix = %settings.prefix.as_str(), role = role.as_str(), "NATS ready");
    Ok(bus)
}

/// The streams and buckets `mesh migrate` declares, from the settings.
pub fn topology_settings(settings: &Settings) -> TopologySettings {
    TopologySettings {
        // As long as the edges accept a revoked session's tokens, and as they remember it.
        revoked_ttl: mesh_edge::revocation_ttl(settings.access_ttl),
        dedup_window: settings.chat.dedup_window,
        replicas: settings.nats_replicas,
        chat_partitions: settings.chat.partitions,
        kept_max_bytes: settings.nats_kept_max_bytes,
    }
}

/// Creates or updates the prefix's streams and buckets as the migrate identity.
pub async fn migrate_nats(settings: &Settings) -> anyhow::Result<()> {
    let bus = Bus::connect_with(
        &settings.nats_url,
        &settings.nats_credentials_for(NatsRole::Migrate),
        settings.prefix.clone(),
        "mesh-migrate",
        CONNECT_TIMEOUT,
    )
    .await?;
    if !bus.keeps_creation_times() {
        let (major, minor, patch) = mesh_nats::CREATION_TIME_KEPT_FROM;
        tracing::warn!(
            server = %bus.server_version(),
            "this NATS server forgets a stream's creation time when migrate changes a setting \
             after a restart and the server restarts again; chat partitions then read the whole \
             ingest stream again. Upgrade to {major}.{minor}.{patch} or newer"
        );
    }
    bus.ensure_topology(&topology_settings(settings)).await?;
    bus.drain().await;
    Ok(())
}

/// Opens one service's pool on `url` (named `app` in Postgres) and applies its migrations.
async fn migrated_pool(
    settings: &Settings,
    url: &str,
    app: &str,
    migrate: impl AsyncFn(&PgPool) -> anyhow::Result<()>,
) -> anyhow::Result<PgPool> {
    let pool =
        mesh_service_kit::postgres::connect_pool(url, app, settings.db_max_connections).await?;
    migrate(&pool)
        .await
        .with_context(|| format!("{app} migrations failed"))?;
    Ok(pool)
}

/// Brings every database's schema and the NATS streams and buckets up to date.
pub async fn migrate(settings: &Settings, databases: &Databases) -> anyhow::Result<()> {
    migrated_pool(settings, &databases.user, "mesh-user", mesh_user::migrate).await?;
    migrated_pool(
        settings,
        &databases.social,
        "mesh-social",
        mesh_social::migrate,
    )
    .await?;
    migrated_pool(settings, &databases.chat, "mesh-chat", mesh_chat::migrate).await?;
    migrated_pool(
        settings,
        &databases.audit,
        "mesh-outbox",
        mesh_outbox::migrate,
    )
    .await?;
    migrate_nats(settings).await
}

/// Connections of each relayed schema's pool: its relay runs one statement at a time. With the
/// advisory lock's and the LISTEN connection, a schema costs three (`mesh.podConnections` in
/// the Helm chart counts them).
const RELAY_POOL_CONNECTIONS: u32 = 1;

/// The `service` label of the pool the relay reads `service`'s outbox with.
fn relay_pool_label(service: Service) -> &'static str {
    match service {
        Service::User => "relay-user",
        Service::Social => "relay-social",
        Service::Chat => "relay-chat",
        Service::Outbox => "relay-outbox",
    }
}

/// The outboxes the relay moves: each service's schema in its own database.
async fn outbox_sources(databases: &Databases) -> anyhow::Result<Vec<mesh_outbox::Source>> {
    let mut sources = Vec::new();
    for (service, schema, url) in [
        (Service::User, "users", &databases.user),
        (Service::Social, "social", &databases.social),
        (Service::Chat, "chat", &databases.chat),
    ] {
        sources.push(mesh_outbox::Source {
            service,
            schema,
            url: url.clone(),
            pool: mesh_service_kit::postgres::connect_pool(
                url,
                "mesh-outbox",
                RELAY_POOL_CONNECTIONS,
            )
            .await?,
        });
    }
    Ok(sources)
}

pub fn chat_config(settings: &Settings) -> ChatConfig {
    let mut config = ChatConfig::new(
        settings.chat.partitions,
        settings.chat.open_private,
        settings.chat.recall_window,
        settings.rpc_timeout,
    );
    config.batch_size = settings.chat.batch_size;
    config.store_concurrency = settings.chat.store_rounds;
    config.store_chains = settings.chat.store_chains;
    config.store_linger = settings.chat.store_linger;
    config.compact_every = settings.chat.compact_every;
    config
}

pub fn social_config(settings: &Settings) -> SocialConfig {
    SocialConfig::new(settings.rpc_timeout)
}

pub fn edge_config(settings: &Settings, edge: &EdgeRole) -> EdgeConfig {
    EdgeConfig {
        jwt_public_key_pem: edge.jwt_public_key_pem.clone(),
        jwt_issuer: settings.jwt_issuer.clone(),
        jwt_audience: settings.jwt_audience.clone(),
        access_ttl: settings.access_ttl,
        rpc_timeout: settings.rpc_timeout,
        max_body_bytes: settings.max_body_bytes,
        public_url: settings.public_url.clone(),
        chat_partitions: settings.chat.partitions,
        chat_max_unstored: settings.chat.max_unstored,
        chat_ingest_spacing: settings.chat.ingest_spacing,
        ws: mesh_edge::WsConfig {
            allowed_origins: settings.ws.allowed_origins.clone(),
            heartbeat: settings.ws.heartbeat,
            idle_timeout: settings.ws.idle_timeout,
            send_queue: settings.ws.send_queue,
            max_frame_bytes: settings.ws.max_frame_bytes,
        },
        guard: settings.guard.clone(),
        console: settings.console.clone(),
    }
}

pub fn user_config(settings: &Settings, user: &UserRole) -> UserConfig {
    UserConfig {
        jwt_private_key_pem: user.jwt_private_key_pem.clone(),
        jwt_public_key_pem: user.jwt_public_key_pem.clone(),
        jwt_issuer: settings.jwt_issuer.clone(),
        jwt_audience: settings.jwt_audience.clone(),
        access_ttl: settings.access_ttl,
        refresh_ttl: settings.refresh_ttl,
        refresh_reuse_grace: settings.refresh_reuse_grace,
        bootstrap_admin_phones: settings.bootstrap_admin_phones.clone(),
        hash_concurrency: settings.user_hash_threads,
        login_throttle: settings.login_throttle,
    }
}

/// Runs the roles `settings` has a part for until `shutdown` is cancelled. The edge listens on
/// `listener` (required with the edge); other roles serve `/metrics` on the metrics address.
pub async fn run(
    settings: Settings,
    listener: Option<std::net::TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut buses = Vec::new();
    let mut bus_of = async |role: NatsRole| -> anyhow::Result<Bus> {
        let bus = connect_bus(&settings, role, &format!("mesh-{}", role.as_str())).await?;
        buses.push(bus.clone());
        Ok(bus)
    };
    let mut tasks = tokio::task::JoinSet::new();
    let watch = Watch::new(&shutdown);
    let parts = &settings.roles;
    if let Some(user) = &parts.user {
        let deps = UserDeps {
            bus: bus_of(NatsRole::User).await?,
            pool: migrated_pool(
                &settings,
                &user.database_url,
                "mesh-user",
                mesh_user::migrate,
            )
            .await?,
        };
        watch.role("user", &deps.bus, Some(&deps.pool));
        let config = user_config(&settings, user);
        tasks.spawn(named(
            "user",
            mesh_user::run(deps, config, shutdown.clone().cancelled_owned()),
        ));
    }
    if let Some(social) = &parts.social {
        let url = &social.database_url;
        let deps = SocialDeps {
            bus: bus_of(NatsRole::Social).await?,
            pool: migrated_pool(&settings, url, "mesh-social", mesh_social::migrate).await?,
        };
        watch.role("social", &deps.bus, Some(&deps.pool));
        let config = social_config(&settings);
        tasks.spawn(named(
            "social",
            mesh_social::run(deps, config, shutdown.clone().cancelled_owned()),
        ));
    }
    if let Some(chat) = &parts.chat {
        let url = &chat.database_url;
        let deps = ChatDeps {
            bus: bus_of(NatsRole::Chat).await?,
            pool: migrated_pool(&settings, url, "mesh-chat", mesh_chat::migrate).await?,
        };
        watch.role("chat", &deps.bus, Some(&deps.pool));
        let config = chat_config(&settings);
        tasks.spawn(named(
            "chat",
            mesh_chat::run(deps, config, shutdown.clone().cancelled_owned()),
        ));
    }
    if let Some(databases) = &parts.outbox {
        let url = &databases.audit;
        let deps = OutboxDeps {
            bus: bus_of(NatsRole::Outbox).await?,
            sources: outbox_sources(databases).await?,
            audit_pool: migrated_pool(&settings, url, "mesh-outbox", mesh_outbox::migrate).await?,
        };
        watch.role("outbox", &deps.bus, Some(&deps.audit_pool));
        for source in &deps.sources {
            watch.pool(relay_pool_label(source.service), &source.pool);
        }
        watch.consumer_backlogs(&deps.bus);
        let config = OutboxConfig::new(settings.rpc_timeout, settings.audit_retention);
        tasks.spawn(named(
            "outbox",
            mesh_outbox::run(deps, config, shutdown.clone().cancelled_owned()),
        ));
    }
    if let Some(edge) = &parts.edge {
        let listener = listener.context("the edge needs a listener")?;
        let config = edge_config(&settings, edge);
        let deps = EdgeDeps {
            bus: bus_of(NatsRole::Edge).await?,
        };
        watch.role("edge", &deps.bus, None);
        tasks.spawn(named(
            "edge",
            mesh_edge::run(deps, config, listener, shutdown.clone().cancelled_owned()),
        ));
    } else {
        let addr = settings.metrics_addr;
        let done = shutdown.clone().cancelled_owned();
        let ready = watch.readiness();
        tasks.spawn(named(
            "metrics",
            mesh_observability::serve_metrics(addr, ready, done),
        ));
    }
    // The first role to stop (cleanly or not) stops the others.
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        shutdown.cancel();
        let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(err) = outcome
            && first_error.is_none()
        {
            first_error = Some(err);
        }
    }
    for bus in buses {
        bus.drain().await;
    }
    first_error.map_or(Ok(()), Err)
}

async fn named(
    role: &'static str,
    fut: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let result = fut.await.with_context(|| format!("role {role} failed"));
    tracing::info!(role, ok = result.is_ok(), "role stopped");
    result
}
