//! The frames waiting for one connection: filled by the user's forwarder, emptied by the
//! connection's task, at most `capacity` waiting (one more and the connection is a slow
//! consumer). A plain deque behind a lock rather than a channel: an idle connection's queue
//! holds no buffer at all, where a tokio channel keeps about 1.5 KiB per connection whether
//! anything waits or not.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// Room kept after a burst drains; more is given back.
const KEPT_ROOM: usize = 16;

#[derive(Debug)]
pub struct PushQueue {
    waiting: Mutex<VecDeque<Bytes>>,
    /// Woken by each push; one permit is kept when nobody waits, so none is missed.
    pushed: Notify,
    capacity: usize,
}

impl PushQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            waiting: Mutex::new(VecDeque::new()),
            pushed: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues `frame`; false, and nothing queued, when `capacity` frames already wait.
    pub fn try_push(&self, frame: Bytes) -> bool {
        {
            let mut waiting = self.lock();
            if waiting.len() >= self.capacity {
                return false;
            }
            waiting.push_back(frame);
        }
        self.pushed.notify_one();
        true
    }

    /// The next frame, waiting for one. Safe to drop while waiting: a frame is taken only
    /// when it is answered.
    pub async fn recv(&self) -> Bytes {
        loop {
            if let Some(frame) = self.pop() {
                return frame;
            }
            self.pushed.notified().await;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn pop(&self) -> Option<Bytes> {
        let mut waiting = self.lock();
        let frame = waiting.pop_front();
        if waiting.is_empty() && waiting.capacity() > 4 * KEPT_ROOM {
            waiting.shrink_to(KEPT_ROOM);
        }
        frame
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Bytes>> {
        // Every change is one call on the deque: a panic elsewhere leaves it whole.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn frames_come_out_in_order_and_a_full_queue_refuses() {
        let queue = PushQueue::new(2);
        assert!(queue.is_empty());
        assert!(queue.try_push(Bytes::from_static(b"1")));
        assert!(queue.try_push(Bytes::from_static(b"2")));
        assert!(!queue.try_push(Bytes::from_static(b"3")), "over capacity");
        assert_eq!(queue.pop().as_deref(), Some(&b"1"[..]));
        assert!(queue.try_push(Bytes::from_static(b"3")));
        assert_eq!(queue.pop().as_deref(), Some(&b"2"[..]));
        assert_eq!(queue.pop().as_deref(), Some(&b"3"[..]));
        assert!(queue.pop().is_none());
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_push_and_none_is_lost_when_nobody_waits() {
        let queue = Arc::new(PushQueue::new(8));
        let receiver = tokio::spawn({
            let queue = queue.clone();
            async move { queue.recv().await }
        });
        tokio::task::yield_now().await;
        assert!(queue.try_push(Bytes::from_static(b"late")));
        assert_eq!(&receiver.await.unwrap()[..], b"late");
        // Pushed before anyone waits: the next receive finds it at once.
        assert!(queue.try_push(Bytes::from_static(b"early")));
        let got = tokio::time::timeout(Duration::from_secs(5), queue.recv()).await;
        assert_eq!(&got.expect("not lost")[..], b"early");
    }

    #[test]
    fn a_drained_burst_gives_its_room_back() {
        let queue = PushQueue::new(1_000);
        for _ in 0..500 {
            assert!(queue.try_push(Bytes::from_static(b"x")));
        }
        while queue.pop().is_some() {}
        assert!(queue.lock().capacity() <= 4 * KEPT_ROOM);
    }
}
