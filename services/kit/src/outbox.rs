//! The outbox: events written in the transaction of the change they describe. Each service
//! has an `outbox` table in its own schema with the same shape.

use mesh_contracts::events::{DomainEvent, encode};
use sqlx::PgConnection;
use uuid::Uuid;

/// Appends one event about `aggregate` to `<schema>.outbox`: its type name and payload both
/// come from the typed event.
///
/// The relay publishes rows in the order they were inserted (the table's `seq`, drawn by this
/// insert), so call it while holding the lock that orders `aggregate`'s writers: then its
/// events reach consumers in the order their transactions committed. `created_at` is left to
/// its default (the transaction's start), which is the envelope's `occurred_at` but no order.
pub async fn append<E: DomainEvent>(
    conn: &mut PgConnection,
    schema: &'static str,
    aggregate: Uuid,
    event: &E,
) -> sqlx::Result<()> {
    let (event_type, payload) = encode(event).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
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
