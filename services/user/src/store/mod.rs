//! Postgres access of the user service. It owns the `users` schema and nothing else.

pub mod accounts;
pub mod outbox;
pub mod sessions;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Opens a pool whose connections fail fast (instead of hanging) when Postgres is away.
pub async fn connect_pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|err| anyhow::anyhow!("invalid database URL: {err}"))?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name("mesh-user"))
        .await
        .map_err(|err| anyhow::anyhow!("cannot connect to Postgres: {err}"))?;
    Ok(pool)
}

/// Creates the schema and applies pending migrations; safe to run concurrently.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CREATE SCHEMA IF NOT EXISTS users")
        .execute(pool)
        .await?;
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("users._sqlx_migrations");
    migrator.run(pool).await?;
    Ok(())
}

/// True when the error is a unique-constraint violation.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "23505")
}
