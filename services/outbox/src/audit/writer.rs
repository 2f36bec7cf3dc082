//! The audit writer: reads the `AUDIT` stream in batches (up to 500 records), stores each
//! batch with one insert, then acknowledges it. A batch short of 500 with nothing more pending
//! lingers for `LINGER` to gather the records that follow, so that a trickle of requests costs
//! Postgres one commit per linger rather than one per request. A redelivered record is skipped by its id, so a
//! crash between insert and ack duplicates nothing. While Postgres fails the same batch is
//! retried (never acknowledged); a broken feed is opened again.

use std::time::Duration;

use mesh_contracts::audit::AuditRecord;
use mesh_nats::{Bus, Delivery, Feed, feed};
use mesh_observability::metrics::AUDIT_WRITTEN;
use mesh_observability::outage::Outage;
use mesh_observability::{outage_failed, outage_over};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::store;

/// Most records stored in one insert.
const BATCH: usize = 500;
/// How long a batch short of `BATCH` waits for more records before it is stored. Each commit
/// costs Postgres a WAL flush, so at 50 mutating requests a second this turns about 50
/// commits a second into 5; a record reaches the log at most this much later. Far below the
/// consumer's ack wait (30 s).
const LINGER: Duration = Duration::from_millis(200);

/// Waits that double from 250 ms up to 5 s, and start over after a success.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const LAST: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self(Self::FIRST)
    }

    /// Sleeps for the current delay, unless stopped first (then false).
    async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let slept = stop
            .run_until_cancelled(tokio::time::sleep(self.0))
            .await
            .is_some();
        self.0 = (self.0 * 2).min(Self::LAST);
        slept
    }
}

/// Consumes audit records and writes them in batches until `stop`.
pub async fn run_writer(bus: Bus, pool: PgPool, stop: CancellationToken) {
    let mut backoff = Backoff::new();
    let mut outage = Outage::default();
    loop {
        // Without NATS, opening waits out its timeout: told to stop, stop now.
        let Some(opened) = stop.run_until_cancelled(bus.audit_feed(BATCH)).await else {
            return;
        };
        match opened {
            Ok(mut feed) => {
                backoff = Backoff::new();
                outage_over!(outage, "audit feed open again");
                match consume(&mut feed, &pool, &stop).await {
                    Ok(()) => return,
                    Err(why) => {
                        outage_failed!(outage, reason = %why, "audit feed broke; reopening");
                    }
                }
            }
            Err(err) => outage_failed!(outage, error = %err, "cannot open the audit feed"),
        }
        if !backoff.wait(&stop).await {
            return;
        }
    }
}

/// Writes the feed's batches until `stop` (`Ok`) or until the feed fails or ends (`Err`).
async fn consume(feed: &mut Feed, pool: &PgPool, stop: &CancellationToken) -> Result<(), String> {
    loop {
        let Some(next) = stop.run_until_cancelled(feed.next_batch(BATCH)).await else {
            return Ok(());
        };
        let mut batch = next
            .map_err(|err| err.to_string())?
            .ok_or_else(|| "the feed ended".to_owned())?;
        // Only a trickle lingers: with records still pending on the server (a backlog being
        // drained), the next batch is full anyway.
        let topped = if should_linger(batch.len(), batch.last().map(|last| last.pending)) {
            // Stopped while lingering: the batch is stored all the same, then the writer ends.
            let _ = stop.run_until_cancelled(tokio::time::sleep(LINGER)).await;
            feed.top_up(&mut batch, BATCH)
        } else {
            Ok(())
        };
        if !store_batch(pool, &batch, stop).await {
            return Ok(());
        }
        feed::ack_all(&batch).await.map_err(|err| err.to_string())?;
        // A feed that failed while topping up is reopened once what was in hand is stored.
        topped.map_err(|err| err.to_string())?;
    }
}

/// Whether a batch of `len` records should wait `LINGER` for more: it is short of `BATCH`
/// and nothing more was pending on the server when its last record was delivered
/// (`last_pending`).
fn should_linger(len: usize, last_pending: Option<u64>) -> bool {
    len < BATCH && last_pending == Some(0)
}

/// Stores a batch, retrying while Postgres fails; false when stopped first (the batch is then
/// left unacknowledged, for another writer).
async fn store_batch(pool: &PgPool, batch: &[Delivery], stop: &CancellationToken) -> bool {
    let records = decode(batch);
    let mut backoff = Backoff::new();
    loop {
        match write(pool, &records).await {
            Ok(()) => return true,
            Err(err) => {
                tracing::warn!(error = %err, records = records.len(), "cannot store audit records; retrying")
            }
        }
        for delivery in batch {
            delivery.in_progress().await;
        }
        if !backoff.wait(stop).await {
            return false;
        }
    }
}

/// One step: stores `records` (those already stored are skipped) and counts the new ones.
async fn write(pool: &PgPool, records: &[AuditRecord]) -> sqlx::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let written = store::insert(pool, records).await?;
    AUDIT_WRITTEN.inc_by(written);
    Ok(())
}

/// The batch's records, bounded to fit the table; an undecodable one is logged and skipped
/// (acknowledged with the rest: retrying cannot fix it).
fn decode(batch: &[Delivery]) -> Vec<AuditRecord> {
    batch
        .iter()
        .filter_map(
            |delivery| match serde_json::from_slice::<AuditRecord>(&delivery.payload) {
                Ok(record) => Some(record.bounded()),
                Err(err) => {
                    tracing::warn!(error = %err, "undecodable audit record skipped");
                    None
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_short_batch_with_nothing_pending_lingers() {
        assert!(should_linger(1, Some(0)));
        assert!(should_linger(BATCH - 1, Some(0)));
        assert!(
            !should_linger(BATCH, Some(0)),
            "a full batch is stored at once"
        );
        assert!(
            !should_linger(3, Some(40)),
            "a backlog is drained without lingering"
        );
        assert!(!should_linger(0, None));
    }
}
