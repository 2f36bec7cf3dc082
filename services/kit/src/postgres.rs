//! Postgres plumbing: pools that fail fast, per-schema migrations, and error mapping.

use std::time::Duration;

use mesh_contracts::ServiceError;
use sqlx::PgPool;

use crate::fault::Fault;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Longest wait for a pooled connection. Well below every RPC deadline (5 s by default), so
/// while Postgres is down or saturated a request is answered `service_unavailable` (503,
/// retryable) promptly instead of timing out at the caller: when Postgres refuses
/// connections, the pool retries connecting only this long.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a starting service waits for Postgres to accept its first connection.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Opens a pool whose connections fail fast (instead of hanging) when Postgres is away. A
/// Postgres that is still starting gets [`STARTUP_WAIT`] to accept the first connection.
pub async fn connect_pool(
    url: &str,
    application_name: &str,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|err| anyhow::anyhow!("invalid database URL: {err}"))?;
    let options = options.application_name(application_name);
    let started = std::time::Instant::now();
    loop {
        let connected = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await;
        match connected {
            Ok(pool) => return Ok(pool),
            Err(err) if started.elapsed() >= STARTUP_WAIT => {
                return Err(anyhow::anyhow!("cannot connect to Postgres: {err}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Creates `schema` and applies `migrator` with its bookkeeping table inside that schema, so
/// services sharing a database never see each other's migrations. Safe to run concurrently.
pub async fn migrate(
    pool: &PgPool,
    schema: &'static str,
    mut migrator: Migrator,
) -> anyhow::Result<()> {
    let created = sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}"
    )))
    .execute(pool)
    .await;
    match created {
        // Two processes starting at once: the other one created it between check and insert.
        Err(err) if !is_unique_violation(&err) => return Err(err.into()),
        _ => {}
    }
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    migrator.run(pool).await?;
    Ok(())
}

/// True when the error is a unique-constraint violation.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "23505")
}

/// True when a statement failed because of the data it was given (SQLSTATE classes 22 data
/// exception, 23 integrity constraint, 54 program limit, or a value that cannot be encoded),
/// so running it again with the same data fails again. Anything else (lost connections,
/// timeouts, serialization failures, shutdowns) may pass on a retry.
pub fn is_permanent(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. } => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| ["22", "23", "54"].iter().any(|c| code.starts_with(c))),
        _ => false,
    }
}

/// A database failure as the `ServiceError` a caller sees (the cause is logged). Prefer
/// returning `Fault` and `?`; this is for code that must answer a `ServiceError` directly.
pub fn db_error(err: sqlx::Error) -> ServiceError {
    Fault::Database(err).into()
}

/// Any other internal failure: logged, answered opaquely.
pub fn internal_error(err: impl std::fmt::Display) -> ServiceError {
    Fault::internal(err).into()
}

/// Answers when the pool can reach Postgres: every service's `health` operation.
pub async fn ping(pool: &sqlx::PgPool) -> Result<(), Fault> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}
