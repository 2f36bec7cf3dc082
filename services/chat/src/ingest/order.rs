//! The order of one partition's batches while two of them are in store rounds at once: the
//! owner queues its next batch as soon as the previous one's round has started, so the next
//! batch is read, gathered and authorized while the previous one stores. A batch stores only
//! after the one before it is stored and its stream position recorded, and pushes only after
//! that one pushed, so the partition's messages are stored, delivered and acknowledged in
//! stream order. A batch whose predecessor ended without being stored (fenced out, handed
//! over, halted) is not stored either: the next owner resumes right after what is stored.

use tokio::sync::watch;

/// How far a batch went, in the order it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Waiting for a round.
    Queued,
    /// Its round started: a batch queued now cannot join that round.
    Started,
    /// Stored (or refused) whole, and its stream position recorded.
    Stored,
    /// Its messages were pushed.
    Delivered,
}

/// A batch's progress, seen by the batch after it. Dropping it ends the batch: a successor
/// still waiting for [`Stage::Stored`] then learns that it never will be.
#[derive(Debug)]
pub struct Progress(watch::Sender<Stage>);

/// The progress of the batch before, as the batch after it waits on it.
#[derive(Debug, Clone)]
pub struct Previous(watch::Receiver<Stage>);

impl Progress {
    /// A queued batch's progress, and the handle its successor waits on.
    pub fn new() -> (Self, Previous) {
        let (tell, seen) = watch::channel(Stage::Queued);
        (Self(tell), Previous(seen))
    }

    /// The batch reached `stage` (a stage never goes back).
    pub fn reach(&self, stage: Stage) {
        self.0.send_if_modified(|current| {
            let further = *current < stage;
            if further {
                *current = stage;
            }
            further
        });
    }
}

impl Previous {
    /// Waits until the batch before is stored; false when it ended without being stored.
    pub async fn stored(&mut self) -> bool {
        self.0
            .wait_for(|stage| *stage >= Stage::Stored)
            .await
            .is_ok()
    }

    /// Waits until the batch before pushed its messages, or ended.
    pub async fn delivered(&mut self) {
        let _ = self.0.wait_for(|stage| *stage >= Stage::Delivered).await;
    }

    /// Waits until the batch before is in a round, or ended.
    pub async fn started(&mut self) {
        let _ = self.0.wait_for(|stage| *stage >= Stage::Started).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    /// Whether `wait` finishes without anything else happening first.
    async fn finishes<F: Future>(wait: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), wait)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_successor_waits_for_each_stage_in_turn() {
        let (progress, previous) = Progress::new();
        assert!(!finishes(previous.clone().started()).await);
        progress.reach(Stage::Started);
        assert!(finishes(previous.clone().started()).await);
        assert!(!finishes(previous.clone().stored()).await);
        progress.reach(Stage::Stored);
        assert!(previous.clone().stored().await);
        assert!(!finishes(previous.clone().delivered()).await);
        progress.reach(Stage::Delivered);
        assert!(finishes(previous.clone().delivered()).await);
    }

    #[tokio::test]
    async fn a_batch_ended_before_storing_is_never_stored() {
        let (progress, mut previous) = Progress::new();
        progress.reach(Stage::Started);
        drop(progress);
        assert!(!previous.stored().await);
        assert!(finishes(previous.clone().delivered()).await);
    }

    #[tokio::test]
    async fn a_batch_ended_after_storing_stays_stored() {
        let (progress, mut previous) = Progress::new();
        progress.reach(Stage::Stored);
        drop(progress);
        assert!(previous.stored().await);
        assert!(
            finishes(previous.delivered()).await,
            "not delivered, but ended"
        );
    }

    #[tokio::test]
    async fn a_stage_never_goes_back() {
        let (progress, mut previous) = Progress::new();
        progress.reach(Stage::Delivered);
        progress.reach(Stage::Started);
        assert!(previous.stored().await);
    }
}
