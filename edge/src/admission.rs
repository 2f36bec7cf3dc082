//! Admission of chat messages by the backlog of their ingest partition: each partition's owner
//! reports how many of its messages are accepted but not stored (`ChatBacklog`, within 100 ms
//! of a change and at least every 500 ms);
//! a send to a partition at or over the bound waits for it to drain until `HOLD` after the edge
//! read the send (time spent queued behind a connection's earlier sends counts), and is then
//! refused: the sender hears `rejected` `overloaded` with a `retry_after_ms` (REST: 503 with
//! `Retry-After`). So what the mesh has
//! accepted but not stored stays near `partitions x bound` however fast clients send, instead of
//! growing in the stream while accept latency climbs. A report older than
//! `BACKLOG_REPORT_STALE` counts as none: its owner is gone, and JetStream keeps what is
//! accepted until the next owner reports (whatever its epoch: see `Admission::record`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh_contracts::chat::{BACKLOG_REPORT_STALE, ChatBacklog};
use mesh_nats::Bus;
use tokio::sync::watch;

/// How long a client refused for overload is told to wait before sending again.
pub const RETRY_AFTER: Duration = Duration::from_millis(250);

/// How long after the edge read a send it may still wait for its partition to drain before it
/// is refused: the first push-back is a slower `accepted`, a refusal only when the store stays
/// behind. Counted from the read, not from when the send's turn came, so a WebSocket send
/// queued behind others of its connection is answered within about this long too.
pub const HOLD: Duration = Duration::from_millis(500);

/// The latest report of each partition, shared by every request of this edge.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    /// Most unstored messages per partition; 0 admits everything.
    bound: u64,
    started: Instant,
    partitions: Vec<Latest>,
}

/// One partition's latest report.
#[derive(Default)]
struct Latest {
    epoch: AtomicU64,
    unstored: AtomicU64,
    /// When it arrived, in milliseconds since `started` (0: never).
    at_ms: AtomicU64,
    /// Woken by every report, for sends waiting for the partition to drain.
    reported: tokio::sync::Notify,
}

