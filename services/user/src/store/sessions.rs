//! Sessions (one per signed-in device) and their refresh tokens.

use sqlx::{FromRow, PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub id: Uuid,
    pub device_name: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
}

pub struct NewSession<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub device_name: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub expires_at: OffsetDateTime,
    pub refresh_hash: &'a [u8],
}

/// Opens a session with its first refresh token, in one statement: a sign-in outside a larger
/// transaction then costs one round trip and one commit.
#[tracing::instrument(name = "db.sessions.insert", skip_all)]
pub async fn insert(conn: &mut PgConnection, new: &NewSession<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "WITH session AS (
             INSERT INTO users.sessions (id, user_id, device_name, user_agent, ip, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id
         )
         INSERT INTO users.refresh_tokens (hash, session_id) SELECT $7, id FROM session",
    )
    .bind(new.id)
    .bind(new.user_id)
    .bind(new.device_name)
    .bind(new.user_agent)
    .bind(new.ip)
    .bind(new.expires_at)
    .bind(new.refresh_hash)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_refresh(
    conn: &mut PgConnection,
    session_id: Uuid,
    hash: &[u8],
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO users.refresh_tokens (hash, session_id) VALUES ($1, $2)")
        .bind(hash)
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A presented refresh token with its session and account, locked for the transaction so that
/// concurrent refreshes with the same token are decided one after the other.
#[derive(Debug, FromRow)]
pub struct LockedToken {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub rotated_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub expires_at: OffsetDateTime,
    pub disabled: bool,
    pub roles: Vec<String>,
}

#[tracing::instrument(name = "db.sessions.lock_token", skip_all)]
pub async fn lock_token(conn: &mut PgConnection, hash: &[u8]) -> sqlx::Result<Option<LockedToken>> {
    sqlx::query_as(
        "SELECT t.session_id, s.user_id, t.rotated_at, s.revoked_at, s.expires_at, a.disabled, a.roles
         FROM users.refresh_tokens t
         JOIN users.sessions s ON s.id = t.session_id
         JOIN users.accounts a ON a.id = s.user_id
         WHERE t.hash = $1
         FOR UPDATE OF t, s",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await
}

/// Retires `old_hash`, stores `new_hash` and extends the session.
#[tracing::instrument(name = "db.sessions.rotate", skip_all)]
pub async fn rotate(
    conn: &mut PgConnection,
    session_id: Uuid,
    old_hash: &[u8],
    new_hash: &[u8],
    expires_at: OffsetDateTime,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE users.refresh_tokens SET rotated_at = now() WHERE hash = $1")
        .bind(old_hash)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE users.sessions SET last_used_at = now(), expires_at = $2 WHERE id = $1")
        .bind(session_id)
        .bind(expires_at)
        .execute(&mut *conn)
        .await?;
    insert_refresh(conn, session_id, new_hash).await
}

/// Active sessions of a user, newest first, at most `limit`.
#[tracing::instrument(name = "db.sessions.active", skip_all)]
pub async fn active(pool: &PgPool, user_id: Uuid, limit: usize) -> sqlx::Result<Vec<SessionRow>> {
    sqlx::query_as(
        "SELECT id, device_name, user_agent, ip, created_at, last_used_at FROM users.sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
         ORDER BY created_at DESC, id DESC
         LIMIT $2",
    )
    .bind(user_id)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
}

/// Ids of the user's unrevoked sessions that expired after `live_after` (or have not expired),
/// optionally only `only`: the ones whose tokens may still be in use.
#[tracing::instrument(name = "db.sessions.active_ids", skip_all)]
pub async fn active_ids(
    conn: &mut PgConnection,
    user_id: Uuid,
    only: Option<Uuid>,
    live_after: OffsetDateTime,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM users.sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $3
           AND ($2::uuid IS NULL OR id = $2)",
    )
    .bind(user_id)
    .bind(only)
    .bind(live_after)
    .fetch_all(conn)
    .await
}

/// Ids of the user's active sessions beyond the `keep` most recently used (signed in or
/// refreshed), least recently used last.
#[tracing::instrument(name = "db.sessions.beyond", skip_all)]
pub async fn beyond(
    conn: &mut PgConnection,
    user_id: Uuid,
    keep: usize,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM users.sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
         ORDER BY last_used_at DESC, created_at DESC, id DESC
         OFFSET $2",
    )
    .bind(user_id)
    .bind(i64::try_from(keep).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await
}

/// Marks sessions revoked; returns how many were still active.
#[tracing::instrument(name = "db.sessions.revoke", skip_all)]
pub async fn revoke(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE users.sessions SET revoked_at = now() WHERE id = ANY($1) AND revoked_at IS NULL",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
