//! Blocks: one row per (blocker, blocked).

use mesh_contracts::social::Block;
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::paging::Page;

#[derive(Debug, Clone, FromRow)]
pub struct BlockRow {
    pub id: Uuid,
    pub blocker_id: Uuid,
    pub blocked_id: Uuid,
    pub created_at: OffsetDateTime,
}

const COLUMNS: &str = "id, blocker_id, blocked_id, created_at";

impl BlockRow {
    pub fn wire(&self) -> Block {
        Block {
            user_id: self.blocked_id,
            created_at: self.created_at,
        }
    }
}

/// Stores a block; `None` when it already existed.
pub async fn insert(
    conn: &mut PgConnection,
    blocker: Uuid,
    blocked: Uuid,
) -> sqlx::Result<Option<BlockRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO social.blocks (id, blocker_id, blocked_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(blocker)
    .bind(blocked)
    .fetch_optional(conn)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    blocker: Uuid,
    blocked: Uuid,
) -> sqlx::Result<Option<BlockRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM social.blocks WHERE blocker_id = $1 AND blocked_id = $2"
    )))
    .bind(blocker)
    .bind(blocked)
    .fetch_optional(db)
    .await
}

/// Lifts a block; false when there was none.
pub async fn delete(conn: &mut PgConnection, blocker: Uuid, blocked: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM social.blocks WHERE blocker_id = $1 AND blocked_id = $2")
        .bind(blocker)
        .bind(blocked)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A page of the users `blocker` blocked, oldest block first.
pub async fn list(
    db: impl PgExecutor<'_>,
    blocker: Uuid,
    page: Page,
) -> sqlx::Result<Vec<BlockRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM social.blocks
         WHERE blocker_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    )))
    .bind(blocker)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(db)
    .await
}
