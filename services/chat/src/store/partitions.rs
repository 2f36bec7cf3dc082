//! Fenced partition ownership (`chat.partitions`): a new owner claims its partition with its
//! epoch and learns how far the stream is stored; every storing transaction first checks that
//! its owner's epoch, and the incarnation of the stream and bucket it claimed in, are still
//! current and records how far it got. A claim that finds the row referring to a stream or
//! bucket that no longer exists resets it (`domain::incarnation` decides).

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use crate::domain::incarnation::{Bid, Decision, Incarnation, Present, Recorded, Stale, decide};

/// Ownership of one partition at one epoch (the owner's lease revision: a later owner of the
/// same bucket always has a higher one), in the stream and bucket it was claimed in. Revisions
/// start again at 1 in a bucket made anew, so the epoch alone could equal a stale owner's of
/// the bucket before; the incarnation tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub partition: u32,
    pub epoch: u64,
    pub incarnation: Incarnation,
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

/// A claimed partition: its owner's fence, how far its stream is stored (0: nothing yet, or
/// the whole stream, when what was recorded referred to a stream that no longer exists), the
/// epoch of the owner that claimed it before (whose consumer the new owner removes), and what
/// the claim found and decided (a reset is logged and counted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub fence: Fence,
    pub stored_through: u64,
    pub previous_epoch: Option<u64>,
    pub recorded: Recorded,
    pub decision: Decision,
}

/// What a claim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Current(Claimed),
    /// Nothing was claimed.
    Stale(Stale),
}

/// Claims `partition` for `bid`, or `Stale` when an owner with a later epoch claimed it
/// already or the bid's lease bucket no longer exists. `present` reads JetStream (the ingest
/// stream's and the lease bucket's creation times and last sequences); it is called while the
/// row is locked, so no owner records a position or claims meanwhile and every position and
/// epoch recorded is at most what it reads (its calls must be bounded: the transaction ends
/// itself after 3 s idle). A row referring to a stream or bucket that no longer exists is
/// reset to the present ones, the bid's epoch and (with its stream) position 0, in this
/// transaction. Waits at most the lock timeout for a stale owner's transaction.
pub async fn claim<F, Fut>(
    pool: &PgPool,
    partition: u32,
    bid: Bid,
    present: F,
) -> anyhow::Result<Claim>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<Present>>,
{
    let key = i32::try_from(partition).unwrap_or(i32::MAX);
    let mut tx = begin_bounded(pool).await?;
    // A partition never claimed gets a placeholder first (epoch 0, nothing stored, incarnation
    // unknown: adopted below), so that concurrent first claims are ordered by its row lock as
    // later ones are, instead of the last insert winning whatever its epoch.
    sqlx::query(
        "INSERT INTO chat.partitions (partition, epoch) VALUES ($1, 0) \
         ON CONFLICT (partition) DO NOTHING",
    )
    .bind(key)
    .execute(&mut *tx)
    .await?;
    let (epoch, stream_seq, stream_created, leases_created): (
        i64,
        i64,
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
    ) = sqlx::query_as(
        "SELECT epoch, stream_seq, stream_created, leases_created FROM chat.partitions \
         WHERE partition = $1 FOR UPDATE",
    )
    .bind(key)
    .fetch_one(&mut *tx)
    .await?;
    let unsigned = |value: i64| u64::try_from(value).unwrap_or(0);
    let recorded = Recorded {
        epoch: unsigned(epoch),
        stream_seq: unsigned(stream_seq),
        incarnation: stream_created
            .zip(leases_created)
            .map(|(stream, leases)| Incarnation { stream, leases }),
    };
    let present = present().await?;
    let decision = decide(&recorded, bid, &present);
    if let Decision::Stale(why) = decision {
        // Rolled back: the placeholder too.
        return Ok(Claim::Stale(why));
    }
    let stored_through = decision.resume_after(&recorded);
    let fence = Fence {
        partition,
        epoch: bid.epoch,
        incarnation: present.incarnation,
    };
    sqlx::query(
        "UPDATE chat.partitions \
         SET epoch = $2, stream_seq = $3, stream_created = $4, leases_created = $5 \
         WHERE partition = $1",
    )
    .bind(key)
    .bind(epoch_key(fence))
    .bind(i64::try_from(stored_through).unwrap_or(i64::MAX))
    .bind(present.incarnation.stream)
    .bind(present.incarnation.leases)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Claim::Current(Claimed {
        fence,
        stored_through,
        // Epoch 0 is the placeholder's: no owner had a consumer.
        previous_epoch: (recorded.epoch > 0).then_some(recorded.epoch),
        recorded,
        decision,
    }))
}

/// How far each claimed partition is stored (its recorded stream sequence), as committed, and
/// the creation time of the ingest stream that sequence belongs to (`None`: unknown, a row
/// not claimed since incarnations are recorded).
pub async fn stored_through_all(
    pool: &PgPool,
) -> sqlx::Result<Vec<(u32, u64, Option<OffsetDateTime>)>> {
    let rows: Vec<(i32, i64, Option<OffsetDateTime>)> =
        sqlx::query_as("SELECT partition, stream_seq, stream_created FROM chat.partitions")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(partition, seq, created)| {
            Some((
                u32::try_from(partition).ok()?,
                u64::try_from(seq).ok()?,
                created,
            ))
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
/// rows in partition order (two transactions sharing partitions never deadlock). A fence is
/// current while its row holds its epoch and its incarnation: a claim that reset the row to a
/// stream and bucket made anew fences out every owner of the old ones, even one whose epoch
/// the new bucket's revisions reach again. The fences a later owner took, none when all were
/// current: the caller must then roll back.
pub async fn advance_all(
    conn: &mut PgConnection,
    advances: &[Advance],
) -> sqlx::Result<Vec<Fence>> {
    let partitions: Vec<i32> = advances.iter().map(|a| partition_key(a.fence)).collect();
    let epochs: Vec<i64> = advances.iter().map(|a| epoch_key(a.fence)).collect();
    let streams: Vec<OffsetDateTime> = advances
        .iter()
        .map(|a| a.fence.incarnation.stream)
        .collect();
    let buckets: Vec<OffsetDateTime> = advances
        .iter()
        .map(|a| a.fence.incarnation.leases)
        .collect();
    let throughs: Vec<i64> = advances
        .iter()
        .map(|a| {
            a.through
                .map_or(0, |seq| i64::try_from(seq).unwrap_or(i64::MAX))
        })
        .collect();
    let advanced: Vec<(i32, i64)> = sqlx::query_as(
        "WITH wanted AS ( \
           SELECT * FROM UNNEST($1::int4[], $2::int8[], $3::int8[], $4::timestamptz[], \
             $5::timestamptz[]) AS w(partition, epoch, through, stream_created, leases_created)), \
         locked AS ( \
           SELECT p.partition FROM chat.partitions p JOIN wanted w ON w.partition = p.partition \
           ORDER BY p.partition FOR UPDATE OF p) \
         UPDATE chat.partitions p SET stream_seq = GREATEST(p.stream_seq, w.through) \
         FROM wanted w, locked l \
         WHERE p.partition = w.partition AND l.partition = p.partition AND p.epoch = w.epoch \
           AND p.stream_created = w.stream_created AND p.leases_created = w.leases_created \
         RETURNING p.partition, p.epoch",
    )
    .bind(&partitions)
    .bind(&epochs)
    .bind(&throughs)
    .bind(&streams)
    .bind(&buckets)
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
