//! Domain events on the `EVENTS` stream: the relay publishes them (one `Nats-Msg-Id` per event,
//! waiting for every ack), consumers read them through durable consumers shared by a worker
//! group, and instances that only drop cached entries watch them as they are published
//! (`event_watch`: a plain subscription, no JetStream consumer, so those roles need no rights
//! on the stream, whose consumers are chat's alone).

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::SelectAll;
use mesh_contracts::{Service, Stream};
use uuid::Uuid;

use crate::bus::Bus;
use crate::feed::{Feed, JetStreamError};

/// How often a watch with nothing to deliver checks that its connection stayed up.
const WATCH_CHECK: Duration = Duration::from_secs(1);
/// How long opening a watch waits for the server to confirm its subscriptions.
const WATCH_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Every event of `services` published from now on, for this instance alone, as long as
    /// the connection stays up: a core NATS subscription on the services' event subjects (a
    /// JetStream publish reaches core subscribers too). The server holds the subscription when
    /// this returns: NATS acknowledges no subscription, so a probe published into this
    /// connection's own inbox (`<inbox>.<id>.probe`) must come back first (the server handles a
    /// connection's subscriptions and publishes in order). A watch delivers nothing of what was
    /// published while the connection was down, so it ends once the connection was lost after
    /// it opened (see [`EventWatch::next`]): its caller opens another and starts its caches
    /// over.
    pub async fn event_watch(&self, services: &[Service]) -> Result<EventWatch, WatchError> {
        // Read before subscribing: a loss while opening ends the watch rather than going
        // unnoticed.
        let opened = self.disconnects();
        if !self.is_connected() {
            return Err(WatchError::Disconnected);
        }
        let mut messages = SelectAll::new();
        for service in services {
            let subject = self.prefix.service_events(*service);
            let subscription = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|err| WatchError::Subscribe {
                    subject,
                    reason: err.to_string(),
                })?;
            messages.push(subscription);
        }
        self.probe().await?;
        let mut check = tokio::time::interval(WATCH_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let watch = EventWatch {
            messages,
            bus: self.clone(),
            opened,
            check,
        };
        watch.intact()?;
        Ok(watch)
    }

    /// Publishes a probe into this connection's own inbox and waits until it comes back: every
    /// subscription made before is then in place on the server.
    async fn probe(&self) -> Result<(), WatchError> {
        let probe = format!("{}.probe", self.client.new_inbox());
        let failed = |err: &dyn std::fmt::Display| WatchError::Subscribe {
            subject: probe.clone(),
            reason: err.to_string(),
        };
        let mut echo = self
            .client
            .subscribe(probe.clone())
            .await
            .map_err(|err| failed(&err))?;
        self.client
            .publish(probe.clone(), Bytes::new())
            .await
            .map_err(|err| failed(&err))?;
        match tokio::time::timeout(WATCH_OPEN_TIMEOUT, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(WatchError::Disconnected),
            Err(_) => Err(WatchError::Unconfirmed),
        }
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

/// Why a watch of events cannot be opened, or ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The connection to NATS is down: nothing can be watched until it is back.
    #[error("the NATS connection is down")]
    Disconnected,
    /// The connection was lost since the watch opened: events published meanwhile were not
    /// delivered.
    #[error("the NATS connection was lost since the watch opened; events may have been missed")]
    ConnectionLost,
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe { subject: String, reason: String },
    /// The server did not echo the watch's probe in time (the connection is failing, or the
    /// login may not publish into its own inbox's `*.probe` subjects).
    #[error("the NATS server did not confirm the watch's subscriptions in time")]
    Unconfirmed,
}

/// A watch of the events of some services (`Bus::event_watch`).
pub struct EventWatch {
    messages: SelectAll<async_nats::Subscriber>,
    bus: Bus,
    /// The bus's count of lost connections when the watch opened.
    opened: u64,
    /// Wakes a watch with nothing to deliver, so a quiet one notices a lost connection too.
    check: tokio::time::Interval,
}

/// One event a watch delivered.
#[derive(Debug, Clone)]
pub struct WatchedEvent {
    /// The subject it was published to (`<p>.evt.<service>.<event>`).
    pub subject: String,
    /// The event envelope, as the relay published it.
    pub payload: Bytes,
}

impl EventWatch {
    /// The next event. An error once the connection was lost since the watch opened (or is
    /// down now): events may have been missed, so open another watch and drop what the missed
    /// events could have made stale. `None` when the connection was closed. Checked before
    /// each event is handed out and every second while none arrives; cancel-safe.
    pub async fn next(&mut self) -> Option<Result<WatchedEvent, WatchError>> {
        loop {
            if let Err(err) = self.intact() {
                return Some(Err(err));
            }
            tokio::select! {
                message = self.messages.next() => {
                    let message = message?;
                    // Delivered after a reconnection the watch has not noticed yet: the
                    // events before it may be missing.
                    if let Err(err) = self.intact() {
                        return Some(Err(err));
                    }
                    return Some(Ok(WatchedEvent {
                        subject: message.subject.to_string(),
                        payload: message.payload,
                    }));
                }
                _ = self.check.tick() => {}
            }
        }
    }

    /// Whether the connection stayed up since the watch opened.
    fn intact(&self) -> Result<(), WatchError> {
        if self.bus.disconnects() != self.opened || !self.bus.is_connected() {
            return Err(WatchError::ConnectionLost);
        }
        Ok(())
    }
}
