//! The audit stream: edges publish one record per mutating request without waiting for it
//! (a request never waits for, or fails because of, the audit log), and the outbox role's
//! writer reads the records back in batches through the durable consumer `audit-writer`,
//! shared by every outbox instance.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use bytes::Bytes;
use mesh_contracts::{Consumer, Stream};
use mesh_observability::metrics::AUDIT_DROPPED;
use tokio::sync::Semaphore;

use crate::bus::Bus;
use crate::feed::{Feed, JetStreamError};

/// How long the server waits for an ack before it delivers a record again; writers extend it
/// with progress acks while they retry a batch.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Most audit publishes of this process waiting to be sent or acknowledged; past that,
/// records are dropped (and counted) rather than queued without bound.
static PUBLISHES_IN_FLIGHT: Semaphore = Semaphore::const_new(4096);

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
    /// `batch` records. Several writers share the consumer, so each acknowledges exactly what
    /// it stored (`feed::ack_all`).
    pub async fn audit_feed(&self, batch: usize) -> Result<Feed, JetStreamError> {
        let config = pull::Config {
            durable_name: Some(Consumer::AuditWriter.name()),
            description: Some("audit log writers".to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: i64::try_from(batch * 4).unwrap_or(i64::MAX),
            ..Default::default()
        };
        self.open_feed(Stream::Audit, config, batch).await
    }
}
