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

use crate::config::{Role, Settings};
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
    bus.require_topology(&role.streams(), &role.buckets())
        .await?;
    tracing::info!(server = %bus.server_version(), prefix = %settings.prefix.as_str(), role = role.as_str(), "NATS ready");
    Ok(bus)
}

/// The streams and buckets `mesh migrate` declares, from the settings.
pub fn topology_settings(settings: &Settings) -> TopologySettings {
    TopologySettings {
        revoked_ttl: settings.access_ttl,
        dedup_window: settings.chat.dedup_window,
        replicas: settings.nats_replicas,
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
    bus.ensure_topology(&topology_settings(settings)).await?;
    bus.drain().await;
    Ok(())
}

/// Opens one service's pool on `url` (named `app` in Postgres) and applies its migrations.
async fn migrated_pool(
    settings: &Settings,
    url: Option<&str>,
    missing: &str,
    app: &str,
    migrate: impl AsyncFn(&PgPool) -> anyhow::Result<()>,
) -> anyhow::Result<PgPool> {
    let url = url.with_context(|| format!("{missing} is not set"))?;
    let pool =
        mesh_service_kit::postgres::connect_pool(url, app, settings.db_max_connections).await?;
    migrate(&pool)
        .await
        .with_context(|| format!("{app} migrations failed"))?;
    Ok(pool)
}

/// Opens the user service's pool and brings its schema up to date.
pub async fn user_pool(settings: &Settings) -> anyhow::Result<PgPool> {
    let url = settings.user_database_url.as_deref();
    migrated_pool(
        settings,
        url,
        "MESH_DATABASE_URL",
        "mesh-user",
        mesh_user::migrate,
    )
    .await
}

/// Opens the social service's pool and brings its schema up to date.
pub async fn social_pool(settings: &Settings) -> anyhow::Result<PgPool> {
    let url = settings.social_database_url.as_deref();
    let missing = "MESH_SOCIAL_DATABASE_URL (or MESH_DATABASE_URL)";
    migrated_pool(settings, url, missing, "mesh-social", mesh_social::migrate).await
}

/// Opens the chat service's pool and brings its schema up to date.
pub async fn chat_pool(settings: &Settings) -> anyhow::Result<PgPool> {
    let url = settings.chat_database_url.as_deref();
    let missing = "MESH_CHAT_DATABASE_URL (or MESH_DATABASE_URL)";
    migrated_pool(settings, url, missing, "mesh-chat", mesh_chat::migrate).await
}

/// Opens the audit log's pool and brings its schema up to date.
pub async fn audit_pool(settings: &Settings) -> anyhow::Result<PgPool> {
    let url = settings.audit_database_url.as_deref();
    migrated_pool(
        settings,
        url,
        "MESH_DATABASE_URL",
        "mesh-outbox",
        mesh_outbox::migrate,
    )
    .await
}

/// The outboxes the relay moves: each service's schema in its own database.
async fn outbox_sources(settings: &Settings) -> anyhow::Result<Vec<mesh_outbox::Source>> {
    let mut sources = Vec::new();
    for (service, schema, url) in [
        (Service::User, "users", &settings.user_database_url),
        (Service::Social, "social", &settings.social_database_url),
        (Service::Chat, "chat", &settings.chat_database_url),
    ] {
        let url = url
            .as_deref()
            .context("a service database URL is not set")?;
        sources.push(mesh_outbox::Source {
            service,
            schema,
            url: url.to_owned(),
            pool: mesh_service_kit::postgres::connect_pool(url, "mesh-outbox", 4).await?,
        });
    }
    Ok(sources)
}

pub fn chat_config(settings: &Settings) -> ChatConfig {
    ChatConfig::new(
        settings.chat.partitions,
        settings.chat.open_private,
        settings.chat.recall_window,
        settings.rpc_timeout,
    )
}

pub fn social_config(settings: &Settings) -> SocialConfig {
    SocialConfig::new(settings.rpc_timeout)
}

pub fn edge_config(settings: &Settings) -> anyhow::Result<EdgeConfig> {
    Ok(EdgeConfig {
        jwt_public_key_pem: settings
            .jwt_public_key_pem
            .clone()
            .context("MESH_JWT_PUBLIC_KEY is not set")?,
        jwt_issuer: settings.jwt_issuer.clone(),
        jwt_audience: settings.jwt_audience.clone(),
        access_ttl: settings.access_ttl,
        rpc_timeout: settings.rpc_timeout,
        max_body_bytes: settings.max_body_bytes,
        public_url: settings.public_url.clone(),
        chat_partitions: settings.chat.partitions,
        ws: mesh_edge::WsConfig {
            allowed_origins: settings.ws.allowed_origins.clone(),
            heartbeat: settings.ws.heartbeat,
            idle_timeout: settings.ws.idle_timeout,
            send_queue: settings.ws.send_queue,
            max_frame_bytes: settings.ws.max_frame_bytes,
        },
        guard: settings.guard.clone(),
        console: settings.console.clone(),
    })
}

pub fn user_config(settings: &Settings) -> anyhow::Result<UserConfig> {
    Ok(UserConfig {
        jwt_private_key_pem: settings
            .jwt_private_key_pem
            .clone()
            .context("MESH_JWT_PRIVATE_KEY is not set")?,
        jwt_public_key_pem: settings
            .jwt_public_key_pem
            .clone()
            .context("MESH_JWT_PUBLIC_KEY is not set")?,
        jwt_issuer: settings.jwt_issuer.clone(),
        jwt_audience: settings.jwt_audience.clone(),
        access_ttl: settings.access_ttl,
        refresh_ttl: settings.refresh_ttl,
        refresh_reuse_grace: settings.refresh_reuse_grace,
        bootstrap_admin_phones: settings.bootstrap_admin_phones.clone(),
        hash_concurrency: std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2),
        login_throttle: settings.login_throttle,
    })
}

