//! The chat ingest stream: the edge publishes accepted messages to a partition subject, and the
//! partition's owner reads them back in order, in batches.
//!
//! Each partition has one durable consumer (`chat-p<n>`, ack-all). Taking a partition over
//! re-creates that consumer from its ack floor, so whatever the previous owner read but never
//! acknowledged is read again first, in stream order, and the previous owner's feed breaks.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use bytes::Bytes;
use mesh_contracts::{Consumer, Stream};
use tracing::Instrument;

use crate::bus::Bus;
use crate::feed::{Feed, JetStreamError};

/// How long the server waits for an ack before it sends a message again. Owners extend it with
/// progress acks while a batch is retried, so it only fires for an owner that vanished.
const ACK_WAIT: Duration = Duration::from_secs(30);

impl Bus {
    /// Publishes an accepted chat message to its partition and waits for the JetStream ack.
    /// Returns true when JetStream recognised `msg_id` as a duplicate within its window.
    pub async fn publish_chat(
        &self,
        partition: u32,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<bool, JetStreamError> {
        let subject = self.prefix.chat_in(partition);
        let span = crate::trace::producer_span(&subject, crate::trace::Orphan::Traced);
        let mut headers = async_nats::HeaderMap::new();
        crate::trace::inject(&span, &mut headers);
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .headers(headers)
            .message_id(msg_id)
            .payload(payload);
        let failed = |err: &dyn std::fmt::Display| JetStreamError::Publish(err.to_string());
        let sent = async {
            self.jetstream
                .send_publish(subject, publish)
                .await
                .map_err(|e| failed(&e))?
                .await
                .map_err(|e| failed(&e))
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
    ) -> Result<Feed, JetStreamError> {
        let stream = self.get_stream(Stream::ChatIn).await?;
        let name = Consumer::ChatPartition(partition).name();
        let fail = |err: &dyn std::fmt::Display| JetStreamError::Consumer {
            consumer: name.clone(),
            reason: err.to_string(),
        };
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
        self.open_feed(Stream::ChatIn, config, batch).await
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
            .consumer_info(Consumer::ChatPartition(partition).name())
            .await
            .ok()?;
        Some((info.num_pending, info.num_ack_pending))
    }
}
