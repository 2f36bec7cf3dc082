//! The backlog a partition's owner reports to the edges: messages of the partition accepted
//! but not stored yet, as last seen from its feed (the batch in hand, those the server already
//! delivered into the feed, and those still in the stream after the newest delivery; an
//! ingest message may hold several). A task of its own
//! looks at it every `BACKLOG_REPORT_EVERY` and reports it when it changed, and at least every
//! `BACKLOG_REPORT_QUIET`, so a batch stuck retrying keeps the edges holding back while an
//! idle partition costs the bus two small messages a second instead of ten.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_contracts::chat::{BACKLOG_REPORT_EVERY, BACKLOG_REPORT_QUIET, ChatBacklog};
use mesh_nats::Beyond;
use mesh_observability::metrics::CHAT_UNSTORED;
use mesh_service_kit::pause;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::state::State;
use crate::store::partitions::Fence;

/// The owner's latest count, shared with its reporting task.
#[derive(Clone, Default)]
pub struct Backlog(Arc<AtomicU64>);

impl Backlog {
    /// A batch of `held` ingest messages holding `messages` chat messages is in hand: they,
    /// and what waits `beyond` them in the feed and the stream, are unstored.
    pub fn taking(&self, held: usize, messages: usize, beyond: Beyond) {
        let unstored = messages as u64 + waiting(held, messages, beyond);
        self.0.store(unstored, Ordering::Relaxed);
    }

    /// The batch (`held` ingest messages holding `messages` chat messages) is stored and
    /// acknowledged: what waits `beyond` it remains.
    pub fn done(&self, held: usize, messages: usize, beyond: Beyond) {
        self.0
            .store(waiting(held, messages, beyond), Ordering::Relaxed);
    }

    /// Reports the count for `fence` until `stop`, to the edges and as the partition's
    /// `mesh_chat_unstored_messages`.
    pub async fn report_until(self, state: State, fence: Fence, stop: CancellationToken) {
        let series = UnstoredSeries(fence.partition.to_string());
        let gauge = CHAT_UNSTORED.with_label_values(&[series.0.as_str()]);
        let mut last: Option<Sent> = None;
        loop {
            let unstored = self.0.load(Ordering::Relaxed);
            gauge.set(i64::try_from(unstored).unwrap_or(i64::MAX));
            let now = Instant::now();
            if due(last, unstored, now) {
                let report = ChatBacklog {
                    epoch: fence.epoch,
                    unstored,
                };
                state
                    .bus()
                    .report_chat_backlog(fence.partition, report)
                    .await;
                last = Some(Sent { unstored, at: now });
            }
            if pause(&stop, BACKLOG_REPORT_EVERY).await {
                return;
            }
        }
    }
}

/// A partition's `mesh_chat_unstored_messages` series, removed when its reporting ends (also
/// when the task is aborted): the partition's next owner reports it.
struct UnstoredSeries(String);

impl Drop for UnstoredSeries {
    fn drop(&mut self) {
        let _ = CHAT_UNSTORED.remove_label_values(&[self.0.as_str()]);
    }
}

/// The chat messages waiting beyond a batch of `held` ingest messages holding `messages`: those
/// the server delivered into the feed (counted exactly), and those of the ingest messages still
/// in the stream, estimated from the batch and the delivered ones together.
fn waiting(held: usize, messages: usize, beyond: Beyond) -> u64 {
    let in_feed = beyond.weight as u64;
    in_feed
        + still_waiting(
            beyond.pending,
            held + beyond.buffered,
            messages + beyond.weight,
        )
}

/// The chat messages in the `pending` ingest messages still waiting in the stream, counted at
/// the batch's own messages per ingest message (`messages` in `held`): an edge packs what it
/// accepts for a partition while a publish waits into one ingest message, more of them the
/// busier the partition, so the batch just read is the best guess of what follows it.
fn still_waiting(pending: u64, held: usize, messages: usize) -> u64 {
    if held == 0 {
        return pending;
    }
    let per = messages.max(held) as u64;
    pending.saturating_mul(per).div_ceil(held as u64)
}

/// The latest report sent.
#[derive(Debug, Clone, Copy)]
struct Sent {
    unstored: u64,
    at: Instant,
}

/// Whether `unstored` is reported at `now`: the first time, when it changed since the last
/// report, or when that report is `BACKLOG_REPORT_QUIET` old.
fn due(last: Option<Sent>, unstored: u64, now: Instant) -> bool {
    last.is_none_or(|sent| {
        sent.unstored != unstored || now.duration_since(sent.at) >= BACKLOG_REPORT_QUIET
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_waits_is_counted_at_the_batch_s_messages_per_ingest_message() {
        assert_eq!(
            still_waiting(10, 4, 4),
            10,
            "one message per ingest message"
        );
        assert_eq!(still_waiting(10, 4, 12), 30, "three per ingest message");
        assert_eq!(still_waiting(3, 2, 3), 5, "rounded up: never under-counted");
        assert_eq!(still_waiting(0, 4, 200), 0);
        assert_eq!(still_waiting(7, 0, 0), 7);
    }

    #[test]
    fn what_the_server_delivered_into_the_feed_counts_as_waiting() {
        // A batch of 1 ingest message of 32 chat messages; 3 more (90 chat messages) already
        // delivered into the feed, none left in the stream: 90 wait, not 0.
        let delivered = Beyond {
            buffered: 3,
            weight: 90,
            pending: 0,
        };
        assert_eq!(waiting(1, 32, delivered), 90);
        // 2 more in the stream, at the 122 / 4 chat messages per ingest message seen.
        let more = Beyond {
            pending: 2,
            ..delivered
        };
        assert_eq!(waiting(1, 32, more), 90 + 61);
        assert_eq!(waiting(1, 32, Beyond::default()), 0, "nothing beyond");
    }

    #[test]
    fn a_change_is_reported_at_once_and_a_steady_count_every_quiet_period() {
        let start = Instant::now();
        assert!(due(None, 0, start), "the first look reports");
        let sent = Some(Sent {
            unstored: 0,
            at: start,
        });
        assert!(!due(sent, 0, start + BACKLOG_REPORT_EVERY), "unchanged");
        assert!(due(sent, 7, start + BACKLOG_REPORT_EVERY), "changed");
        assert!(
            !due(sent, 0, start + BACKLOG_REPORT_QUIET - BACKLOG_REPORT_EVERY),
            "unchanged within the quiet period"
        );
        assert!(due(sent, 0, start + BACKLOG_REPORT_QUIET), "refreshed");
        assert!(
            BACKLOG_REPORT_QUIET * 2 <= mesh_contracts::chat::BACKLOG_REPORT_STALE,
            "a lost refresh leaves the next one in time"
        );
    }
}
