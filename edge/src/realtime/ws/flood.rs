//! The frame budgets of one WebSocket: a token bucket over the socket's frames, and the one
//! all of the user's sockets on this edge share (`RateLimits::ws_frame`), so more sockets do
//! not mean more frames. A frame over either budget is answered with an `error` frame
//! (`rate_limited`); a socket that keeps sending that many refused frames in a row is closed
//! with 4029.

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

    /// Judges one frame at `now`: the socket's budget first, then the user's (`user_budget`
    /// takes a token from it and says whether there was one; it is asked only for frames the
    /// socket's budget let through, and counts its own refusals).
    pub fn judge(&mut self, now: Instant, user_budget: impl FnOnce() -> bool) -> FrameVerdict {
        let allowed = if self.bucket.take(&self.quota, now).allowed {
            user_budget()
        } else {
            mesh_observability::metrics::RATE_LIMITED
                .with_label_values(&["ws_frames"])
                .inc();
            false
        };
        if allowed {
            self.refused_in_a_row = 0;
            return FrameVerdict::Serve;
        }
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
        let mut judge = |at| guard.judge(at, || true);
        assert_eq!(judge(t0), FrameVerdict::Serve);
        assert_eq!(judge(t0), FrameVerdict::Serve);
        assert_eq!(judge(t0), FrameVerdict::Refuse);
        assert_eq!(judge(t0), FrameVerdict::Refuse);
        // A served frame resets the streak.
        assert_eq!(judge(t0 + Duration::from_secs(1)), FrameVerdict::Serve);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(judge(t1), FrameVerdict::Refuse);
        assert_eq!(judge(t1), FrameVerdict::Refuse);
        assert_eq!(judge(t1), FrameVerdict::Close);
    }

    /// The user's budget refuses (and closes) like the socket's own, and is not charged for
    /// frames the socket's budget already refused.
    #[test]
    fn the_users_budget_refuses_like_the_sockets() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(Quota::new(1, Duration::from_secs(60)), 2, t0);
        let mut asked = 0;
        let mut user_budget = |left: bool| {
            asked += 1;
            left
        };
        assert_eq!(guard.judge(t0, || user_budget(false)), FrameVerdict::Refuse);
        assert_eq!(guard.judge(t0, || user_budget(true)), FrameVerdict::Close);
        assert_eq!(
            asked, 1,
            "the socket's budget refused the second frame first"
        );
    }
}
