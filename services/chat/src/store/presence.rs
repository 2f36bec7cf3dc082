//! Last-seen times (whether someone is online right now lives in the PRESENCE bucket).

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// Records that each of `users` was connected at the matching time of `times` (each user
/// once); a later time already stored is kept.
pub async fn touch_all(
    pool: &PgPool,
    users: &[Uuid],
    times: &[OffsetDateTime],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO chat.last_seen (user_id, last_seen) \
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[]) \
         ON CONFLICT (user_id) DO UPDATE \
         SET last_seen = GREATEST(chat.last_seen.last_seen, EXCLUDED.last_seen)",
    )
    .bind(users)
    .bind(times)
    .execute(pool)
    .await?;
    Ok(())
}

/// Last-seen times of `users` (absent for users never seen).
pub async fn last_seen(pool: &PgPool, users: &[Uuid]) -> sqlx::Result<Vec<(Uuid, OffsetDateTime)>> {
    sqlx::query_as("SELECT user_id, last_seen FROM chat.last_seen WHERE user_id = ANY($1)")
        .bind(users)
        .fetch_all(pool)
        .await
}
