//! Group rows. Every change to a group's membership first locks its row (`lock`), so joins,
//! leaves, role changes and the member count never race each other.

use mesh_contracts::social::{Group, GroupRole, JoinPolicy};
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::groups::{policy_from_str, policy_str, role_from_str};
use crate::domain::paging::Page;

#[derive(Debug, Clone, FromRow)]
pub struct GroupRow {
    pub id: Uuid,
    pub name: String,
    pub icon: Option<String>,
    pub announcement: Option<String>,
    pub join_policy: String,
    pub max_members: i32,
    pub member_count: i32,
    pub owner_id: Uuid,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, name, icon, announcement, join_policy, max_members, member_count, \
                       owner_id, created_at, updated_at";

impl GroupRow {
    pub fn policy(&self) -> JoinPolicy {
        policy_from_str(&self.join_policy)
    }

    pub fn member_count(&self) -> u32 {
        u32::try_from(self.member_count).unwrap_or(0)
    }

    pub fn max_members(&self) -> u32 {
        u32::try_from(self.max_members).unwrap_or(0)
    }

    /// The group as seen by a caller whose role is `my_role`.
    pub fn wire(&self, my_role: Option<GroupRole>) -> Group {
        Group {
            id: self.id,
            name: self.name.clone(),
            icon: self.icon.clone(),
            announcement: self.announcement.clone(),
            join_policy: self.policy(),
            max_members: self.max_members(),
            member_count: self.member_count(),
            owner_id: self.owner_id,
            my_role,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

pub struct NewGroup<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub icon: Option<&'a str>,
    pub announcement: Option<&'a str>,
    pub join_policy: JoinPolicy,
    pub max_members: u32,
    pub owner_id: Uuid,
}

pub async fn insert(conn: &mut PgConnection, new: &NewGroup<'_>) -> sqlx::Result<GroupRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO social.groups (id, name, icon, announcement, join_policy, max_members, owner_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(new.id)
    .bind(new.name)
    .bind(new.icon)
    .bind(new.announcement)
    .bind(policy_str(new.join_policy))
    .bind(i32::try_from(new.max_members).unwrap_or(i32::MAX))
    .bind(new.owner_id)
    .fetch_one(conn)
    .await
}

pub async fn by_id(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<GroupRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM social.groups WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The group, locked until the transaction ends.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<GroupRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM social.groups WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The fields of a group update; `None` leaves a field unchanged.
pub struct GroupChange<'a> {
    pub name: Option<&'a str>,
    /// `Some(None)` clears the icon.
    pub icon: Option<Option<&'a str>>,
    /// `Some(None)` clears the announcement.
    pub announcement: Option<Option<&'a str>>,
}

pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    change: &GroupChange<'_>,
) -> sqlx::Result<GroupRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE social.groups SET
             name = COALESCE($2, name),
             icon = CASE WHEN $3 THEN $4 ELSE icon END,
             announcement = CASE WHEN $5 THEN $6 ELSE announcement END,
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(change.name)
    .bind(change.icon.is_some())
    .bind(change.icon.flatten())
    .bind(change.announcement.is_some())
    .bind(change.announcement.flatten())
    .fetch_one(conn)
    .await
}

/// Adds `delta` to the member count.
pub async fn add_members(conn: &mut PgConnection, id: Uuid, delta: i32) -> sqlx::Result<GroupRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE social.groups SET member_count = member_count + $2 WHERE id = $1
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(delta)
    .fetch_one(conn)
    .await
}

pub async fn set_owner(conn: &mut PgConnection, id: Uuid, owner: Uuid) -> sqlx::Result<GroupRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE social.groups SET owner_id = $2, updated_at = now() WHERE id = $1
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(owner)
    .fetch_one(conn)
    .await
}

/// Deletes the group with its memberships and join requests.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM social.groups WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A page of every group, oldest first (for moderators).
pub async fn all(db: impl PgExecutor<'_>, page: Page) -> sqlx::Result<Vec<GroupRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM social.groups WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    )))
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(db)
    .await
}

/// A group with the role of the user it was listed for.
#[derive(Debug, Clone, FromRow)]
pub struct MyGroupRow {
    #[sqlx(flatten)]
    pub group: GroupRow,
    pub role: String,
}

impl MyGroupRow {
    pub fn wire(&self) -> Group {
        self.group.wire(Some(role_from_str(&self.role)))
    }
}

/// A page of the groups `user` belongs to, oldest group first.
pub async fn of_member(
    db: impl PgExecutor<'_>,
    user: Uuid,
    page: Page,
) -> sqlx::Result<Vec<MyGroupRow>> {
    sqlx::query_as(
        "SELECT g.id, g.name, g.icon, g.announcement, g.join_policy, g.max_members,
                g.member_count, g.owner_id, g.created_at, g.updated_at, m.role
         FROM social.group_members m JOIN social.groups g ON g.id = m.group_id
         WHERE m.user_id = $1 AND ($2::uuid IS NULL OR g.id > $2)
         ORDER BY g.id LIMIT $3",
    )
    .bind(user)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(db)
    .await
}
