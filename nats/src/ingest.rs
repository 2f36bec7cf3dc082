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
use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use mesh_contracts::chat::ChatBacklog;
use mesh_contracts::{Consumer, Stream, Subject};
use tracing::Instrument;

use crate::bus::Bus;
use crate::feed::{Feed, JetStreamError};

/// How long the server waits for an ack before it sends a message again. Owners extend it with
/// progress acks while a batch is retried, so it only fires for an owner that vanished.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// A partition consumer without pull requests for this long is deleted by the server.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(600);

/// An accepted chat message waiting to be published (`Bus::chat_line`).
pub struct ChatLine {
    msg_id: String,
    payload: Bytes,
    /// Its PRODUCER span (none while traces are not exported), ended when dropped.
    span: tracing::Span,
    /// Its trace context, as the ingest message's headers carry it.
    headers: async_nats::HeaderMap,
}

impl ChatLine {
    /// A message that carries no trace context (`Bus::chat_line` takes the caller's).
    pub fn new(msg_id: String, payload: Bytes) -> Self {
        Self {
            msg_id,
            payload,
            span: tracing::Span::none(),
            headers: async_nats::HeaderMap::new(),
        }
    }

    /// The size of its payload in bytes.
    pub fn size(&self) -> usize {
        self.payload.len()
    }

    /// The id JetStream would recognise it by when published alone.
    pub fn msg_id(&self) -> &str {
        &self.msg_id
    }
}

/// What one compaction of the ingest stream did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Every message below this stream sequence is gone.
    pub below: u64,
    /// How many messages this purge removed.
    pub purged: u64,
}

impl Bus {
    /// Purges from the ingest stream the messages every partition has stored: all those below
    /// the first message any partition still has to store. `stored_through(created,
    /// partition)` is how far the partition is stored in the stream created at `created`
    /// (its `StreamMark::created`, read with the state below): committed in Postgres, and 0
    /// when never, or when what is recorded refers to another stream of the same name (one
    /// deleted since, or lost with JetStream's store), whose sequences say nothing of this one.
    ///
    /// Safe whenever it runs and however stale `stored_through` is: the stream's last
    /// sequence is read first, so a message published later lies above it and is kept; every
    /// partition holding a message at or below it is asked (from the stream leader) for its
    /// first message after what it stored, and the purge stops below the lowest of those,
    /// and never past the last message read (see [`purge_bound`]). `None` when there is
    /// nothing to purge.
    pub async fn compact_chat_in(
        &self,
        stored_through: impl Fn(time::OffsetDateTime, u32) -> u64,
    ) -> Result<Option<Compaction>, JetStreamError> {
        let name = self.prefix.stream(Stream::ChatIn);
        let failed = |err: &dyn std::fmt::Display| JetStreamError::Stream {
            stream: name.clone(),
            reason: err.to_string(),
        };
        // Its state comes with the subjects below: no info request of its own.
        let stream = self
            .jetstream
            .get_stream_no_info(&name)
            .await
            .map_err(|e| failed(&e))?;
        let mut subjects = stream
            .info_with_subjects(self.prefix.all_chat_in())
            .await
            .map_err(|e| failed(&e))?;
        let (first, last) = (
            subjects.info.state.first_sequence,
            subjects.info.state.last_sequence,
        );
        // The stream these sequences belong to: positions recorded in another are not used.
        let created = crate::topology::StreamMark::of(&subjects.info).created;
        let mut unstored = None::<u64>;
        while let Some((subject, _)) = subjects.try_next().await.map_err(|e| failed(&e))? {
            // A subject that is no partition's (none should exist) keeps all it holds.
            let stored = self
                .prefix
                .chat_in_partition(&subject)
                .map_or(0, |partition| stored_through(created, partition));
            match stream
                .get_first_raw_message_by_subject(&subject, stored.saturating_add(1))
                .await
            {
                Ok(message) => unstored = unstored.into_iter().chain([message.sequence]).min(),
                Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => {}
                Err(err) => return Err(failed(&err)),
            }
        }
        let Some(keep_from) = purge_bound(first, last, unstored) else {
            return Ok(None);
        };
        let purge = stream
            .purge()
            .sequence(keep_from)
            .await
            .map_err(|e| failed(&e))?;
        Ok(Some(Compaction {
            below: keep_from,
            purged: purge.purged,
        }))
    }

