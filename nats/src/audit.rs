//! The audit stream: edges publish one record per mutating request without waiting for it
//! (a request never waits for, or fails because of, the audit log), and the outbox role's
//! writer reads the records back in batches through the durable consumer `audit-writer`,
//! shared by every outbox instance.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use mesh_contracts::Stream;
use mesh_observability::metrics::AUDIT_DROPPED;
use tokio::sync::Semaphore;

use crate::batch;
use crate::bus::Bus;

/// The writers' durable consumer.
const CONSUMER: &str = "audit-writer";
/// How long the server waits for an ack before it delivers a record again; writers extend it
/// with progress acks while they retry a batch.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long one pull request stays open on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Most audit publishes of this process waiting to be sent or acknowledged; past that,
/// records are dropped (and counted) rather than queued without bound.
static PUBLISHES_IN_FLIGHT: Semaphore = Semaphore::const_new(4096);

#[derive(Debug, thiserror::Error)]
#[error("audit feed: {0}")]
pub struct AuditFeedError(String);

fn fail(err: impl std::fmt::Display) -> AuditFeedError {
    AuditFeedError(err.to_string())
}

/// The writer's feed of audit records.
pub struct AuditFeed {
    messages: pull::Stream,
}

/// Records read together; acknowledged together once stored.
pub struct AuditBatch {
    messages: Vec<Message>,
}

impl Bus {
    /// Publishes an audit record in the background and returns at once. A record that cannot
    /// even be queued is dropped and counted; a publish JetStream does not acknowledge is
    /// logged at debug level.
    pub fn publish_audit(&self, payload: Bytes) {
        let Ok(permit) = PUBLISHES_IN_FLIGHT.try_acquire() else {
            AUDIT_DROPPED.inc();
            tracing::debug!("audit record dropped: too many publishes in flight");
            return;
        };
        let jetstream = self.jetstream.clone();
        let subject = self.prefix.audit();
        tokio::spawn(async move {
            let _permit = permit;
            match jetstream.publish(subject, payload).await {
                Ok(ack) => {
                    if let Err(err) = ack.await {
                        tracing::debug!(error = %err, "audit record not acknowledged");
                    }
                }
                Err(err) => {
                    AUDIT_DROPPED.inc();
                    tracing::debug!(error = %err, "audit record dropped: cannot publish");
                }
            }
        });
    }

    /// Opens the writers' feed (creating the durable consumer on first use), prefetching up to
    /// `batch` records.
    pub async fn audit_feed(&self, batch: usize) -> Result<AuditFeed, AuditFeedError> {
        let stream = self
            .jetstream
            .get_stream(self.prefix.stream(Stream::Audit))
            .await
            .map_err(fail)?;
        let config = pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            description: Some("audit log writers".to_owned()),
            // Several writers share the consumer, so each acknowledges exactly what it stored.
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: i64::try_from(batch * 4).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let consumer = stream.create_consumer(config).await.map_err(fail)?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(fail)?;
        Ok(AuditFeed { messages })
    }
}

impl AuditFeed {
    /// Waits for the next record, then takes every record already buffered, up to `max`.
    /// `None` when the feed ended (open it again).
    pub async fn next_batch(&mut self, max: usize) -> Result<Option<AuditBatch>, AuditFeedError> {
        let messages =
            batch::next_batch(&mut self.messages, max, |next| next.map_err(fail)).await?;
        Ok(messages.map(|messages| AuditBatch { messages }))
    }
}

impl AuditBatch {
    /// The records as published.
    pub fn payloads(&self) -> impl Iterator<Item = &Bytes> {
        self.messages.iter().map(|message| &message.payload)
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Acknowledges every record of the batch; waits until the server confirmed the last ack
    /// (acks travel in order on one connection, so the earlier ones arrived too).
    pub async fn ack(&self) -> Result<(), AuditFeedError> {
        let Some((last, rest)) = self.messages.split_last() else {
            return Ok(());
        };
        for message in rest {
            message.ack().await.map_err(fail)?;
        }
        last.double_ack().await.map_err(fail)
    }

    /// Tells the server the batch is still being worked on (resets its ack timers).
    pub async fn in_progress(&self) {
        for message in &self.messages {
            let _ = message.ack_with(AckKind::Progress).await;
        }
    }
}
