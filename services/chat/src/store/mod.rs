//! Postgres access of the chat service. It owns the `chat` schema and nothing else.

pub mod conversations;
pub mod messages;
pub mod presence;
pub mod projection;

use sqlx::PgPool;

/// The schema this service owns.
pub const SCHEMA: &str = "chat";

/// Opens this service's pool; connections fail fast when Postgres is away.
pub async fn connect_pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    mesh_service_kit::postgres::connect_pool(url, "mesh-chat", max_connections).await
}

/// Creates the schema and applies pending migrations; safe to run concurrently.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    mesh_service_kit::postgres::migrate(pool, SCHEMA, sqlx::migrate!("./migrations")).await
}
