//! Domain events on the `EVENTS` stream: the relay publishes them (one `Nats-Msg-Id` per event,
//! waiting for every ack), consumers read them through durable consumers shared by a worker
//! group, or through a per-instance feed of new events (cache invalidation).

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use futures::StreamExt;
use mesh_contracts::{Service, Stream};
use uuid::Uuid;

use crate::bus::Bus;

/// How many times an event is tried before it is dead-lettered.
pub const MAX_DELIVER: i64 = 5;

#[derive(Debug, thiserror::Error)]
#[error("events: {0}")]
pub struct EventsError(String);

fn fail(err: impl std::fmt::Display) -> EventsError {
    EventsError(err.to_string())
}

/// One event to publish.
pub struct OutgoingEvent {
    pub id: Uuid,
    pub service: Service,
    pub event_type: String,
    pub payload: Bytes,
}

/// A stream of events for one consumer.
pub struct EventFeed {
    messages: pull::Stream,
}

/// One event read from a feed.
pub struct EventDelivery {
    pub payload: Bytes,
    /// How many times it has been delivered (1 the first time).
    pub delivered: i64,
    message: Message,
}

impl Bus {
    /// Publishes `events` in order and waits until JetStream stored every one. A resend of an
    /// already stored event (same id, within the duplicate window) is acknowledged as such.
    pub async fn publish_events(&self, events: Vec<OutgoingEvent>) -> Result<(), EventsError> {
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
                    .map_err(fail)?,
            );
        }
        for ack in acks {
            ack.await.map_err(fail)?;
        }
        Ok(())
    }

    /// A durable consumer `name` over the events of `services`, shared by every instance that
    /// opens it (each event goes to one of them), delivering in order, one at a time.
    pub async fn event_consumer(
        &self,
        name: &str,
        services: &[Service],
    ) -> Result<EventFeed, EventsError> {
        let config = pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subjects: services
                .iter()
                .map(|s| self.prefix.service_events(*s))
                .collect(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1,
            max_deliver: MAX_DELIVER + 1,
            ..Default::default()
        };
        self.open_feed(config).await
    }

    /// Every event of `services` published from now on, for this instance alone.
    pub async fn event_watch(&self, services: &[Service]) -> Result<EventFeed, EventsError> {
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
        self.open_feed(config).await
    }

    /// How many events the stream holds (for tests and diagnostics).
    pub async fn events_stored(&self) -> Result<u64, EventsError> {
        let mut stream = self
            .jetstream
            .get_stream(self.prefix.stream(Stream::Events))
            .await
            .map_err(fail)?;
        Ok(stream.info().await.map_err(fail)?.state.messages)
    }

    async fn open_feed(&self, config: pull::Config) -> Result<EventFeed, EventsError> {
        let stream = self
            .jetstream
            .get_stream(self.prefix.stream(Stream::Events))
            .await
            .map_err(fail)?;
        let consumer = stream.create_consumer(config).await.map_err(fail)?;
        let messages = consumer
            .stream()
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(fail)?;
        Ok(EventFeed { messages })
    }
}

impl EventFeed {
    /// The next event; `None` when the feed ended (reopen it).
    pub async fn next(&mut self) -> Option<Result<EventDelivery, EventsError>> {
        let next = self.messages.next().await?;
        Some(next.map_err(fail).and_then(|message| {
            let delivered = message.info().map_err(fail)?.delivered;
            Ok(EventDelivery {
                payload: message.payload.clone(),
                delivered,
                message,
            })
        }))
    }
}

impl EventDelivery {
    /// Done with it.
    pub async fn ack(&self) -> Result<(), EventsError> {
        self.message.double_ack().await.map_err(fail)
    }

    /// Try again after `delay`.
    pub async fn retry_later(&self, delay: Duration) {
        let _ = self.message.ack_with(AckKind::Nak(Some(delay))).await;
    }

    /// Never deliver it again (after it was dead-lettered).
    pub async fn give_up(&self) {
        let _ = self.message.ack_with(AckKind::Term).await;
    }
}
