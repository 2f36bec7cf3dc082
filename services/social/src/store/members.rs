//! Group memberships. Callers hold the group's row lock (`groups::lock`) while changing them.

use mesh_contracts::social::{GroupMember, GroupRole};
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::groups::{role_from_str, role_str};
use crate::domain::paging::Page;

#[derive(Debug, Clone, FromRow)]
pub struct MemberRow {
    pub id: Uuid,
    pub group_id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub muted_until: Option<OffsetDateTime>,
    pub joined_at: OffsetDateTime,
}

const COLUMNS: &str = "id, group_id, user_id, role, muted_until, joined_at";

impl MemberRow {
    pub fn role(&self) -> GroupRole {
        role_from_str(&self.role)
    }

    /// A mute that has run out is no mute.
    pub fn muted_until(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.muted_until.filter(|until| *until > now)
    }

    pub fn wire(&self, now: OffsetDateTime) -> GroupMember {
        GroupMember {
            group_id: self.group_id,
            user_id: self.user_id,
            role: self.role(),
            joined_at: self.joined_at,
            muted_until: self.muted_until(now),
        }
    }
}

pub async fn insert(
    conn: &mut PgConnection,
    group: Uuid,
    user: Uuid,
    role: GroupRole,
) -> sqlx::Result<MemberRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO social.group_members (id, group_id, user_id, role) VALUES ($1, $2, $3, $4)
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(group)
    .bind(user)
    .bind(role_str(role))
    .fetch_one(conn)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    group: Uuid,
    user: Uuid,
) -> sqlx::Result<Option<MemberRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM social.group_members WHERE group_id = $1 AND user_id = $2"
    )))
    .bind(group)
    .bind(user)
    .fetch_optional(db)
    .await
}

/// Removes a member; false when they were not one.
pub async fn delete(conn: &mut PgConnection, group: Uuid, user: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM social.group_members WHERE group_id = $1 AND user_id = $2")
        .bind(group)
        .bind(user)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_role(
    conn: &mut PgConnection,
    group: Uuid,
    user: Uuid,
    role: GroupRole,
) -> sqlx::Result<MemberRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE social.group_members SET role = $3 WHERE group_id = $1 AND user_id = $2
         RETURNING {COLUMNS}"
    )))
    .bind(group)
    .bind(user)
    .bind(role_str(role))
    .fetch_one(conn)
    .await
}

pub async fn set_muted_until(
    conn: &mut PgConnection,
    group: Uuid,
    user: Uuid,
    until: Option<OffsetDateTime>,
) -> sqlx::Result<MemberRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE social.group_members SET muted_until = $3 WHERE group_id = $1 AND user_id = $2
         RETURNING {COLUMNS}"
    )))
    .bind(group)
    .bind(user)
    .bind(until)
    .fetch_one(conn)
    .await
}

/// A page of a group's members in the order they joined.
pub async fn list(
    db: impl PgExecutor<'_>,
    group: Uuid,
    page: Page,
) -> sqlx::Result<Vec<MemberRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM social.group_members
         WHERE group_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    )))
    .bind(group)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(db)
    .await
}

/// Every member of a group (for the member cache and for events about the whole group).
pub async fn all(db: impl PgExecutor<'_>, group: Uuid) -> sqlx::Result<Vec<MemberRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM social.group_members WHERE group_id = $1 ORDER BY id"
    )))
    .bind(group)
    .fetch_all(db)
    .await
}
