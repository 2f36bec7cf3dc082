//! The hub's way to end a connection it cannot write to directly: it records a reason and
//! wakes the connection, which closes itself with that reason.

use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

use super::close::CloseReason;

#[derive(Default)]
pub struct Kick {
    /// 0 until kicked, then the first `CloseReason` given.
    reason: AtomicU8,
    wake: Notify,
}

impl Kick {
    /// Asks the connection to close; the first reason wins.
    pub fn kick(&self, reason: CloseReason) {
        let first = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            // `notify_one` keeps a permit when nobody waits yet, so the wake is never lost.
            self.wake.notify_one();
        }
    }

    pub fn reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.reason.load(Ordering::Acquire))
    }

    /// Resolves once the connection was kicked, with the reason.
    pub async fn kicked(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_wakes_a_later_waiter() {
        let kick = Kick::default();
        assert_eq!(kick.reason(), None);
        kick.kick(CloseReason::SlowConsumer);
        kick.kick(CloseReason::Shutdown);
        assert_eq!(kick.kicked().await, CloseReason::SlowConsumer);
    }
}
