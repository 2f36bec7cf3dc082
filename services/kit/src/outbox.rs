//! The outbox: events written in the transaction of the change they describe. Each service
//! has an `outbox` table in its own schema with the same shape.

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// Appends one event about `aggregate` to `<schema>.outbox`.
pub async fn append(
    conn: &mut PgConnection,
    schema: &'static str,
    aggregate: Uuid,
    event_type: &str,
    payload: &impl Serialize,
) -> sqlx::Result<()> {
    let payload =
        serde_json::to_value(payload).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.outbox (id, aggregate, event_type, payload) VALUES ($1, $2, $3, $4)"
    )))
    .bind(Uuid::now_v7())
    .bind(aggregate)
    .bind(event_type)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(())
}
