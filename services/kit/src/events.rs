//! Consuming domain events: a durable consumer per worker group, one event at a time. An event
//! whose handler fails for what it holds (a payload it cannot read, a row it contradicts) is
//! tried a few times, then written to `<schema>.dead_letters` and skipped, so it never blocks
//! the events behind it. One that fails because something it needs is away (Postgres, a
//! service over NATS) is tried again for as long as that lasts, never dead-lettered or dropped:
//! every event behind it would meet the same outage. Handlers remember processed event ids
//! with `first_time` in the transaction of their effect, so a redelivery has no second effect.

use std::future::Future;
use std::time::Duration;

use crate::fault::is_transient;
use crate::stop::pause;
use mesh_contracts::events::EventEnvelope;
use mesh_contracts::{ErrorCode, Service, ServiceError};
use mesh_nats::{Bus, Delivery, MAX_DELIVER};
use mesh_observability::metrics::{EVENTS_CONSUMED, EVENTS_REDELIVERED};
use mesh_observability::outage::Outage;
use mesh_observability::{outage_failed, outage_over};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// Why a handler did not finish an event, and whether trying again later may succeed.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct HandlerError {
    pub reason: String,
    /// Something the handler needs is away (a lost connection, a timeout, a service that does
    /// not answer): the same event may pass once it is back.
    pub transient: bool,
}

impl HandlerError {
    /// A failure that the same event meets again however often it is tried.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            transient: false,
        }
    }

    /// A failure for now: something the handler needs is away.
    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            transient: true,
        }
    }

    /// A service's refusal: transient when the service is away or overloaded; permanent
    /// otherwise, a timeout included (a call that always overruns its deadline must not hold
    /// every event behind it for ever; it is dead-lettered after its tries).
    pub fn from_service(what: &str, err: &ServiceError) -> Self {
        Self {
            reason: format!("{what}: {err}"),
            transient: matches!(
                err.code,
                ErrorCode::ServiceUnavailable | ErrorCode::Overloaded
            ),
        }
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        Self {
            transient: is_transient(&err),
            reason: format!("database: {err}"),
        }
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(err: serde_json::Error) -> Self {
        Self::permanent(format!("payload: {err}"))
    }
}

/// Waits between two tries of an event that failed for now: doubling from 200 ms up to this.
const MOST_TRANSIENT_PAUSE: Duration = Duration::from_secs(2);

fn transient_pause(tries: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << tries.clamp(1, 5))).min(MOST_TRANSIENT_PAUSE)
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
                Some(Ok(delivery)) => one(&consumer, &delivery, &handle, &mut outage, &stop).await,
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

/// Handles one delivery: acknowledged once handled; tried again while what it needs is away
/// (until `stop`, which also ends an attempt under way: the event is then left
/// unacknowledged, for JetStream to deliver again); asked again later
/// when it failed for what it holds, and dead-lettered at the `MAX_DELIVER`th such delivery.
async fn one<H, Fut>(
    consumer: &Consumer,
    delivery: &Delivery,
    handle: &H,
    outage: &mut Outage,
    stop: &CancellationToken,
) where
    H: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let name = consumer.name.as_str();
    if delivery.delivered > 1 {
        EVENTS_REDELIVERED.with_label_values(&[name]).inc();
    }
    let mut tries = 0;
    let err = loop {
        tries += 1;
        // Told to stop, drop the attempt (its transaction rolls back) and hand the event back:
        // `first_time` keeps its redelivery from a second effect.
        let Some(result) = stop
            .run_until_cancelled(attempt(consumer, delivery, handle))
            .await
        else {
            return hand_back(delivery).await;
        };
        match result {
            Ok(()) => {
                count(consumer, "ok");
                outage_over!(outage, consumer = name, "events are handled again");
                if let Err(err) = delivery.ack().await {
                    tracing::warn!(consumer = name, error = %err, "event ack failed");
                }
                return;
            }
            Err(err) if err.transient => {
                count(consumer, "retry");
                outage_failed!(outage, consumer = name, error = %err, "event failed for now; trying it again");
                // Still ours: JetStream must not hand it to another worker meanwhile.
                delivery.in_progress().await;
                if pause(stop, transient_pause(tries)).await {
                    return hand_back(delivery).await;
                }
            }
            Err(err) => break err,
        }
    };
    if delivery.delivered < MAX_DELIVER {
        count(consumer, "retry");
        tracing::warn!(consumer = name, error = %err, "event failed; retrying");
        let delay = Duration::from_millis(100 * 2u64.pow(delivery.delivered.clamp(1, 6) as u32));
        delivery.retry_later(delay).await;
        return;
    }
    tracing::error!(consumer = name, error = %err, "event dead-lettered");
    let mut tries = 0;
    loop {
        tries += 1;
        match dead_letter(consumer, &delivery.payload, &err.reason).await {
            Ok(()) => {
                count(consumer, "dead_lettered");
                delivery.give_up().await;
                return;
            }
            Err(db) => {
                outage_failed!(outage, consumer = name, error = %db, "cannot write the dead letter; trying again");
                delivery.in_progress().await;
                if pause(stop, transient_pause(tries)).await {
                    return hand_back(delivery).await;
                }
            }
        }
    }
}

/// A stopping worker gives the event back at once, so another worker takes it now rather than
/// after the ack timer its last `in_progress` reset (30 s; one event in flight per consumer).
async fn hand_back(delivery: &Delivery) {
    delivery.retry_later(Duration::ZERO).await;
}

fn count(consumer: &Consumer, outcome: &str) {
    EVENTS_CONSUMED
        .with_label_values(&[consumer.name.as_str(), outcome])
        .inc();
}

/// Runs the handler once over the delivery, in a span of its own.
async fn attempt<H, Fut>(
    consumer: &Consumer,
    delivery: &Delivery,
    handle: &H,
) -> Result<(), HandlerError>
where
    H: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
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
    result
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_away_is_tried_again_and_what_the_event_holds_is_not() {
        assert!(HandlerError::from(sqlx::Error::PoolTimedOut).transient);
        assert!(HandlerError::from(sqlx::Error::PoolClosed).transient);
        assert!(!HandlerError::from(sqlx::Error::RowNotFound).transient);
        let unreadable = serde_json::from_str::<EventEnvelope>("{").unwrap_err();
        assert!(!HandlerError::from(unreadable).transient);
        let away = ServiceError::new(ErrorCode::ServiceUnavailable, "social is away");
        assert!(HandlerError::from_service("group managers", &away).transient);
        let slow = ServiceError::new(ErrorCode::Timeout, "social did not answer in time");
        assert!(!HandlerError::from_service("group managers", &slow).transient);
        let refused = ServiceError::new(ErrorCode::NotFound, "no such group");
        let refused = HandlerError::from_service("group managers", &refused);
        assert!(!refused.transient);
        assert!(refused.reason.starts_with("group managers: "));
    }

    #[test]
    fn tries_for_now_back_off_to_a_bound() {
        let pauses: Vec<u64> = (1..=8)
            .map(|tries| transient_pause(tries).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [200, 400, 800, 1600, 2000, 2000, 2000, 2000]);
    }
}
