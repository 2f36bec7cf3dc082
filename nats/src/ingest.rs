//! The chat ingest stream: the edge publishes accepted messages to a partition subject, and the
//! partition's owner reads them back in order, in batches.
//!
//! Each owner of a partition reads it through a durable consumer of its own epoch
//! (`chat-p<n>-e<epoch>`, ack-all), created to start right after the last stream sequence the
//! store recorded (never from JetStream's ack floor, which a just-created consumer reports as
//! 0). Taking a partition over deletes every older consumer of the partition, so a stale
//! owner's pull subscription ends and can never attach to the new owner's consumer.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use mesh_contracts::Stream;

use crate::batch;
use crate::bus::Bus;

/// How long the server waits for an ack before it sends a message again. Owners extend it with
/// progress acks while a batch is retried, so it only fires for an owner that vanished.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// A partition consumer without pull requests for this long is deleted by the server.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(600);
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
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .message_id(msg_id)
            .payload(payload);
        let ack = self
            .jetstream
            .send_publish(self.prefix.chat_in(partition), publish)
            .await
            .map_err(|err| IngestError::Publish(err.to_string()))?
            .await
            .map_err(|err| IngestError::Publish(err.to_string()))?;
        Ok(ack.duplicate)
    }

    /// Takes over partition `partition` for `epoch`: deletes the consumer of the previous
    /// owner (`previous_epoch`) and opens a feed from the message after `stored_through` (the
    /// whole stream when 0) that prefetches up to `batch` messages.
    pub async fn open_partition(
        &self,
        partition: u32,
        epoch: u64,
        previous_epoch: Option<u64>,
        stored_through: u64,
        batch: usize,
    ) -> Result<PartitionFeed, IngestError> {
        let fail = |err: &dyn std::fmt::Display| IngestError::Consumer(err.to_string());
        let stream = self
            .jetstream
            .get_stream(self.prefix.stream(Stream::ChatIn))
            .await
            .map_err(|e| fail(&e))?;
        let name = consumer_name(partition, epoch);
        // The unversioned consumer of earlier releases, and the previous owner's. Missing ones
        // are fine; one left behind only feeds a fenced-out owner and expires when idle.
        let earlier = std::iter::once(format!("chat-p{partition}"))
            .chain(previous_epoch.map(|previous| consumer_name(partition, previous)))
            .filter(|earlier| *earlier != name);
        for earlier in earlier {
            if let Err(err) = stream.delete_consumer(&earlier).await {
                tracing::debug!(consumer = %earlier, error = %err, "no earlier consumer deleted");
            }
        }
        let deliver_policy = if stored_through == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: stored_through + 1,
            }
        };
        let config = pull::Config {
            durable_name: Some(name),
            description: Some(format!("chat ingest partition {partition}, epoch {epoch}")),
            filter_subject: self.prefix.chat_in(partition),
            ack_policy: AckPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: i64::try_from(batch * 4).unwrap_or(i64::MAX),
            deliver_policy,
            // A consumer nobody pulls from (its owner died) goes away by itself.
            inactive_threshold: INACTIVE_THRESHOLD,
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
    pub async fn partition_pending(&self, partition: u32, epoch: u64) -> Option<(u64, usize)> {
        let stream = self
            .jetstream
            .get_stream(self.prefix.stream(Stream::ChatIn))
            .await
            .ok()?;
        let info = stream
            .consumer_info(consumer_name(partition, epoch))
            .await
            .ok()?;
        Some((info.num_pending, info.num_ack_pending))
    }
}

/// The consumer of `partition`'s owner at `epoch`.
pub fn consumer_name(partition: u32, epoch: u64) -> String {
    format!("chat-p{partition}-e{epoch}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_of_a_partition_has_its_own_consumer() {
        assert_eq!(consumer_name(3, 42), "chat-p3-e42");
        assert_ne!(consumer_name(3, 42), consumer_name(3, 43));
        assert_ne!(consumer_name(3, 1), consumer_name(31, 1));
    }
}
