//! The one way the mesh reads JetStream: a pull consumer opened on a stream, read one message
//! at a time or in batches (wait for one, then take what is already buffered), with typed
//! errors and the acknowledgements every reader needs.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use mesh_contracts::Stream;

use crate::bus::Bus;

/// How long one pull request stays open on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How often the server says it is still there while a pull request waits with nothing to
/// send. Two missed in a row end the wait with an error, and every reader then re-opens its
/// feed. Without them a pull request held by a NATS node that died is never answered, and
/// the feed waits for it for good (seen in the cluster fault test: a chat partition that
/// stored nothing for a minute after the ingest stream's leader was killed).
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

/// Why a JetStream operation (publishing, reading, acknowledging) failed.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    /// A publish was not stored (no ack, or an error ack).
    #[error("publish: {0}")]
    Publish(String),
    /// The stream could not be looked up (missing, or NATS unreachable).
    #[error("stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    /// The consumer could not be created, read or deleted.
    #[error("consumer {consumer}: {reason}")]
    Consumer { consumer: String, reason: String },
    /// Pulling the next message failed.
    #[error("pull: {0}")]
    Pull(String),
    /// The server did not take an acknowledgement.
    #[error("ack: {0}")]
    Ack(String),
}

/// A reader's feed of messages from one consumer.
pub struct Feed {
    messages: pull::Stream,
    /// Messages taken from the stream and not handed out yet (one that did not fit the last
    /// batch, or those [`Feed::beyond`] counted), in order.
    buffered: VecDeque<Result<Delivery, JetStreamError>>,
    /// The `pending` of the newest message taken from the stream.
    newest_pending: u64,
}

/// What waits in a feed beyond the messages it handed out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Beyond {
    /// Messages the server delivered that wait in the feed.
    pub buffered: usize,
    /// Their weight (e.g. the chat messages they hold).
    pub weight: usize,
    /// Messages still in the stream after the newest delivered one, as the server counted
    /// when it sent that one.
    pub pending: u64,
}

/// One message read from a feed.
pub struct Delivery {
    pub payload: Bytes,
    /// Position in the stream.
    pub stream_seq: u64,
    /// How many times the server has delivered it (1 the first time).
    pub delivered: i64,
    /// Messages of the consumer still waiting in the stream after this one (not yet
    /// delivered) when the server sent it.
    pub pending: u64,
    message: Message,
}

impl Bus {
    /// Creates (or binds to) the consumer `config` on `stream` and opens its feed, pulling up
    /// to `prefetch` messages at a time.
    pub(crate) async fn open_feed(
        &self,
        stream: Stream,
        config: pull::Config,
        prefetch: usize,
    ) -> Result<Feed, JetStreamError> {
        let stream = self.get_stream(stream).await?;
        let consumer_name = config
            .durable_name
            .clone()
            .unwrap_or_else(|| "ephemeral".to_owned());
        let consumer_failed = |err: &dyn std::fmt::Display| JetStreamError::Consumer {
            consumer: consumer_name.clone(),
            reason: err.to_string(),
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| consumer_failed(&e))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(prefetch.max(1))
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| consumer_failed(&e))?;
        Ok(Feed {
            messages,
            buffered: VecDeque::new(),
            newest_pending: 0,
        })
    }

    /// The JetStream stream `stream` of this mesh.
    pub(crate) async fn get_stream(
        &self,
        stream: Stream,
    ) -> Result<async_nats::jetstream::stream::Stream, JetStreamError> {
        let name = self.prefix.stream(stream);
        self.jetstream
            .get_stream(&name)
            .await
            .map_err(|err| JetStreamError::Stream {
                stream: name,
                reason: err.to_string(),
            })
    }
}

impl Feed {
    /// The next message; `None` when the feed ended (its consumer was deleted or taken over:
    /// open it again).
    pub async fn next(&mut self) -> Option<Result<Delivery, JetStreamError>> {
        if let Some(buffered) = self.buffered.pop_front() {
            return Some(buffered);
        }
        let next = self.messages.next().await?;
        Some(self.delivery(next))
    }

