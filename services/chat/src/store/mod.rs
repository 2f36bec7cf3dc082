//! Postgres access of the chat service. It owns the `chat` schema and nothing else.

pub mod conversations;
pub mod messages;
pub mod partitions;
pub mod presence;
pub mod projection;
pub mod usage;

use sqlx::PgPool;

/// The schema this service owns.
pub const SCHEMA: &str = "chat";

/// Creates the schema and applies pending migrations; safe to run concurrently.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    mesh_service_kit::postgres::migrate(pool, SCHEMA, sqlx::migrate!("./migrations")).await
}
