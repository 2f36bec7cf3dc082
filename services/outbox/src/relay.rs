//! The outbox relay of one service schema. One relay per schema is active at a time (a
//! session advisory lock held on a dedicated connection); it wakes on the schema's NOTIFY
//! channel or on a poll timer, publishes unsent rows in order (`Nats-Msg-Id` = row id), waits
//! for every JetStream ack, and only then marks the rows sent. The order is the rows' `seq`,
//! drawn when each row was inserted: a writer inserts an aggregate's event while holding that
//! aggregate's lock until it commits, so one aggregate's events go out in commit order.
//! (`created_at`, when the writing transaction began, is not that order: a transaction that
//! began first may take the lock and commit last.) A relay that dies between
//! publishing and marking republishes the same ids, which JetStream drops as duplicates and
//! consumers recognise by id.

use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_contracts::Service;
use mesh_contracts::events::{EVENT_VERSION, EventEnvelope};
use mesh_nats::{Bus, OutgoingEvent};
use mesh_observability::metrics::{
    OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_PUBLISH_DURATION, OUTBOX_RELAYED,
};
use mesh_service_kit::pause;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::OutboxConfig;

/// One service's outbox.
#[derive(Clone)]
pub struct Source {
    pub service: Service,
    /// The schema holding `outbox` (`users`, `social`, `chat`).
    pub schema: &'static str,
    /// Its database, for the lock connection and the listener.
    pub url: String,
    pub pool: PgPool,
}

/// How often the sent rows past retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    aggregate: Uuid,
    event_type: String,
    payload: serde_json::Value,
    created_at: OffsetDateTime,
}

/// The advisory-lock key of a schema's relay.
fn lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("mesh-outbox-relay:{schema}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

/// Relays one step: up to `batch` unsent rows in `seq` order (per aggregate, the order their
/// transactions committed). Returns how many were relayed.
pub async fn relay_once(bus: &Bus, source: &Source, batch: i64) -> anyhow::Result<usize> {
    let schema = source.schema;
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, aggregate, event_type, payload, created_at FROM {schema}.outbox \
         WHERE sent_at IS NULL ORDER BY seq LIMIT $1"
    )))
    .bind(batch)
    .fetch_all(&source.pool)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let span = tracing::info_span!(
        parent: None,
        "outbox.relay",
        otel.name = format!("send {schema} outbox"),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.batch.message_count = rows.len(),
        mesh.service = "outbox",
        trace_id = tracing::field::Empty,
    );
    mesh_observability::spans::record_trace_id(&span);
    publish_rows(bus, source, rows).instrument(span).await
}

/// Publishes `rows` as events, waits for every ack, then marks them sent.
async fn publish_rows(bus: &Bus, source: &Source, rows: Vec<Row>) -> anyhow::Result<usize> {
    let schema = source.schema;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let events = rows
        .into_iter()
        .map(|row| {
            let envelope = EventEnvelope {
                id: row.id,
                service: source.service.as_str().to_owned(),
                event_type: row.event_type.clone(),
                version: EVENT_VERSION,
                aggregate: row.aggregate,
                occurred_at: row.created_at,
                payload: row.payload,
            };
            OutgoingEvent {
                id: row.id,
                service: source.service,
                event_type: row.event_type,
                payload: Bytes::from(serde_json::to_vec(&envelope).expect("envelopes serialize")),
            }
        })
        .collect();
    let started = Instant::now();
    bus.publish_events(events).await?;
    OUTBOX_PUBLISH_DURATION
        .with_label_values(&[schema])
        .observe(started.elapsed().as_secs_f64());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {schema}.outbox SET sent_at = now() WHERE id = ANY($1)"
    )))
    .bind(&ids)
    .execute(&source.pool)
    .await?;
    OUTBOX_RELAYED
        .with_label_values(&[schema])
        .inc_by(ids.len() as u64);
    Ok(ids.len())
}

/// Updates the backlog gauges of a schema: how many rows are unsent, and how long ago the
/// oldest of them was written (`created_at`; the lowest `seq` may have begun later).
pub async fn measure(source: &Source) -> anyhow::Result<(i64, i64)> {
    let schema = source.schema;
    let (count, age): (i64, Option<f64>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 \
         FROM {schema}.outbox WHERE sent_at IS NULL"
    )))
    .fetch_one(&source.pool)
    .await?;
    let age = age.unwrap_or(0.0).max(0.0) as i64;
    OUTBOX_BACKLOG.with_label_values(&[schema]).set(count);
    OUTBOX_OLDEST_AGE.with_label_values(&[schema]).set(age);
    Ok((count, age))
}

async fn prune(source: &Source, retention: Duration) -> anyhow::Result<()> {
    let schema = source.schema;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {schema}.outbox WHERE sent_at < now() - make_interval(secs => $1)"
    )))
    .bind(retention.as_secs_f64())
    .execute(&source.pool)
    .await?;
    Ok(())
}

/// Relays `source` until `stop`: waits to become the schema's relay, then relays.
pub async fn run(bus: Bus, source: Source, config: OutboxConfig, stop: CancellationToken) {
    loop {
        let relaying = lead(&bus, &source, &config, &stop);
        match relaying
            .instrument(mesh_observability::spans::background("outbox"))
            .await
        {
            Ok(()) => return,
            Err(err) => tracing::warn!(schema = source.schema, error = %err, "outbox relay failed"),
        }
        if pause(&stop, config.poll_interval).await {
            return;
        }
    }
}

/// Holds the schema's lock (waiting for it) and relays while holding it. `Ok` when stopped.
async fn lead(
    bus: &Bus,
    source: &Source,
    config: &OutboxConfig,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut lock = PgConnection::connect(&source.url).await?;
    loop {
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(source.schema))
            .fetch_one(&mut lock)
            .await?;
        if held {
            break;
        }
        if pause(stop, config.poll_interval).await {
            return Ok(());
        }
    }
    tracing::info!(schema = source.schema, "outbox relay active");
    let mut listener = PgListener::connect(&source.url).await?;
    listener
        .listen(&format!("{}_outbox", source.schema))
        .await?;
    let mut pruned = Instant::now();
    loop {
        let relayed = relay_once(bus, source, config.batch).await?;
        measure(source).await?;
        if pruned.elapsed() > PRUNE_EVERY {
            prune(source, config.retention).await?;
            pruned = Instant::now();
        }
        if relayed as i64 >= config.batch {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            notified = listener.recv() => { notified?; }
            _ = tokio::time::sleep(config.poll_interval) => {
                // The lock lives as long as its connection; make sure it still does.
                sqlx::query("SELECT 1").execute(&mut lock).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schema_has_its_own_lock() {
        assert_ne!(lock_key("users"), lock_key("social"));
        assert_eq!(lock_key("chat"), lock_key("chat"));
    }
}
