//! Postgres access of the social service. It owns the `social` schema and nothing else.

pub mod blocks;
pub mod friends;
pub mod groups;
pub mod join_requests;
pub mod members;
pub mod outbox;
pub mod usage;

use sqlx::{PgConnection, PgPool};

/// The schema this service owns.
pub const SCHEMA: &str = "social";

/// Creates the schema and applies pending migrations; safe to run concurrently.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    mesh_service_kit::postgres::migrate(pool, SCHEMA, sqlx::migrate!("./migrations")).await
}

pub use mesh_service_kit::is_unique_violation;

/// Takes the transaction-scoped advisory lock `key` (see `domain::friends::pair_key`).
pub async fn lock_pair(conn: &mut PgConnection, key: i64) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}
