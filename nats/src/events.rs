//! Domain events on the `EVENTS` stream: the relay publishes them (one `Nats-Msg-Id` per event,
//! waiting for every ack), consumers read them through durable consumers shared by a worker
//! group, or through a per-instance feed of new events (cache invalidation).

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use bytes::Bytes;
use mesh_contracts::{Service, Stream};
use uuid::Uuid;

use crate::bus::Bus;
use crate::feed::{Feed, JetStreamError};

/// How many deliveries of an event that fails for what it holds are tried before it is
/// dead-lettered (failures while something it needs is away are not counted).
pub const MAX_DELIVER: i64 = 5;

fn publish_failed(err: impl std::fmt::Display) -> JetStreamError {
    JetStreamError::Publish(err.to_string())
}

/// One event to publish.
pub struct OutgoingEvent {
    pub id: Uuid,
    pub service: Service,
    pub event_type: String,
    pub payload: Bytes,
}

impl Bus {
    /// Publishes `events` in order and waits until JetStream stored every one. A resend of an
    /// already stored event (same id, within the duplicate window) is acknowledged as such.
    pub async fn publish_events(&self, events: Vec<OutgoingEvent>) -> Result<(), JetStreamError> {
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .message_id(event.id.to_string())
                .payload(event.payload);
            let subject = self.prefix.event(event.service, &event.event_type);
            acks.push(
                self.jetstream
                    .send_publish(subject, publish)
                    .await
                    .map_err(publish_failed)?,
            );
        }
        for ack in acks {
            ack.await.map_err(publish_failed)?;
        }
        Ok(())
    }

    /// A durable consumer `name` over the events of `services`, shared by every instance that
    /// opens it (each event goes to one of them), delivering in order, one at a time.
    pub async fn event_consumer(
        &self,
        name: &str,
        services: &[Service],
    ) -> Result<Feed, JetStreamError> {
        let config = pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subjects: services
                .iter()
                .map(|s| self.prefix.service_events(*s))
                .collect(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1,
            // No bound of JetStream's: the consumer dead-letters an event that keeps failing
            // for what it holds, and keeps trying one that fails while Postgres or a service
            // is away. A bound would drop such an event, unrecorded, after a few restarts of
            // the worker during an outage.
            max_deliver: -1,
            ..Default::default()
        };
        self.open_feed(Stream::Events, config, 1).await
    }

    /// Every event of `services` published from now on, for this instance alone.
    pub async fn event_watch(&self, services: &[Service]) -> Result<Feed, JetStreamError> {
        let config = pull::Config {
            filter_subjects: services
                .iter()
                .map(|s| self.prefix.service_events(*s))
                .collect(),
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::New,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        };
        self.open_feed(Stream::Events, config, 64).await
    }

    /// How many events the stream holds (for tests and diagnostics).
    pub async fn events_stored(&self) -> Result<u64, JetStreamError> {
        let mut stream = self.get_stream(Stream::Events).await?;
        let info = stream.info().await.map_err(|err| JetStreamError::Stream {
            stream: self.prefix.stream(Stream::Events),
            reason: err.to_string(),
        })?;
        Ok(info.state.messages)
    }
}
