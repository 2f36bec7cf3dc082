//! The clocks of one WebSocket: when to ping, when the client counts as gone, and when its
//! token expires. One deadline at a time, so a connection needs a single timer.

use std::time::Duration;

use tokio::time::Instant;

/// What fell due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The access token expired without a refreshing `auth` frame.
    Expired,
    /// Nothing was received for the idle timeout.
    Idle,
    /// Time for the server's ping.
    Ping,
}

#[derive(Debug, Clone)]
pub struct Timers {
    heartbeat: Duration,
    idle_timeout: Duration,
    next_ping: Instant,
    idle_at: Instant,
    expires_at: Instant,
}

impl Timers {
    pub fn new(
        now: Instant,
        heartbeat: Duration,
        idle_timeout: Duration,
        expires_at: Instant,
    ) -> Self {
        Self {
            heartbeat,
            idle_timeout,
            next_ping: now + heartbeat,
            idle_at: now + idle_timeout,
            expires_at,
        }
    }

    /// The next instant something may fall due.
    pub fn next(&self) -> Instant {
        self.next_ping.min(self.idle_at).min(self.expires_at)
    }

    /// Something arrived from the client.
    pub fn heard(&mut self, now: Instant) {
        self.idle_at = now + self.idle_timeout;
    }

    /// A refreshed token expires at `expires_at`.
    pub fn renew(&mut self, expires_at: Instant) {
        self.expires_at = expires_at;
    }

    /// What is due at `now`, most final first; a due ping schedules the next one.
    pub fn due(&mut self, now: Instant) -> Option<Due> {
        if now >= self.expires_at {
            Some(Due::Expired)
        } else if now >= self.idle_at {
            Some(Due::Idle)
        } else if now >= self.next_ping {
            self.next_ping = now + self.heartbeat;
            Some(Due::Ping)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn pings_every_heartbeat_until_idle() {
        let start = Instant::now();
        let mut timers = Timers::new(start, 20 * SEC, 60 * SEC, start + 3600 * SEC);
        assert_eq!(timers.next(), start + 20 * SEC);
        assert_eq!(timers.due(start + 19 * SEC), None);
        assert_eq!(timers.due(start + 20 * SEC), Some(Due::Ping));
        assert_eq!(timers.next(), start + 40 * SEC);
        assert_eq!(timers.due(start + 40 * SEC), Some(Due::Ping));
        assert_eq!(timers.due(start + 60 * SEC), Some(Due::Idle));
    }

    #[test]
    fn hearing_from_the_client_postpones_idleness() {
        let start = Instant::now();
        let mut timers = Timers::new(start, 20 * SEC, 60 * SEC, start + 3600 * SEC);
        timers.heard(start + 50 * SEC);
        assert_eq!(timers.due(start + 60 * SEC), Some(Due::Ping));
        assert_eq!(timers.due(start + 109 * SEC), Some(Due::Ping));
        assert_eq!(timers.due(start + 110 * SEC), Some(Due::Idle));
    }

    #[test]
    fn expiry_comes_first_and_can_be_renewed() {
        let start = Instant::now();
        let mut timers = Timers::new(start, 20 * SEC, 60 * SEC, start + 30 * SEC);
        assert_eq!(timers.due(start + 20 * SEC), Some(Due::Ping));
        assert_eq!(timers.next(), start + 30 * SEC);
        timers.renew(start + 900 * SEC);
        assert_eq!(timers.next(), start + 40 * SEC);
        assert_eq!(timers.due(start + 901 * SEC), Some(Due::Expired));
    }
}
