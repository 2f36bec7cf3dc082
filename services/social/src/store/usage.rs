//! Social's quotas, checked in the transaction of the effect they limit: friend requests per
//! day (charged only when a request row is created, so a retry answered `duplicate_request`
//! is not charged), groups owned (counted under a per-owner lock) and group size (a group's
//! `max_members` may not exceed it).

use mesh_contracts::usage::Metric;
use mesh_service_kit::Fault;
use mesh_service_kit::quota;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::SCHEMA;

/// Charges one friend request to `sender` today, or refuses it with `quota_exceeded`.
pub async fn charge_friend_request(conn: &mut PgConnection, sender: Uuid) -> Result<(), Fault> {
    let metric = Metric::FriendRequestsPerDay;
    let charge = quota::Charge {
        user: sender,
        wanted: 1,
    };
    let got = quota::charge_today(conn, SCHEMA, metric, &[charge]).await?;
    match got.first() {
        Some(got) if got.granted == 0 => Err(quota::exceeded(metric, got.limit).into()),
        _ => Ok(()),
    }
}

/// Admits a new group of `owner` with room for `max_members`, or refuses it with
/// `quota_exceeded`. Holds a lock on the owner until the transaction ends, so two creations
/// cannot both see room for one more.
pub async fn admit_group(
    conn: &mut PgConnection,
    owner: Uuid,
    max_members: u32,
) -> Result<(), Fault> {
    let (_, limits) = quota::setting(&mut *conn, SCHEMA, owner).await?;
    if max_members > limits.group_size {
        return Err(quota::exceeded(Metric::GroupSize, limits.group_size).into());
    }
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('social.owner.' || $1::text, 0))")
        .bind(owner)
        .execute(&mut *conn)
        .await?;
    let owned = owned_groups(&mut *conn, owner).await?;
    if owned >= u64::from(limits.groups_owned) {
        return Err(quota::exceeded(Metric::GroupsOwned, limits.groups_owned).into());
    }
    Ok(())
}

async fn owned_groups(conn: impl sqlx::PgExecutor<'_>, owner: Uuid) -> sqlx::Result<u64> {
    let (count, _): (i64, Option<i32>) = owned(conn, owner).await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// How many groups `owner` owns and the largest one's member count.
async fn owned(conn: impl sqlx::PgExecutor<'_>, owner: Uuid) -> sqlx::Result<(i64, Option<i32>)> {
    sqlx::query_as("SELECT count(*), max(member_count) FROM social.groups WHERE owner_id = $1")
        .bind(owner)
        .fetch_one(conn)
        .await
}

/// What `user` has used of each of social's metrics.
pub async fn used(pool: &PgPool, user: Uuid) -> sqlx::Result<Vec<(Metric, u64)>> {
    let requests = quota::used_today(pool, SCHEMA, user, Metric::FriendRequestsPerDay).await?;
    let (groups, largest) = owned(pool, user).await?;
    Ok(vec![
        (Metric::FriendRequestsPerDay, requests),
        (Metric::GroupsOwned, u64::try_from(groups).unwrap_or(0)),
        (
            Metric::GroupSize,
            u64::try_from(largest.unwrap_or(0)).unwrap_or(0),
        ),
    ])
}
