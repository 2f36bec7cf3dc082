//! Chat's projection of social: friendships, blocks and group members, written by the
//! projection consumer and read to fan out when social does not answer.

use mesh_contracts::social::GroupRole;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

fn ordered(a: Uuid, b: Uuid) -> (Uuid, Uuid) {
    if a <= b { (a, b) } else { (b, a) }
}

fn role_text(role: GroupRole) -> &'static str {
    match role {
        GroupRole::Owner => "owner",
        GroupRole::Admin => "admin",
        GroupRole::Member => "member",
    }
}

/// A group's members with their mutes, in user id order.
pub async fn members(
    pool: &PgPool,
    group: Uuid,
) -> sqlx::Result<Vec<(Uuid, Option<OffsetDateTime>)>> {
    sqlx::query_as(
        "SELECT user_id, muted_until FROM chat.group_members WHERE group_id = $1 ORDER BY user_id",
    )
    .bind(group)
    .fetch_all(pool)
    .await
}

/// Every friend of `user`.
pub async fn friends_of(pool: &PgPool, user: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT user_hi FROM chat.friendships WHERE user_lo = $1 \
         UNION ALL SELECT user_lo FROM chat.friendships WHERE user_hi = $1",
    )
    .bind(user)
    .fetch_all(pool)
    .await
}

pub async fn add_friendship(conn: &mut PgConnection, a: Uuid, b: Uuid) -> sqlx::Result<()> {
    let (lo, hi) = ordered(a, b);
    sqlx::query("INSERT INTO chat.friendships VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(lo)
        .bind(hi)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn remove_friendship(conn: &mut PgConnection, a: Uuid, b: Uuid) -> sqlx::Result<()> {
    let (lo, hi) = ordered(a, b);
    sqlx::query("DELETE FROM chat.friendships WHERE user_lo = $1 AND user_hi = $2")
        .bind(lo)
        .bind(hi)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn set_block(
    conn: &mut PgConnection,
    blocker: Uuid,
    blocked: Uuid,
    on: bool,
) -> sqlx::Result<()> {
    let sql = if on {
        "INSERT INTO chat.blocks VALUES ($1, $2) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM chat.blocks WHERE blocker_id = $1 AND blocked_id = $2"
    };
    sqlx::query(sql)
        .bind(blocker)
        .bind(blocked)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn upsert_member(
    conn: &mut PgConnection,
    group: Uuid,
    user: Uuid,
    role: GroupRole,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO chat.group_members (group_id, user_id, role) VALUES ($1, $2, $3) \
         ON CONFLICT (group_id, user_id) DO UPDATE SET role = EXCLUDED.role",
    )
    .bind(group)
    .bind(user)
    .bind(role_text(role))
    .execute(conn)
    .await
    .map(drop)
}

pub async fn remove_member(conn: &mut PgConnection, group: Uuid, user: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM chat.group_members WHERE group_id = $1 AND user_id = $2")
        .bind(group)
        .bind(user)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn set_muted(
    conn: &mut PgConnection,
    group: Uuid,
    user: Uuid,
    until: Option<OffsetDateTime>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE chat.group_members SET muted_until = $3 WHERE group_id = $1 AND user_id = $2",
    )
    .bind(group)
    .bind(user)
    .bind(until)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn remove_group(conn: &mut PgConnection, group: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM chat.group_members WHERE group_id = $1")
        .bind(group)
        .execute(conn)
        .await
        .map(drop)
}