impl Admission {
    pub fn new(partitions: u32, bound: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                bound,
                started: Instant::now(),
                partitions: (0..partitions).map(|_| Latest::default()).collect(),
            }),
        }
    }

    /// Whether a new message may join `partition` now.
    pub fn admits(&self, partition: u32) -> bool {
        let inner = &self.inner;
        let Some(latest) = inner.partitions.get(partition as usize) else {
            return true;
        };
        if inner.bound == 0 {
            return true;
        }
        let at = latest.at_ms.load(Ordering::Acquire);
        let fresh = at != 0 && self.now_ms().saturating_sub(at) <= stale_ms();
        !fresh || latest.unstored.load(Ordering::Relaxed) < inner.bound
    }

    /// Whether a new message may join `partition`, waiting until `deadline` for it to drain
    /// (a deadline already past answers at once).
    pub async fn admitted_by(&self, partition: u32, deadline: tokio::time::Instant) -> bool {
        let Some(latest) = self.inner.partitions.get(partition as usize) else {
            return true;
        };
        loop {
            let reported = latest.reported.notified();
            if self.admits(partition) {
                return true;
            }
            if tokio::time::timeout_at(deadline, reported).await.is_err() {
                return self.admits(partition);
            }
        }
    }

    /// Takes in a report; one from an earlier epoch than the latest seen is stale while that
    /// latest is fresh. Once it is not (its owner is gone), any owner's report counts: epochs
    /// start again low when the lease bucket is made anew (JetStream lost its store), and the
    /// new owners' reports must not be ignored for good.
    pub fn record(&self, partition: u32, report: ChatBacklog) {
        self.record_at(partition, report, self.now_ms());
    }

    /// `record`, `now_ms` after `started`.
    fn record_at(&self, partition: u32, report: ChatBacklog, now_ms: u64) {
        let Some(latest) = self.inner.partitions.get(partition as usize) else {
            return;
        };
        let at = latest.at_ms.load(Ordering::Acquire);
        let fresh = at != 0 && now_ms.saturating_sub(at) <= stale_ms();
        if fresh && report.epoch < latest.epoch.load(Ordering::Relaxed) {
            return;
        }
        latest.epoch.store(report.epoch, Ordering::Relaxed);
        latest.unstored.store(report.unstored, Ordering::Relaxed);
        latest.at_ms.store(now_ms.max(1), Ordering::Release);
        latest.reported.notify_waiters();
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Follows every partition's reports until `stop`, subscribing again after a failure.
    pub async fn follow(self, bus: Bus, mut stop: watch::Receiver<bool>) {
        loop {
            match bus.chat_backlogs().await {
                Ok(mut reports) => loop {
                    let next = tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        next = reports.next() => next,
                    };
                    match next {
                        Some((partition, report)) => self.record(partition, report),
                        None => break,
                    }
                },
                Err(err) => tracing::warn!(error = %err, "cannot follow the ingest backlogs"),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

fn stale_ms() -> u64 {
    u64::try_from(BACKLOG_REPORT_STALE.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(epoch: u64, unstored: u64) -> ChatBacklog {
        ChatBacklog { epoch, unstored }
    }

    #[test]
    fn a_partition_at_its_bound_takes_nothing_until_it_drains() {
        let admission = Admission::new(4, 100);
        assert!(admission.admits(1), "no report yet");
        admission.record(1, report(7, 100));
        assert!(!admission.admits(1));
        assert!(admission.admits(2), "other partitions are not held back");
        admission.record(1, report(7, 99));
        assert!(admission.admits(1));
    }

    #[test]
    fn reports_of_an_earlier_owner_are_ignored() {
        let admission = Admission::new(2, 10);
        admission.record(0, report(8, 0));
        admission.record(0, report(7, 500));
        assert!(admission.admits(0));
        admission.record(0, report(9, 500));
        assert!(!admission.admits(0));
    }

    #[test]
    fn an_earlier_epoch_counts_once_the_latest_report_is_stale() {
        // The lease bucket made anew: the new owner's epochs are far below the old one's.
        let admission = Admission::new(1, 10);
        let unstored = || {
            admission.inner.partitions[0]
                .unstored
                .load(Ordering::Relaxed)
        };
        admission.record_at(0, report(40_000, 0), 1_000);
        admission.record_at(0, report(7, 500), 1_000 + stale_ms());
        assert_eq!(
            unstored(),
            0,
            "ignored while the later epoch's report is fresh"
        );
        admission.record_at(0, report(7, 500), 1_001 + stale_ms());
        assert_eq!(unstored(), 500, "taken once it is stale");
        admission.record_at(0, report(6, 3), 1_002 + stale_ms());
        assert_eq!(
            unstored(),
            500,
            "and from then on earlier epochs than the new owner's are ignored again"
        );
    }

    #[tokio::test]
    async fn a_held_send_is_admitted_by_the_report_that_drains_its_partition() {
        let admission = Admission::new(1, 10);
        admission.record(0, report(1, 50));
        let waiting = tokio::spawn({
            let admission = admission.clone();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            async move { admission.admitted_by(0, deadline).await }
        });
        tokio::task::yield_now().await;
        admission.record(0, report(1, 3));
        assert!(waiting.await.unwrap());
        admission.record(0, report(1, 50));
        let soon = tokio::time::Instant::now() + Duration::from_millis(1);
        assert!(!admission.admitted_by(0, soon).await);
    }

    #[tokio::test]
    async fn a_send_whose_deadline_passed_while_queued_is_refused_without_waiting() {
        let admission = Admission::new(1, 10);
        admission.record(0, report(1, 50));
        let read_at = tokio::time::Instant::now() - HOLD * 2;
        let asking = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admitted_by(0, read_at + HOLD).await }
        });
        // Let the send be judged; one that kept waiting would still be pending here.
        for _ in 0..100 {
            if asking.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        // The partition drains now: a send still waiting for it would be admitted.
        admission.record(0, report(1, 3));
        assert!(!asking.await.unwrap(), "a send past its deadline waited");
        assert!(
            admission.admitted_by(0, read_at + HOLD).await,
            "a drained partition admits late sends too"
        );
    }

    #[test]
    fn a_bound_of_zero_admits_everything_and_unknown_partitions_pass() {
        let admission = Admission::new(2, 0);
        admission.record(0, report(1, u64::MAX));
        assert!(admission.admits(0));
        assert!(Admission::new(2, 10).admits(5));
    }
}
