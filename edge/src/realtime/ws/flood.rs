//! The frame budget of one WebSocket: a token bucket over the client's frames. A frame over
//! the budget is answered with an `error` frame (`rate_limited`); a client that keeps sending
//! that many refused frames in a row is closed with 4029.

use std::time::Instant;

use crate::rate_limit::{Quota, TokenBucket};

/// What to do with one client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
    Serve,
    /// Answer with a `rate_limited` error frame and drop the frame.
    Refuse,
    /// Close the connection: it keeps flooding.
    Close,
}

pub struct FloodGuard {
    quota: Quota,
    bucket: TokenBucket,
    refused_in_a_row: u32,
    close_after: u32,
}

impl FloodGuard {
    pub fn new(quota: Quota, close_after: u32, now: Instant) -> Self {
        Self {
            quota,
            bucket: TokenBucket::full(&quota, now),
            refused_in_a_row: 0,
            close_after: close_after.max(1),
        }
    }

    pub fn judge(&mut self, now: Instant) -> FrameVerdict {
        if self.bucket.take(&self.quota, now).allowed {
            self.refused_in_a_row = 0;
            return FrameVerdict::Serve;
        }
        mesh_observability::metrics::RATE_LIMITED
            .with_label_values(&["ws_frames"])
            .inc();
        self.refused_in_a_row += 1;
        if self.refused_in_a_row >= self.close_after {
            FrameVerdict::Close
        } else {
            FrameVerdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_flood_is_refused_then_closed_and_a_pause_forgives() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(Quota::new(2, Duration::from_secs(2)), 3, t0);
        assert_eq!(guard.judge(t0), FrameVerdict::Serve);
        assert_eq!(guard.judge(t0), FrameVerdict::Serve);
        assert_eq!(guard.judge(t0), FrameVerdict::Refuse);
        assert_eq!(guard.judge(t0), FrameVerdict::Refuse);
        // A served frame resets the streak.
        assert_eq!(
            guard.judge(t0 + Duration::from_secs(1)),
            FrameVerdict::Serve
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(guard.judge(t1), FrameVerdict::Refuse);
        assert_eq!(guard.judge(t1), FrameVerdict::Refuse);
        assert_eq!(guard.judge(t1), FrameVerdict::Close);
    }
}
