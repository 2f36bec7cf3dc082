//! The outbox: events written in the transaction of the change they describe.

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// Appends one event about `aggregate` to the outbox.
#[tracing::instrument(name = "db.outbox.append", skip_all)]
pub async fn append(
    conn: &mut PgConnection,
    aggregate: Uuid,
    event_type: &str,
    payload: &impl Serialize,
) -> sqlx::Result<()> {
    let payload =
        serde_json::to_value(payload).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    sqlx::query(
        "INSERT INTO users.outbox (id, aggregate, event_type, payload) VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(aggregate)
    .bind(event_type)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(())
}
