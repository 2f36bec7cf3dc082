//! Which keys the sign-in failure bucket may hold, as a watch of it reports them: a key it
//! does not know while it is current was never written, or was deleted, or expired, so a
//! sign-in need not read it. Every doubt answers "may hold" (and the caller reads the bucket):
//! while the copy is not current, and for a while after it had to drop keys to stay bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Keys held at most; past that, keys are not remembered and every unknown key may be held.
pub const MOST_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct FailedKeys {
    /// Each key's newest revision seen, and when it was seen written.
    keys: HashMap<String, (u64, Instant)>,
    /// How long a written key may live in the bucket (its window, plus a margin for clocks).
    keep: Duration,
    most: usize,
    /// The copy holds every key the bucket held when the watch opened, and each change since.
    current: bool,
    /// Until when an unknown key may still be held because one was dropped.
    dropped_until: Option<Instant>,
}

impl FailedKeys {
    pub fn new(keep: Duration, most: usize) -> Self {
        Self {
            keys: HashMap::new(),
            keep,
            most,
            current: false,
            dropped_until: None,
        }
    }

    /// A watch (re-)opened or broke: nothing is known until it caught up again.
    pub fn restart(&mut self) {
        self.keys.clear();
        self.current = false;
        self.dropped_until = None;
    }

    /// The watch delivered everything the bucket held.
    pub fn current(&mut self) {
        self.current = true;
    }

    /// `key` was written at `revision` (seen at `now`); an older revision than one already
    /// seen changes nothing.
    pub fn written(&mut self, key: &str, revision: u64, now: Instant) {
        if let Some((seen, at)) = self.keys.get_mut(key) {
            if *seen < revision {
                *seen = revision;
                *at = now;
            }
            return;
        }
        if self.keys.len() >= self.most {
            self.keys
                .retain(|_, (_, at)| now.duration_since(*at) < self.keep);
        }
        if self.keys.len() >= self.most {
            self.dropped_until = Some(now + self.keep);
            return;
        }
        self.keys.insert(key.to_owned(), (revision, now));
    }

    /// `key` was deleted or purged at `revision`; a write seen since keeps it.
    pub fn deleted(&mut self, key: &str, revision: u64) {
        if self
            .keys
            .get(key)
            .is_some_and(|(seen, _)| *seen <= revision)
        {
            self.keys.remove(key);
        }
    }

    /// Whether the bucket may hold `key` at `now`.
    pub fn may_hold(&self, key: &str, now: Instant) -> bool {
        if !self.current || self.dropped_until.is_some_and(|until| now < until) {
            return true;
        }
        self.keys
            .get(key)
            .is_some_and(|(_, at)| now.duration_since(*at) < self.keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Duration = Duration::from_secs(60);

    fn current(most: usize) -> FailedKeys {
        let mut keys = FailedKeys::new(KEEP, most);
        keys.current();
        keys
    }

    #[test]
    fn every_key_may_be_held_until_the_watch_is_current() {
        let now = Instant::now();
        let mut keys = FailedKeys::new(KEEP, 10);
        assert!(keys.may_hold("account.a", now));
        keys.current();
        assert!(!keys.may_hold("account.a", now));
        keys.restart();
        assert!(keys.may_hold("account.a", now), "a re-opened watch");
    }

    #[test]
    fn a_written_key_is_held_until_it_expires_or_is_deleted() {
        let now = Instant::now();
        let mut keys = current(10);
        keys.written("account.a", 3, now);
        keys.written("ip.b", 4, now);
        assert!(keys.may_hold("account.a", now));
        assert!(keys.may_hold("account.a", now + KEEP - Duration::from_secs(1)));
        assert!(!keys.may_hold("account.a", now + KEEP), "expired");
        keys.deleted("account.a", 5);
        assert!(!keys.may_hold("account.a", now));
        assert!(keys.may_hold("ip.b", now));
    }

    #[test]
    fn a_delete_older_than_the_write_seen_keeps_the_key() {
        let now = Instant::now();
        let mut keys = current(10);
        // Our own write is known before the watch brings the delete that preceded it.
        keys.written("account.a", 7, now);
        keys.deleted("account.a", 6);
        assert!(keys.may_hold("account.a", now));
        keys.written("account.a", 5, now + KEEP);
        assert!(
            !keys.may_hold("account.a", now + KEEP),
            "an older write does not renew the key"
        );
    }

    #[test]
    fn past_the_bound_expired_keys_make_room_and_dropped_keys_leave_doubt() {
        let now = Instant::now();
        let mut keys = current(2);
        keys.written("a", 1, now);
        keys.written("b", 2, now);
        let later = now + KEEP;
        keys.written("c", 3, later);
        assert!(keys.may_hold("c", later), "room made by the expired");
        assert!(!keys.may_hold("unknown", later));
        keys.written("d", 4, later);
        keys.written("e", 5, later);
        assert!(
            keys.may_hold("e", later),
            "dropped, so unknown keys may be held"
        );
        assert!(keys.may_hold("unknown", later + KEEP - Duration::from_secs(1)));
        assert!(
            !keys.may_hold("unknown", later + KEEP),
            "every dropped key has expired since"
        );
    }
}
