//! The chat ingest stream: the edge publishes accepted messages to a partition subject, and the
//! partition's owner reads them back in order, in batches.
//!
//! Each partition has one durable consumer (`chat-p<n>`, ack-all). Taking a partition over
//! re-creates that consumer from its ack floor, so whatever the previous owner read but never
//! acknowledged is read again first, in stream order, and the previous owner's feed breaks.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use mesh_contracts::Stream;
use tracing::Instrument;

use crate::batch;
use crate::bus::Bus;

/// How long the server waits for an ack before it sends a message again. Owners extend it with
/// progress acks while a batch is retried, so it only fires for an owner that vanished.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long one pull request stays open on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("chat ingest publish failed: {0}")]
    Publish(String),
    #[error("chat ingest consumer failed: {0}")]
    Consumer(String),
}

/// One message read from a partition.
pub struct Delivery {
    pub payload: Bytes,
    /// Position in the ingest stream.
    pub stream_seq: u64,
    /// How many times the server has delivered this message (1 the first time).
    pub delivered: i64,
    message: Message,
}

/// The in-order feed of one partition for its current owner.
pub struct PartitionFeed {
    messages: pull::Stream,
}

impl Bus {
    /// Publishes an accepted chat message to its partition and waits for the JetStream ack.
    /// Returns true when JetStream recognised `msg_id` as a duplicate within its window.
    pub async fn publish_chat(
        &self,
        partition: u32,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<bool, IngestError> {
        let subject = self.prefix.chat_in(partition);
        let span = crate::trace::producer_span(&subject, crate::trace::Orphan::Traced);
        let mut headers = async_nats::HeaderMap::new();
        crate::trace::inject(&span, &mut headers);
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .headers(headers)
            .message_id(msg_id)
            .payload(payload);
        let sent = async {
            self.jetstream
                .send_publish(subject, publish)
                .await
                .map_err(|err| IngestError::Publish(err.to_string()))?
                .await
                .map_err(|err| IngestError::Publish(err.to_string()))
        };
        let ack = sent.instrument(span.clone()).await.inspect_err(|_| {
            mesh_observability::spans::fail(&span, "publish failed");
        })?;
        Ok(ack.duplicate)
    }

    /// Takes over partition `partition`: re-creates its consumer from the ack floor and opens a
    /// feed that prefetches up to `batch` messages.
    pub async fn open_partition(
        &self,
        partition: u32,
        batch: usize,
    ) -> Result<PartitionFeed, IngestError> {
        let fail = |err: &dyn std::fmt::Display| IngestError::Consumer(err.to_string());
        let stream = self
            .jetstream
            .get_stream(self.prefix.stream(Stream::ChatIn))
            .await
            .map_err(|e| fail(&e))?;
        let name = format!("chat-p{partition}");
        let deliver_policy = match stream.consumer_info(&name).await {
            Ok(info) => {
                let floor = info.ack_floor.stream_sequence;
                stream.delete_consumer(&name).await.map_err(|e| fail(&e))?;
                if floor == 0 {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: floor + 1,
                    }
                }
            }
            Err(_) => DeliverPolicy::All,
        };
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("chat ingest partition {partition}")),
            filter_subject: self.prefix.chat_in(partition),
            ack_policy: AckPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: i64::try_from(batch * 4).unwrap_or(i64::MAX),
            deliver_policy,
            ..Default::default()
        };
        let consumer = stream.create_consumer(config).await.map_err(|e| fail(&e))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| fail(&e))?;
        Ok(PartitionFeed { messages })
    }

    /// Messages waiting in a partition that no owner has read yet, or `None` when the partition
    /// has no consumer.
    pub async fn partition_pending(&self, partition: u32) -> Option<(u64, usize)> {
        let stream = self
            .jetstream
            .get_stream(self.prefix.stream(Stream::ChatIn))
            .await
            .ok()?;
        let info = stream
            .consumer_info(format!("chat-p{partition}"))
            .await
            .ok()?;
        Some((info.num_pending, info.num_ack_pending))
    }
}

impl PartitionFeed {
    /// Waits for the next message, then takes every message already buffered, up to `max`.
    /// `None` when the feed ended (the consumer was deleted or taken over).
    pub async fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Delivery>>, IngestError> {
        batch::next_batch(&mut self.messages, max, delivery).await
    }
}

fn delivery(next: batch::Next) -> Result<Delivery, IngestError> {
    let message = next.map_err(|err| IngestError::Consumer(err.to_string()))?;
    let info = message
        .info()
        .map_err(|err| IngestError::Consumer(err.to_string()))?;
    let (stream_seq, delivered) = (info.stream_sequence, info.delivered);
    Ok(Delivery {
        payload: message.payload.clone(),
        stream_seq,
        delivered,
        message,
    })
}

impl Delivery {
    /// The partition subject the message was published to.
    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    /// The headers it was published with (the trace context among them).
    pub(crate) fn headers(&self) -> Option<&async_nats::HeaderMap> {
        self.message.headers.as_ref()
    }

    /// Acknowledges this message and, by the consumer's ack-all policy, every earlier one.
    /// Not confirmed: a lost ack only means a redelivery, which the store recognises as resends,
    /// and not waiting keeps the partition's next batch from waiting a round trip.
    pub async fn ack_through(&self) -> Result<(), IngestError> {
        self.message
            .ack()
            .await
            .map_err(|err| IngestError::Consumer(err.to_string()))
    }

    /// Tells the server the owner is still working on this message (resets its ack timer).
    pub async fn in_progress(&self) {
        let _ = self.message.ack_with(AckKind::Progress).await;
    }
}
