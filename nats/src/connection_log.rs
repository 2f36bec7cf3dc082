//! What a NATS connection's events say in the log: an outage's first failure as a warning, its
//! further reconnect attempts quietly (with a reminder a minute), and the reconnection with
//! how long the connection was down (`mesh_observability::outage`). A client retries every
//! half second, so a line per failure would write two a second per connection for as long
//! as NATS is away.

use std::time::{Duration, Instant};

use mesh_observability::outage::{Failure, Outage};

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
    /// The first failure of an outage.
    Lost,
    /// An event worth a warning of its own (lame duck mode, a slow consumer, a server error).
    Notice,
    /// An outage that goes on, mentioned again.
    StillDown { down_for: Duration, failures: u64 },
    /// Worth a debug line only: a further failure of an outage already reported, or the mesh
    /// closing the connection.
    Quiet,
}

/// One connection's outage, if it is in one.
#[derive(Debug, Default)]
pub struct ConnectionLog {
    outage: Outage,
}

impl ConnectionLog {
    /// Notes `event`, seen at `now`, and answers what to write.
    pub fn on(&mut self, event: EventKind, now: Instant) -> Line {
        match event {
            EventKind::Connected => match self.outage.recovered(now) {
                None => Line::Connected,
                Some(over) => Line::Reconnected {
                    down_for: over.down_for,
                    failures: over.failures,
                },
            },
            EventKind::Failure => match self.outage.failed(now) {
                Failure::First => Line::Lost,
                Failure::Reminder { down_for, failures } => Line::StillDown { down_for, failures },
                Failure::Again => Line::Quiet,
            },
            EventKind::Closing => Line::Quiet,
            EventKind::Other => Line::Notice,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_make_an_outage_that_connecting_ends() {
        let mut log = ConnectionLog::default();
        let start = Instant::now();
        assert_eq!(log.on(EventKind::Connected, start), Line::Connected);
        assert_eq!(log.on(EventKind::Failure, start), Line::Lost);
        assert_eq!(log.on(EventKind::Failure, start), Line::Quiet);
        let back = start + Duration::from_secs(3);
        assert_eq!(
            log.on(EventKind::Connected, back),
            Line::Reconnected {
                down_for: Duration::from_secs(3),
                failures: 2
            }
        );
    }

    #[test]
    fn other_events_always_warn_and_closing_stays_quiet() {
        let mut log = ConnectionLog::default();
        let now = Instant::now();
        assert_eq!(log.on(EventKind::Other, now), Line::Notice);
        assert_eq!(log.on(EventKind::Other, now), Line::Notice);
        assert_eq!(log.on(EventKind::Closing, now), Line::Quiet);
        // Neither starts an outage: connecting is a first connection.
        assert_eq!(log.on(EventKind::Connected, now), Line::Connected);
    }
}
