//! A moment remembered for a while: "was this noted within the last `span`?". The store
//! rounds use it to stop guessing for a second after a guess proved wrong (a resend assumed
//! absent, a round stored ahead of social's answer).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub struct Lately {
    span: Duration,
    last: Mutex<Option<Instant>>,
}

impl Lately {
    pub const fn new(span: Duration) -> Self {
        Self {
            span,
            last: Mutex::new(None),
        }
    }

    /// Remembers now.
    pub fn note(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether `note` was called within the span.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    fn holds_at(&self, now: Instant) -> bool {
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.is_some_and(|at| now.saturating_duration_since(at) < self.span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_holds_for_its_span_only() {
        let span = Duration::from_secs(1);
        let lately = Lately::new(span);
        assert!(!lately.holds(), "nothing noted yet");
        lately.note();
        assert!(lately.holds());
        assert!(
            !lately.holds_at(Instant::now() + span),
            "the span has passed"
        );
    }
}
