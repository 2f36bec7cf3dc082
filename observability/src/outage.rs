//! How a loop that keeps retrying something (a NATS connection, a feed it reopens, a lease it
//! renews) tells the log about an outage: its first failure as a warning, the next ones at
//! `debug` with a reminder a minute, and its end as one line that says how long it lasted and
//! how often it failed. Retrying every second, a warning per attempt would write thousands
//! of lines an hour per loop while a dependency is away.
//!
//! `outage_failed!` and `outage_over!` write those lines from a loop's `Outage`.

use std::time::{Duration, Instant};

/// How often an outage that goes on is mentioned again.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// What to say about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The first of an outage: a warning.
    First,
    /// An outage that goes on, a minute after it was last mentioned: a warning again.
    Reminder { down_for: Duration, failures: u64 },
    /// Any other failure of the outage: `debug` only.
    Again,
}

/// An outage that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub down_for: Duration,
    pub failures: u64,
}

impl Recovered {
    /// How long it lasted, in whole milliseconds (a log field).
    pub fn down_for_ms(&self) -> u64 {
        u64::try_from(self.down_for.as_millis()).unwrap_or(u64::MAX)
    }
}

#[derive(Debug)]
struct Current {
    since: Instant,
    failures: u64,
    mentioned: Instant,
}

/// One loop's outage, while it is in one.
#[derive(Debug, Default)]
pub struct Outage {
    current: Option<Current>,
}

impl Outage {
    /// Notes a failure at `now`; answers what to say about it.
    pub fn failed(&mut self, now: Instant) -> Failure {
        let Some(current) = &mut self.current else {
            self.current = Some(Current {
                since: now,
                failures: 1,
                mentioned: now,
            });
            return Failure::First;
        };
        current.failures += 1;
        if now.saturating_duration_since(current.mentioned) < REMIND_EVERY {
            return Failure::Again;
        }
        current.mentioned = now;
        Failure::Reminder {
            down_for: now.saturating_duration_since(current.since),
            failures: current.failures,
        }
    }

    /// The failures of the outage under way (0 when there is none): a loop of several calls
    /// compares it before and after a round to tell whether anything failed in it.
    pub fn failures(&self) -> u64 {
        self.current.as_ref().map_or(0, |current| current.failures)
    }

    /// Notes a success at `now`: the outage it ends, if there was one.
    pub fn recovered(&mut self, now: Instant) -> Option<Recovered> {
        self.current.take().map(|current| Recovered {
            down_for: now.saturating_duration_since(current.since),
            failures: current.failures,
        })
    }
}

/// Logs a failure of the loop whose `Outage` is given, with the fields and message given as to
/// `tracing::warn!`: a warning for the first of an outage and a reminder a minute (with
/// `down_for_s` and `failures`), `debug` for the others.
#[macro_export]
macro_rules! outage_failed {
    ($outage:expr, $($rest:tt)+) => {
        match $outage.failed(::std::time::Instant::now()) {
            $crate::outage::Failure::First => ::tracing::warn!($($rest)+),
            $crate::outage::Failure::Reminder { down_for, failures } => ::tracing::warn!(
                down_for_s = down_for.as_secs(),
                failures,
                $($rest)+
            ),
            $crate::outage::Failure::Again => ::tracing::debug!($($rest)+),
        }
    };
}

/// Logs at `info`, with `down_for_ms` and `failures` and the fields and message given, that the
/// outage of the loop whose `Outage` is given ended; nothing when it was in none.
#[macro_export]
macro_rules! outage_over {
    ($outage:expr, $($rest:tt)+) => {
        if let Some(over) = $outage.recovered(::std::time::Instant::now()) {
            ::tracing::info!(
                down_for_ms = over.down_for_ms(),
                failures = over.failures,
                $($rest)+
            );
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_warns_once_reminds_each_minute_and_ends_with_its_length() {
        let mut outage = Outage::default();
        let start = Instant::now();
        assert_eq!(outage.recovered(start), None, "no outage yet");
        assert_eq!(outage.failures(), 0);
        assert_eq!(outage.failed(start), Failure::First);
        assert_eq!(outage.failures(), 1);
        // Two attempts a second for most of a minute: all quiet.
        for half_seconds in 1..119 {
            let at = start + Duration::from_millis(500 * half_seconds);
            assert_eq!(outage.failed(at), Failure::Again, "{at:?}");
        }
        assert_eq!(
            outage.failed(start + REMIND_EVERY),
            Failure::Reminder {
                down_for: REMIND_EVERY,
                failures: 120
            }
        );
        assert_eq!(
            outage.failed(start + REMIND_EVERY + Duration::from_secs(1)),
            Failure::Again
        );
        let over = outage.recovered(start + Duration::from_secs(75));
        assert_eq!(
            over,
            Some(Recovered {
                down_for: Duration::from_secs(75),
                failures: 121
            })
        );
        assert_eq!(over.map(|o| o.down_for_ms()), Some(75_000));
        assert_eq!(outage.recovered(start + Duration::from_secs(76)), None);
        assert_eq!(outage.failures(), 0);
        // The next outage is a new one: warned of again.
        let again = start + Duration::from_secs(80);
        assert_eq!(outage.failed(again), Failure::First);
        assert_eq!(outage.failed(again), Failure::Again);
    }
}
