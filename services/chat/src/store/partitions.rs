//! Fenced partition ownership (`chat.partitions`): a new owner claims its partition with its
//! epoch and learns how far the stream is stored; every storing transaction first checks that
//! its owner's epoch is still current and records how far it got.

use std::sync::OnceLock;
use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// Ownership of one partition at one epoch (the owner's lease revision: a later owner always
/// has a higher one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub partition: u32,
    pub epoch: u64,
}

/// What a fenced step did.
#[derive(Debug)]
pub enum Fenced<T> {
    /// The epoch was current: the step took effect.
    Current(T),
    /// A later owner claimed the partition: nothing took effect.
    Stale,
}

/// What a fenced step over several partitions did.
#[derive(Debug)]
pub enum AllFenced<T> {
    /// Every epoch was current: the step took effect.
    Current(T),
    /// Later owners claimed these partitions: nothing took effect.
    Stale(Vec<Fence>),
}

/// Opens a transaction whose waits are bounded, in one round trip: a stale owner stopped
/// (SIGSTOP, a long GC-like pause) inside it releases its locks after 3 s (idle in
/// transaction), so a new owner never waits out its whole pause; a row lock is waited for at
/// most 2 s (the caller retries, with progress acks, rather than hangs); a statement runs at
/// most 5 s.
pub async fn begin_bounded(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    pool.begin_with(
        "BEGIN; SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '5s'; \
         SET LOCAL idle_in_transaction_session_timeout = '3s'",
    )
    .await
}

/// A claimed partition: how far its stream is stored (0: nothing yet) and the epoch of the
/// owner that claimed it before (whose consumer the new owner removes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub stored_through: u64,
    pub previous_epoch: Option<u64>,
}

/// Claims `fence.partition` for `fence.epoch`, or `Stale` when an owner with a later epoch
/// claimed it already. Waits at most the lock timeout for a stale owner's transaction.
pub async fn claim(pool: &PgPool, fence: Fence) -> sqlx::Result<Fenced<Claimed>> {
    let mut tx = begin_bounded(pool).await?;
    let prior: Option<(i64, i64)> = sqlx::query_as(
        "SELECT epoch, stream_seq FROM chat.partitions WHERE partition = $1 FOR UPDATE",
    )
    .bind(partition_key(fence))
    .fetch_optional(&mut *tx)
    .await?;
    if prior.is_some_and(|(epoch, _)| epoch > epoch_key(fence)) {
        return Ok(Fenced::Stale);
    }
    sqlx::query(
        "INSERT INTO chat.partitions (partition, epoch) VALUES ($1, $2) \
         ON CONFLICT (partition) DO UPDATE SET epoch = EXCLUDED.epoch",
    )
    .bind(partition_key(fence))
    .bind(epoch_key(fence))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let unsigned = |value: i64| u64::try_from(value).unwrap_or(0);
    Ok(Fenced::Current(Claimed {
        stored_through: prior.map_or(0, |(_, seq)| unsigned(seq)),
        previous_epoch: prior.map(|(epoch, _)| unsigned(epoch)),
    }))
}

/// How far each claimed partition is stored (its recorded stream sequence), as committed.
pub async fn stored_through_all(pool: &PgPool) -> sqlx::Result<Vec<(u32, u64)>> {
    let rows: Vec<(i32, i64)> = sqlx::query_as("SELECT partition, stream_seq FROM chat.partitions")
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(partition, seq)| {
            Some((u32::try_from(partition).ok()?, u64::try_from(seq).ok()?))
        })
        .collect())
}

/// One partition of a storing transaction: its owner's fence and the stream sequence to record
/// as stored (`None`: only check the fence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    pub fence: Fence,
    pub through: Option<u64>,
}

/// `advance` for every partition of a round's transaction, in one statement that locks their
/// rows in partition order (two transactions sharing partitions never deadlock). The fences a
/// later owner took, none when all were current: the caller must then roll back.
pub async fn advance_all(
    conn: &mut PgConnection,
    advances: &[Advance],
) -> sqlx::Result<Vec<Fence>> {
    let partitions: Vec<i32> = advances.iter().map(|a| partition_key(a.fence)).collect();
    let epochs: Vec<i64> = advances.iter().map(|a| epoch_key(a.fence)).collect();
    let throughs: Vec<i64> = advances
        .iter()
        .map(|a| {
            a.through
                .map_or(0, |seq| i64::try_from(seq).unwrap_or(i64::MAX))
        })
        .collect();
    let advanced: Vec<(i32, i64)> = sqlx::query_as(
        "WITH wanted AS ( \
           SELECT * FROM UNNEST($1::int4[], $2::int8[], $3::int8[]) AS w(partition, epoch, through)), \
         locked AS ( \
           SELECT p.partition FROM chat.partitions p JOIN wanted w ON w.partition = p.partition \
           ORDER BY p.partition FOR UPDATE OF p) \
         UPDATE chat.partitions p SET stream_seq = GREATEST(p.stream_seq, w.through) \
         FROM wanted w, locked l \
         WHERE p.partition = w.partition AND l.partition = p.partition AND p.epoch = w.epoch \
         RETURNING p.partition, p.epoch",
    )
    .bind(&partitions)
    .bind(&epochs)
    .bind(&throughs)
    .fetch_all(conn)
    .await?;
    hold_for_tests().await;
    Ok(advances
        .iter()
        .map(|a| a.fence)
        .filter(|fence| !advanced.contains(&(partition_key(*fence), epoch_key(*fence))))
        .collect())
}

/// Records, in a transaction of its own, that every partition of `advances` is decided
/// through its `through` (a round with nothing to store, or stored piece by piece). The fences
/// a later owner took, none when all were current; nothing is recorded unless all were.
pub async fn record_all(pool: &PgPool, advances: &[Advance]) -> sqlx::Result<Vec<Fence>> {
    let mut tx = begin_bounded(pool).await?;
    let stale = advance_all(&mut tx, advances).await?;
    if stale.is_empty() {
        tx.commit().await?;
    }
    Ok(stale)
}

fn partition_key(fence: Fence) -> i32 {
    i32::try_from(fence.partition).unwrap_or(i32::MAX)
}

fn epoch_key(fence: Fence) -> i64 {
    i64::try_from(fence.epoch).unwrap_or(i64::MAX)
}

/// Test hook: `MESH_CHAT_TEST_HOLD_TX_MS` keeps every storing transaction open this long
/// after it locked its partition row, so a fault test can stop a worker inside one. Unset
/// (always, outside tests) it costs nothing.
async fn hold_for_tests() {
    static HOLD: OnceLock<Option<Duration>> = OnceLock::new();
    let hold = HOLD.get_or_init(|| {
        std::env::var("MESH_CHAT_TEST_HOLD_TX_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
    });
    if let Some(hold) = hold {
        tokio::time::sleep(*hold).await;
    }
}
