//! Requests to join a group, made by the user or by a member inviting them.

use mesh_contracts::social::{GroupJoinRequest, JoinRequestStatus};
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::groups::{join_status_from_str, join_status_str};
use crate::domain::paging::Page;

#[derive(Debug, Clone, FromRow)]
pub struct JoinRequestRow {
    pub id: Uuid,
    pub group_id: Uuid,
    pub user_id: Uuid,
    pub inviter_id: Option<Uuid>,
    pub message: Option<String>,
    pub status: String,
    pub created_at: OffsetDateTime,
    pub handled_at: Option<OffsetDateTime>,
    pub handled_by: Option<Uuid>,
}

const COLUMNS: &str =
    "id, group_id, user_id, inviter_id, message, status, created_at, handled_at, handled_by";

impl JoinRequestRow {
    pub fn status(&self) -> JoinRequestStatus {
        join_status_from_str(&self.status)
    }

    pub fn wire(&self) -> GroupJoinRequest {
        GroupJoinRequest {
            id: self.id,
            group_id: self.group_id,
            user_id: self.user_id,
            inviter_id: self.inviter_id,
            message: self.message.clone(),
            status: self.status(),
            created_at: self.created_at,
            handled_at: self.handled_at,
            handled_by: self.handled_by,
        }
    }
}

pub async fn insert(
    conn: &mut PgConnection,
    group: Uuid,
    user: Uuid,
    inviter: Option<Uuid>,
    message: Option<&str>,
) -> sqlx::Result<JoinRequestRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO social.group_join_requests (id, group_id, user_id, inviter_id, message)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(group)
    .bind(user)
    .bind(inviter)
    .bind(message)
    .fetch_one(conn)
    .await
}

/// Whether `user` has a pending request to join `group`.
pub async fn has_pending(db: impl PgExecutor<'_>, group: Uuid, user: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM social.group_join_requests
         WHERE group_id = $1 AND user_id = $2 AND status = 'pending')",
    )
    .bind(group)
    .bind(user)
    .fetch_one(db)
    .await
}

/// A request of `group`, locked until the transaction ends.
pub async fn lock(
    conn: &mut PgConnection,
    group: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<JoinRequestRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM social.group_join_requests WHERE id = $1 AND group_id = $2
         FOR UPDATE"
    )))
    .bind(id)
    .bind(group)
    .fetch_optional(conn)
    .await
}

pub async fn set_status(
    conn: &mut PgConnection,
    id: Uuid,
    status: JoinRequestStatus,
    by: Uuid,
) -> sqlx::Result<JoinRequestRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE social.group_join_requests SET status = $2, handled_at = now(), handled_by = $3
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(join_status_str(status))
    .bind(by)
    .fetch_one(conn)
    .await
}

/// Marks `user`'s pending request (if any) approved: they got in another way.
pub async fn approve_pending_of(
    conn: &mut PgConnection,
    group: Uuid,
    user: Uuid,
    by: Uuid,
) -> sqlx::Result<Option<JoinRequestRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE social.group_join_requests SET status = 'approved', handled_at = now(), handled_by = $3
         WHERE group_id = $1 AND user_id = $2 AND status = 'pending' RETURNING {COLUMNS}"
    )))
    .bind(group)
    .bind(user)
    .bind(by)
    .fetch_optional(conn)
    .await
}

/// A page of a group's join requests, optionally of one status, oldest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    group: Uuid,
    status: Option<JoinRequestStatus>,
    page: Page,
) -> sqlx::Result<Vec<JoinRequestRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM social.group_join_requests
         WHERE group_id = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR status = $3)
         ORDER BY id LIMIT $4"
    )))
    .bind(group)
    .bind(page.after)
    .bind(status.map(join_status_str))
    .bind(page.fetch())
    .fetch_all(db)
    .await
}
