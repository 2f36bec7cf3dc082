//! Consuming domain events: a durable consumer per worker group, one event at a time, with
//! bounded retries; an event that still fails is written to `<schema>.dead_letters` and skipped,
//! so it never blocks the events behind it. Handlers remember processed event ids with
//! `first_time` in the transaction of their effect, so a redelivery has no second effect.

use std::future::Future;
use std::time::Duration;

use crate::stop::pause;
use mesh_contracts::Service;
use mesh_contracts::events::EventEnvelope;
use mesh_nats::{Bus, Delivery, MAX_DELIVER};
use mesh_observability::metrics::{EVENTS_CONSUMED, EVENTS_REDELIVERED};
use mesh_observability::outage::Outage;
use mesh_observability::{outage_failed, outage_over};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// Why a handler did not finish an event.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        Self(format!("database: {err}"))
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(err: serde_json::Error) -> Self {
        Self(format!("payload: {err}"))
    }
}

/// Records that `consumer` processed `event` in `schema`; false when it already had (the
/// caller then skips the effect).
pub async fn first_time(
    conn: &mut PgConnection,
    schema: &'static str,
    consumer: &str,
    event: Uuid,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.processed_events (consumer, event_id) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING"
    )))
    .bind(consumer)
    .bind(event)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Where a consumer runs: its name, the services whose events it reads, and the schema holding
/// its `processed_events` and `dead_letters`.
#[derive(Clone)]
pub struct Consumer {
    /// The durable consumer's name (`mesh_contracts::Consumer::name`).
    pub name: String,
    pub services: &'static [Service],
    pub schema: &'static str,
    pub pool: PgPool,
}

/// Runs `handle` over every event until `stop`, reopening the feed when it breaks.
pub async fn consume<H, Fut>(bus: Bus, consumer: Consumer, stop: CancellationToken, handle: H)
where
    H: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    for outcome in ["ok", "retry", "dead_lettered"] {
        EVENTS_CONSUMED.with_label_values(&[consumer.name.as_str(), outcome]);
    }
    let mut outage = Outage::default();
    loop {
        // Without NATS, opening waits out its timeout: told to stop, stop now.
        let Some(opened) = stop
            .run_until_cancelled(bus.event_consumer(consumer.name.as_str(), consumer.services))
            .await
        else {
            return;
        };
        let mut feed = match opened {
            Ok(feed) => feed,
            Err(err) => {
                outage_failed!(outage, consumer = consumer.name.as_str(), error = %err, "cannot open the event feed");
                if pause(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        outage_over!(
            outage,
            consumer = consumer.name.as_str(),
            "event feed open again"
        );
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = feed.next() => next,
            };
            match next {
                Some(Ok(delivery)) => one(&consumer, &delivery, &handle).await,
                Some(Err(err)) => {
                    outage_failed!(outage, consumer = consumer.name.as_str(), error = %err, "event feed failed");
                    break;
                }
                None => break,
            }
        }
        if pause(&stop, Duration::from_millis(300)).await {
            return;
        }
    }
}

async fn one<H, Fut>(consumer: &Consumer, delivery: &Delivery, handle: &H)
where
    H: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let count = |outcome: &str| {
        EVENTS_CONSUMED
            .with_label_values(&[consumer.name.as_str(), outcome])
            .inc();
    };
    if delivery.delivered > 1 {
        EVENTS_REDELIVERED
            .with_label_values(&[consumer.name.as_str()])
            .inc();
    }
    let span = tracing::info_span!(
        parent: None,
        "event.process",
        otel.name = format!("process {}", consumer.name),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.consumer.group.name = consumer.name.as_str(),
        mesh.service = consumer.schema,
        trace_id = tracing::field::Empty,
    );
    mesh_observability::spans::record_trace_id(&span);
    let result = match serde_json::from_slice::<EventEnvelope>(&delivery.payload) {
        Ok(envelope) => handle(envelope).instrument(span.clone()).await,
        Err(err) => Err(HandlerError::from(err)),
    };
    if result.is_err() {
        mesh_observability::spans::fail(&span, "event handler failed");
    }
    match result {
        Ok(()) => {
            count("ok");
            if let Err(err) = delivery.ack().await {
                tracing::warn!(consumer = consumer.name.as_str(), error = %err, "event ack failed");
            }
        }
        Err(err) if delivery.delivered >= MAX_DELIVER => {
            tracing::error!(consumer = consumer.name.as_str(), error = %err, "event dead-lettered");
            match dead_letter(consumer, &delivery.payload, &err.0).await {
                Ok(()) => {
                    count("dead_lettered");
                    delivery.give_up().await;
                }
                Err(db) => {
                    tracing::error!(error = %db, "cannot write the dead letter; retrying");
                    delivery.retry_later(Duration::from_secs(1)).await;
                }
            }
        }
        Err(err) => {
            count("retry");
            tracing::warn!(consumer = consumer.name.as_str(), error = %err, "event failed; retrying");
            let delay =
                Duration::from_millis(100 * 2u64.pow(delivery.delivered.clamp(1, 6) as u32));
            delivery.retry_later(delay).await;
        }
    }
}

async fn dead_letter(consumer: &Consumer, payload: &[u8], error: &str) -> sqlx::Result<()> {
    crate::dead_letter::write(
        &consumer.pool,
        consumer.schema,
        consumer.name.as_str(),
        payload,
        error,
    )
    .await
}
