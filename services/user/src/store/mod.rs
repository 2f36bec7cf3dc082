//! Postgres access of the user service. It owns the `users` schema and nothing else.

pub mod accounts;
pub mod outbox;
pub mod roles;
pub mod sessions;

use sqlx::PgPool;

/// The schema this service owns.
pub const SCHEMA: &str = "users";

/// Creates the schema and applies pending migrations; safe to run concurrently.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    mesh_service_kit::postgres::migrate(pool, SCHEMA, sqlx::migrate!("./migrations")).await
}

pub use mesh_service_kit::is_unique_violation;
