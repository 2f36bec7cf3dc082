//! What a NATS connection's events say in the log: an outage's first failure as a warning, its
//! further reconnect attempts counted quietly (with a reminder a minute), and the reconnection
//! with how long the connection was down. A client retries every half second, so logging each
//! failure would write two lines a second per connection for as long as NATS is away.

use std::time::{Duration, Instant};

/// How often an outage that goes on is mentioned again.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// What an event is, as far as the log is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Connected,
    /// Disconnected, or a failed attempt to connect again.
    Failure,
    /// Draining or closed: the mesh itself is letting the connection go.
    Closing,
    /// Anything else (lame duck mode, a slow consumer, an error from the server).
    Other,
}

/// The line to write for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// The first connection.
    Connected,
    /// Connected again after an outage.
    Reconnected { down_for: Duration, failures: u64 },
    /// The first failure of an outage, or an event worth a warning of its own.
    Warn,
    /// An outage that goes on, mentioned again.
    StillDown { down_for: Duration, failures: u64 },
    /// Worth a debug line only: a further failure of an outage already reported, or the mesh
    /// closing the connection.
    Quiet,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u64,
    mentioned: Instant,
}

/// One connection's outage, if it is in one.
#[derive(Debug, Default)]
pub struct ConnectionLog {
    outage: Option<Outage>,
}

impl ConnectionLog {
    /// Notes `event`, seen at `now`, and answers what to write.
    pub fn on(&mut self, event: EventKind, now: Instant) -> Line {
        match event {
            EventKind::Connected => match self.outage.take() {
                None => Line::Connected,
                Some(outage) => Line::Reconnected {
                    down_for: now.saturating_duration_since(outage.since),
                    failures: outage.failures,
                },
            },
            EventKind::Failure => match &mut self.outage {
                None => {
                    self.outage = Some(Outage {
                        since: now,
                        failures: 1,
                        mentioned: now,
                    });
                    Line::Warn
                }
                Some(outage) => {
                    outage.failures += 1;
                    if now.saturating_duration_since(outage.mentioned) < REMIND_EVERY {
                        return Line::Quiet;
                    }
                    outage.mentioned = now;
                    Line::StillDown {
                        down_for: now.saturating_duration_since(outage.since),
                        failures: outage.failures,
                    }
                }
            },
            EventKind::Closing => Line::Quiet,
            EventKind::Other => Line::Warn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_warns_once_reminds_each_minute_and_ends_with_its_length() {
        let mut log = ConnectionLog::default();
        let start = Instant::now();
        assert_eq!(log.on(EventKind::Connected, start), Line::Connected);
        let down = start + Duration::from_secs(10);
        assert_eq!(log.on(EventKind::Failure, down), Line::Warn);
        // Two attempts a second for most of a minute: all quiet.
        for half_seconds in 1..119 {
            let at = down + Duration::from_millis(500 * half_seconds);
            assert_eq!(log.on(EventKind::Failure, at), Line::Quiet, "{at:?}");
        }
        assert_eq!(
            log.on(EventKind::Failure, down + REMIND_EVERY),
            Line::StillDown {
                down_for: REMIND_EVERY,
                failures: 120
            }
        );
        assert_eq!(
            log.on(
                EventKind::Failure,
                down + REMIND_EVERY + Duration::from_secs(1)
            ),
            Line::Quiet
        );
        assert_eq!(
            log.on(EventKind::Connected, down + Duration::from_secs(75)),
            Line::Reconnected {
                down_for: Duration::from_secs(75),
                failures: 121
            }
        );
        // The next outage is a new one: warned of again.
        let again = down + Duration::from_secs(80);
        assert_eq!(log.on(EventKind::Failure, again), Line::Warn);
        assert_eq!(log.on(EventKind::Failure, again), Line::Quiet);
    }

    #[test]
    fn other_events_always_warn_and_closing_stays_quiet() {
        let mut log = ConnectionLog::default();
        let now = Instant::now();
        assert_eq!(log.on(EventKind::Other, now), Line::Warn);
        assert_eq!(log.on(EventKind::Other, now), Line::Warn);
        assert_eq!(log.on(EventKind::Closing, now), Line::Quiet);
        // Neither starts an outage: connecting is a first connection.
        assert_eq!(log.on(EventKind::Connected, now), Line::Connected);
    }
}
