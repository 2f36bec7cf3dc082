//! Friend requests and friendships.

use mesh_contracts::social::{Friend, FriendRequest, FriendRequestStatus, RequestDirection};
use sqlx::{FromRow, PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::friends::{status_from_str, status_str};
use crate::domain::paging::Page;

#[derive(Debug, Clone, FromRow)]
pub struct RequestRow {
    pub id: Uuid,
    pub from_user: Uuid,
    pub to_user: Uuid,
    pub message: Option<String>,
    pub status: String,
    pub created_at: OffsetDateTime,
    pub handled_at: Option<OffsetDateTime>,
}

const REQUEST_COLUMNS: &str = "id, from_user, to_user, message, status, created_at, handled_at";

impl RequestRow {
    pub fn status(&self) -> FriendRequestStatus {
        status_from_str(&self.status)
    }

    pub fn wire(&self) -> FriendRequest {
        FriendRequest {
            id: self.id,
            from_user_id: self.from_user,
            to_user_id: self.to_user,
            message: self.message.clone(),
            status: self.status(),
            created_at: self.created_at,
            handled_at: self.handled_at,
        }
    }
}

pub async fn insert_request(
    conn: &mut PgConnection,
    from: Uuid,
    to: Uuid,
    message: Option<&str>,
) -> sqlx::Result<RequestRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO social.friend_requests (id, from_user, to_user, message)
         VALUES ($1, $2, $3, $4) RETURNING {REQUEST_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(from)
    .bind(to)
    .bind(message)
    .fetch_one(conn)
    .await
}

/// A request, read without locking it.
pub async fn get_request(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<RequestRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REQUEST_COLUMNS} FROM social.friend_requests WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A request, locked until the transaction ends.
pub async fn lock_request(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<RequestRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REQUEST_COLUMNS} FROM social.friend_requests WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The pending request between two users, whichever direction it goes.
pub async fn pending_between(
    conn: &mut PgConnection,
    a: Uuid,
    b: Uuid,
) -> sqlx::Result<Option<RequestRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REQUEST_COLUMNS} FROM social.friend_requests
         WHERE status = 'pending'
           AND ((from_user = $1 AND to_user = $2) OR (from_user = $2 AND to_user = $1))"
    )))
    .bind(a)
    .bind(b)
    .fetch_optional(conn)
    .await
}

pub async fn set_status(
    conn: &mut PgConnection,
    id: Uuid,
    status: FriendRequestStatus,
) -> sqlx::Result<RequestRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE social.friend_requests SET status = $2, handled_at = now()
         WHERE id = $1 RETURNING {REQUEST_COLUMNS}"
    )))
    .bind(id)
    .bind(status_str(status))
    .fetch_one(conn)
    .await
}

/// A page of the requests `user` received or sent, optionally of one status, oldest first.
pub async fn list_requests(
    db: impl PgExecutor<'_>,
    user: Uuid,
    direction: RequestDirection,
    status: Option<FriendRequestStatus>,
    page: Page,
) -> sqlx::Result<Vec<RequestRow>> {
    let column = match direction {
        RequestDirection::Incoming => "to_user",
        RequestDirection::Outgoing => "from_user",
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REQUEST_COLUMNS} FROM social.friend_requests
         WHERE {column} = $1 AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR status = $3)
         ORDER BY id LIMIT $4"
    )))
    .bind(user)
    .bind(page.after)
    .bind(status.map(status_str))
    .bind(page.fetch())
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, FromRow)]
pub struct FriendRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub friend_id: Uuid,
    pub remark: Option<String>,
    pub created_at: OffsetDateTime,
}

const FRIEND_COLUMNS: &str = "id, user_id, friend_id, remark, created_at";

impl FriendRow {
    pub fn wire(&self) -> Friend {
        Friend {
            user_id: self.friend_id,
            remark: self.remark.clone(),
            since: self.created_at,
        }
    }
}

/// For each pair `(a, b)`, in order: are they friends, and did either block the other? One
/// read for every pair (chat asks this for a whole ingest batch).
pub async fn relations(
    db: impl PgExecutor<'_>,
    pairs: &[(Uuid, Uuid)],
) -> sqlx::Result<Vec<(bool, bool)>> {
    let (a, b): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
    sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM social.friendships f \
                        WHERE f.user_id = p.a AND f.friend_id = p.b), \
                EXISTS (SELECT 1 FROM social.blocks k \
                        WHERE (k.blocker_id = p.a AND k.blocked_id = p.b) \
                           OR (k.blocker_id = p.b AND k.blocked_id = p.a)) \
         FROM UNNEST($1::uuid[], $2::uuid[]) WITH ORDINALITY AS p(a, b, i) ORDER BY p.i",
    )
    .bind(&a)
    .bind(&b)
    .fetch_all(db)
    .await
}

/// `relations` of one pair: (friends, either blocked the other).
pub async fn relation(db: impl PgExecutor<'_>, a: Uuid, b: Uuid) -> sqlx::Result<(bool, bool)> {
    relations(db, &[(a, b)])
        .await?
        .pop()
        .ok_or(sqlx::Error::RowNotFound)
}

/// Writes both rows of a friendship; false when it already existed.
pub async fn insert_friendship(conn: &mut PgConnection, a: Uuid, b: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO social.friendships (user_id, friend_id, id) VALUES ($1, $2, $3), ($2, $1, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(a)
    .bind(b)
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes both rows of a friendship; false when there was none.
pub async fn remove_friendship(conn: &mut PgConnection, a: Uuid, b: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "DELETE FROM social.friendships
         WHERE (user_id = $1 AND friend_id = $2) OR (user_id = $2 AND friend_id = $1)",
    )
    .bind(a)
    .bind(b)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_remark(
    conn: &mut PgConnection,
    user: Uuid,
    friend: Uuid,
    remark: Option<&str>,
) -> sqlx::Result<Option<FriendRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE social.friendships SET remark = $3 WHERE user_id = $1 AND friend_id = $2
         RETURNING {FRIEND_COLUMNS}"
    )))
    .bind(user)
    .bind(friend)
    .bind(remark)
    .fetch_optional(conn)
    .await
}

/// A page of `user`'s friends, oldest friendship first.
pub async fn list_friends(
    db: impl PgExecutor<'_>,
    user: Uuid,
    page: Page,
) -> sqlx::Result<Vec<FriendRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FRIEND_COLUMNS} FROM social.friendships
         WHERE user_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    )))
    .bind(user)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(db)
    .await
}

/// Every friend of `user` (for the friend-set cache).
pub async fn friend_ids(db: impl PgExecutor<'_>, user: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("SELECT friend_id FROM social.friendships WHERE user_id = $1")
        .bind(user)
        .fetch_all(db)
        .await
}