    /// Publishes an accepted chat message to its partition and waits for the JetStream ack.
    /// Returns true when JetStream recognised `msg_id` as a duplicate within its window.
    pub async fn publish_chat(
        &self,
        partition: u32,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<bool, JetStreamError> {
        let line = self.chat_line(partition, msg_id.to_owned(), payload);
        self.publish_chat_lines(partition, std::slice::from_ref(&line))
            .await
    }

    /// One accepted chat message for partition `partition`, ready to publish: its PRODUCER
    /// span and trace context are taken now, from the caller's span (so a message queued
    /// for a later publish still continues the request that sent it).
    pub fn chat_line(&self, partition: u32, msg_id: String, payload: Bytes) -> ChatLine {
        let subject = self.prefix.chat_in(partition);
        let span = crate::trace::producer_span(&subject, crate::trace::Orphan::Traced);
        let mut headers = async_nats::HeaderMap::new();
        crate::trace::inject_operation(&span, &mut headers);
        ChatLine {
            msg_id,
            payload,
            span,
            headers,
        }
    }

    /// Publishes `lines` to their partition as one ingest message and waits for the
    /// JetStream ack. One line goes as it is, with its message id (so JetStream drops a quick
    /// resend; the answer is then true); several go as one payload of one line each
    /// (`mesh_contracts::chat::join_ingest_lines`), without a message id (the chat store
    /// recognises resends by their client id), with the first line's trace context and the
    /// others' sampled ones (`crate::trace::carry_line_contexts`).
    pub async fn publish_chat_lines(
        &self,
        partition: u32,
        lines: &[ChatLine],
    ) -> Result<bool, JetStreamError> {
        let Some(first) = lines.first() else {
            return Ok(false);
        };
        let subject = self.prefix.chat_in(partition);
        let mut headers = first.headers.clone();
        crate::trace::carry_line_contexts(&mut headers, lines[1..].iter().map(|l| &l.headers));
        let publish = async_nats::jetstream::message::PublishMessage::build().headers(headers);
        let publish = if lines.len() == 1 {
            publish
                .message_id(first.msg_id.as_str())
                .payload(first.payload.clone())
        } else {
            let payloads = lines.iter().map(|line| line.payload.as_ref());
            publish.payload(Bytes::from(mesh_contracts::chat::join_ingest_lines(
                payloads,
            )))
        };
        let failed = |err: &dyn std::fmt::Display| JetStreamError::Publish(err.to_string());
        let sent = async {
            self.jetstream
                .send_publish(subject, publish)
                .await
                .map_err(|e| failed(&e))?
                .await
                .map_err(|e| failed(&e))
        };
        let ack = sent.instrument(first.span.clone()).await.inspect_err(|_| {
            for line in lines {
                mesh_observability::spans::fail(&line.span, "publish failed");
            }
        })?;
        Ok(ack.duplicate)
    }

    /// Takes over partition `partition` for `epoch`, or re-opens its feed: deletes the
    /// consumer of the previous owner (`previous_epoch`) and any earlier one of this epoch,
    /// and opens a feed from the message after `stored_through` (the whole stream when 0) that
    /// prefetches up to `batch` messages.
    pub async fn open_partition(
        &self,
        partition: u32,
        epoch: u64,
        previous_epoch: Option<u64>,
        stored_through: u64,
        batch: usize,
    ) -> Result<Feed, JetStreamError> {
        let stream = self.get_stream(Stream::ChatIn).await?;
        let name = Consumer::ChatPartition { partition, epoch }.name();
        // The unversioned consumer of earlier releases, and the previous owner's. Missing ones
        // are fine; one left behind only feeds a fenced-out owner and expires when idle.
        // This epoch's own consumer goes too when a broken feed is re-opened: the new one
        // starts right after what is stored now, and JetStream refuses to move the start of
        // an existing consumer ("deliver policy can not be updated"), which would leave the
        // partition unread for good. The owner holds no batch while it re-opens, so nothing
        // delivered to the old feed is in flight.
        let earlier = std::iter::once(Consumer::UnversionedChatPartition(partition))
            .chain(previous_epoch.map(|previous| Consumer::ChatPartition {
                partition,
                epoch: previous,
            }))
            .map(Consumer::name)
            .filter(|earlier| *earlier != name)
            .chain(std::iter::once(name.clone()));
        for earlier in earlier {
            match stream.delete_consumer(&earlier).await {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {
                    tracing::debug!(consumer = %earlier, "no earlier consumer to delete");
                }
                // This epoch's own consumer must be gone before its feed is re-opened: left
                // in place, the create below either fails (a new start) or hands back the old
                // consumer, whose messages delivered to the broken feed come again only after
                // the ack wait (30 s). So the open fails and the owner tries again.
                Err(err) if earlier == name => {
                    tracing::warn!(consumer = %earlier, error = %err, "cannot delete this epoch's consumer to re-open it");
                    return Err(JetStreamError::Consumer {
                        consumer: earlier,
                        reason: err.to_string(),
                    });
                }
                // Left behind, an earlier epoch's consumer only feeds a fenced-out owner and
                // expires when idle.
                Err(err) => {
                    tracing::warn!(consumer = %earlier, error = %err, "cannot delete an earlier consumer");
                }
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
            // Where the partition was read to lives in Postgres (each owner starts after what
            // is stored), so the consumer's own state need not reach the disk.
            memory_storage: true,
            ..Default::default()
        };
        self.open_feed(Stream::ChatIn, config, batch).await
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
            .consumer_info(Consumer::ChatPartition { partition, epoch }.name())
            .await
            .ok()?;
        Some((info.num_pending, info.num_ack_pending))
    }
}

/// The sequence to purge the ingest stream below, or `None` to purge nothing, for a stream
/// holding `first..=last` whose first message not stored yet is `unstored` (`None`: every
/// message is stored).
///
/// The stream's last message always stays, even when stored: nats-server (2.12 and 2.14)
/// serves a purge below a sequence past its last message by emptying the whole store and
/// lets go of the store's lock in between, so a message published at that moment can be
/// purged with the rest; and it reads a purge below sequence 1 as "no bound", emptying the
/// stream. Purging below at most `last`, and only above `first` (at least 1), asks for
/// neither: one stored message left behind costs nothing, a lost one loses a chat message.
fn purge_bound(first: u64, last: u64, unstored: Option<u64>) -> Option<u64> {
    let below = unstored.unwrap_or(last).min(last);
    (below > first.max(1)).then_some(below)
}

/// Whether deleting a consumer failed only because there was none.
fn is_not_found(err: &async_nats::jetstream::stream::ConsumerError) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::stream::ConsumerErrorKind;
    matches!(err.kind(), ConsumerErrorKind::JetStream(e) if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}

impl Bus {
    /// Tells the edges how many messages of `partition` are accepted but not stored (core
    /// NATS: a lost report is replaced by the next one).
    pub async fn report_chat_backlog(&self, partition: u32, backlog: ChatBacklog) {
        let payload = Bytes::from(serde_json::to_vec(&backlog).expect("backlogs serialize"));
        let subject = self.prefix.chat_backlog(partition);
        if let Err(err) = self.client.publish(subject, payload).await {
            tracing::debug!(partition, error = %err, "backlog report not sent");
        }
    }

    /// Every partition's backlog reports, as (partition, report), until dropped; unreadable
    /// reports are skipped.
    pub async fn chat_backlogs(
        &self,
    ) -> Result<impl futures::Stream<Item = (u32, ChatBacklog)> + Send + Unpin + use<>, String>
    {
        let prefix = self.prefix.clone();
        let subscriber = self
            .client
            .subscribe(prefix.all_chat_backlogs())
            .await
            .map_err(|err| err.to_string())?;
        Ok(subscriber.filter_map(move |message| {
            let partition = match prefix.parse_subject(message.subject.as_str()) {
                Some(Subject::ChatBacklog(partition)) => Some(partition),
                _ => None,
            };
            let report = serde_json::from_slice::<ChatBacklog>(&message.payload).ok();
            std::future::ready(partition.zip(report))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::purge_bound;

    #[test]
    fn the_purge_stops_below_the_first_unstored_message() {
        assert_eq!(purge_bound(1, 10, Some(6)), Some(6));
        assert_eq!(purge_bound(4, 10, Some(6)), Some(6));
        assert_eq!(
            purge_bound(6, 10, Some(6)),
            None,
            "nothing below it is left"
        );
        assert_eq!(purge_bound(1, 10, Some(1)), None);
    }

    #[test]
    fn the_last_message_stays_even_when_everything_is_stored() {
        // A purge below `last + 1` would empty the store, racing the next publish.
        assert_eq!(purge_bound(1, 10, None), Some(10));
        assert_eq!(purge_bound(10, 10, None), None);
        // Messages published after `last` was read lie above it.
        assert_eq!(purge_bound(1, 10, Some(12)), Some(10));
    }

    #[test]
    fn an_empty_or_fresh_stream_is_never_purged() {
        // A purge below sequence 1 would be read as no bound at all.
        assert_eq!(purge_bound(0, 0, None), None, "a stream never written");
        assert_eq!(purge_bound(11, 10, None), None, "a stream purged empty");
        assert_eq!(purge_bound(1, 1, None), None);
    }
}
