//! The outbox of the `users` schema: events written in the transaction of their change.

use mesh_contracts::events::UserEvent;
use sqlx::PgConnection;
use uuid::Uuid;

/// Appends one event about `aggregate` to `users.outbox`.
pub async fn append(
    conn: &mut PgConnection,
    aggregate: Uuid,
    event: &UserEvent,
) -> sqlx::Result<()> {
    mesh_service_kit::outbox::append(conn, super::SCHEMA, aggregate, event).await
}
