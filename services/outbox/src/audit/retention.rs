//! The audit log's retention: records older than `MESH_AUDIT_RETENTION` are deleted when the
//! outbox role starts and every hour after, a bounded batch per statement so no delete holds
//! the table long.

use std::time::Duration;

use mesh_observability::metrics::AUDIT_PRUNED;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often the old records are looked for.
const EVERY: Duration = Duration::from_secs(3600);
/// The most records one statement deletes.
const BATCH: i64 = 5_000;

/// Deletes old records now and every hour until `stop`. A failure is logged and tried again at
/// the next hour.
pub async fn run_pruner(pool: PgPool, retention: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = prune(&pool, retention).await {
            tracing::warn!(error = %err, "cannot prune the audit log; trying again in an hour");
        }
    }
}

/// Deletes the records older than `retention`; how many.
pub async fn prune(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM audit.records WHERE id IN (SELECT id FROM audit.records \
             WHERE at < now() - make_interval(secs => $1) ORDER BY at LIMIT $2)",
        )
        .bind(retention.as_secs_f64())
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        AUDIT_PRUNED.inc_by(done);
        deleted += done;
        if done < BATCH as u64 {
            return Ok(deleted);
        }
    }
}