/// Runs `roles` in this process until `shutdown` is cancelled. The edge listens on `listener`
/// (required when `roles` has the edge); other roles serve `/metrics` on the metrics address.
pub async fn run(
    settings: Settings,
    roles: &[Role],
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
    if roles.contains(&Role::User) {
        let deps = UserDeps {
            bus: bus_of(NatsRole::User).await?,
            pool: user_pool(&settings).await?,
        };
        watch.role("user", &deps.bus, Some(&deps.pool));
        let config = user_config(&settings)?;
        tasks.spawn(named(
            "user",
            mesh_user::run(deps, config, shutdown.clone().cancelled_owned()),
        ));
    }
    if roles.contains(&Role::Social) {
        let deps = SocialDeps {
            bus: bus_of(NatsRole::Social).await?,
            pool: social_pool(&settings).await?,
        };
        watch.role("social", &deps.bus, Some(&deps.pool));
        let config = social_config(&settings);
        tasks.spawn(named(
            "social",
            mesh_social::run(deps, config, shutdown.clone().cancelled_owned()),
        ));
    }
    if roles.contains(&Role::Chat) {
        let deps = ChatDeps {
            bus: bus_of(NatsRole::Chat).await?,
            pool: chat_pool(&settings).await?,
        };
        watch.role("chat", &deps.bus, Some(&deps.pool));
        let config = chat_config(&settings);
        tasks.spawn(named(
            "chat",
            mesh_chat::run(deps, config, shutdown.clone().cancelled_owned()),
        ));
    }
    if roles.contains(&Role::Outbox) {
        let deps = OutboxDeps {
            bus: bus_of(NatsRole::Outbox).await?,
            sources: outbox_sources(&settings).await?,
            audit_pool: audit_pool(&settings).await?,
        };
        watch.role("outbox", &deps.bus, Some(&deps.audit_pool));
        watch.consumer_backlogs(&deps.bus);
        let config = OutboxConfig::new(settings.rpc_timeout);
        tasks.spawn(named(
            "outbox",
            mesh_outbox::run(deps, config, shutdown.clone().cancelled_owned()),
        ));
    }
    if roles.contains(&Role::Edge) {
        let listener = listener.context("the edge needs a listener")?;
        let config = edge_config(&settings)?;
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
