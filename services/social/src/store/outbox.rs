//! The outbox of the `social` schema: events written in the transaction of their change.

use mesh_contracts::events::SocialEvent;
use sqlx::PgConnection;
use uuid::Uuid;

/// Appends one event about `aggregate` to `social.outbox`.
pub async fn append(
    conn: &mut PgConnection,
    aggregate: Uuid,
    event: &SocialEvent,
) -> sqlx::Result<()> {
    mesh_service_kit::outbox::append(conn, super::SCHEMA, aggregate, event).await
}