    /// Waits for the next message, then takes every message already buffered, up to `max` in
    /// all. `None` when the feed ended.
    pub async fn next_batch(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<Delivery>>, JetStreamError> {
        self.next_weighed_batch(max, |_| 1).await
    }

    /// Like [`Feed::next_batch`], counting each message as `weight` says (at least 1; e.g. the
    /// chat messages an ingest message holds): up to `max` in all, the first message whatever
    /// its weight.
    pub async fn next_weighed_batch(
        &mut self,
        max: usize,
        weight: impl Fn(&Delivery) -> usize,
    ) -> Result<Option<Vec<Delivery>>, JetStreamError> {
        let Some(first) = self.next().await else {
            return Ok(None);
        };
        let mut batch = Vec::with_capacity(max.clamp(1, 64));
        batch.push(first?);
        self.top_up_weighed(&mut batch, max, weight)?;
        Ok(Some(batch))
    }

    /// Adds to `batch`, up to `max`, the messages that already arrived (never waits).
    pub fn top_up(&mut self, batch: &mut Vec<Delivery>, max: usize) -> Result<(), JetStreamError> {
        self.top_up_weighed(batch, max, |_| 1).map(|_| ())
    }

    /// Like [`Feed::top_up`], counting each message as `weight` says: a message that would
    /// take the batch past `max` stays buffered for the next batch. The batch's weight.
    pub fn top_up_weighed(
        &mut self,
        batch: &mut Vec<Delivery>,
        max: usize,
        weight: impl Fn(&Delivery) -> usize,
    ) -> Result<usize, JetStreamError> {
        let mut total: usize = batch.iter().map(|d| weight(d).max(1)).sum();
        while total < max {
            let Some(taken) = self.buffered.pop_front().or_else(|| self.ready()) else {
                break;
            };
            let next = taken?;
            let with = total + weight(&next).max(1);
            if with > max {
                self.buffered.push_front(Ok(next));
                break;
            }
            total = with;
            batch.push(next);
        }
        Ok(total)
    }

    /// What waits beyond the messages handed out: takes every message that already arrived
    /// into the feed (never waits; the consumer's `max_ack_pending` bounds them), and counts
    /// those and what the server still holds after the newest. A pull consumer has messages
    /// delivered before they are read, so the server's `pending` alone misses them.
    pub fn beyond(&mut self, weight: impl Fn(&Delivery) -> usize) -> Beyond {
        while let Some(next) = self.ready() {
            let failed = next.is_err();
            self.buffered.push_back(next);
            if failed {
                break;
            }
        }
        let delivered = self.buffered.iter().filter_map(|d| d.as_ref().ok());
        Beyond {
            buffered: self.buffered.len(),
            weight: delivered.map(|d| weight(d).max(1)).sum(),
            pending: self.newest_pending,
        }
    }

    /// The next message if it already arrived (never waits).
    fn ready(&mut self) -> Option<Result<Delivery, JetStreamError>> {
        match self.messages.next().now_or_never() {
            Some(Some(next)) => Some(self.delivery(next)),
            Some(None) | None => None,
        }
    }

    fn delivery(&mut self, next: Next) -> Result<Delivery, JetStreamError> {
        let delivery = delivery(next)?;
        self.newest_pending = delivery.pending;
        Ok(delivery)
    }
}

type Next = Result<Message, async_nats::error::Error<pull::MessagesErrorKind>>;

fn delivery(next: Next) -> Result<Delivery, JetStreamError> {
    let message = next.map_err(|err| JetStreamError::Pull(err.to_string()))?;
    let info = message
        .info()
        .map_err(|err| JetStreamError::Pull(err.to_string()))?;
    let (stream_seq, delivered, pending) = (info.stream_sequence, info.delivered, info.pending);
    Ok(Delivery {
        payload: message.payload.clone(),
        stream_seq,
        delivered,
        pending,
        message,
    })
}

impl Delivery {
    /// The subject it was published to.
    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    /// The headers it was published with (the trace context among them).
    pub(crate) fn headers(&self) -> Option<&async_nats::HeaderMap> {
        self.message.headers.as_ref()
    }

    /// Acknowledges it (and, on an ack-all consumer, every earlier message) without waiting
    /// for the server's confirmation: a lost ack only means a redelivery.
    pub async fn ack(&self) -> Result<(), JetStreamError> {
        self.message
            .ack()
            .await
            .map_err(|err| JetStreamError::Ack(err.to_string()))
    }

    /// Acknowledges it and waits until the server confirmed.
    pub async fn ack_confirmed(&self) -> Result<(), JetStreamError> {
        self.message
            .double_ack()
            .await
            .map_err(|err| JetStreamError::Ack(err.to_string()))
    }

    /// Tells the server it is still being worked on (resets its ack timer).
    pub async fn in_progress(&self) {
        let _ = self.message.ack_with(AckKind::Progress).await;
    }

    /// Asks for it again after `delay`.
    pub async fn retry_later(&self, delay: Duration) {
        let _ = self.message.ack_with(AckKind::Nak(Some(delay))).await;
    }

    /// Never deliver it again (after it was set aside).
    pub async fn give_up(&self) {
        let _ = self.message.ack_with(AckKind::Term).await;
    }
}

/// Acknowledges every message of `batch` and waits until the server confirmed the last one
/// (acks travel in order on one connection, so the earlier ones arrived too).
pub async fn ack_all(batch: &[Delivery]) -> Result<(), JetStreamError> {
    let Some((last, rest)) = batch.split_last() else {
        return Ok(());
    };
    for delivery in rest {
        delivery.ack().await?;
    }
    last.ack_confirmed().await
}
