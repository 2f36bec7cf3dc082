//! The caller's deadline of an RPC, carried in the `Mesh-Deadline` header: the time at which
//! the caller stops waiting for the answer, in milliseconds since the Unix epoch by the
//! caller's clock. The service host drops a request's handler once it passed (an answer
//! nobody reads is wasted work: a sign-in's password hash, a transaction), and answers
//! `timeout` at once to a request whose deadline passed before its turn came.
//!
//! An absolute time rather than a budget, because a request can wait in the service's NATS
//! subscription (behind a busy endpoint) for longer than its caller waits, and only an absolute
//! time tells how long once it is read. The mesh's roles already agree on the time (access
//! tokens are checked against their `exp`); a service whose clock runs ahead by δ drops work δ
//! early.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;

/// Header name; only this crate reads or writes it.
pub(crate) const DEADLINE: &str = "Mesh-Deadline";

/// Writes the deadline of a call that waits `timeout` from now into `map`. The mesh's RPC
/// client does it for every call; a client building its own requests (a test) may too.
pub fn put_deadline(map: &mut HeaderMap, timeout: Duration) {
    let at = SystemTime::now() + timeout;
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis())
        .unwrap_or(0);
    map.insert(DEADLINE, ms.to_string().as_str());
}

/// The instant at which the caller of a request read now stops waiting, or `None` when the
/// request carries no (readable) deadline: then the handler runs to the end, as for callers
/// from before the header. A deadline already passed is now.
pub(crate) fn read(map: Option<&HeaderMap>) -> Option<Instant> {
    let ms: u64 = map?.get(DEADLINE)?.as_str().trim().parse().ok()?;
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    let (now, wall) = (Instant::now(), SystemTime::now());
    match at.duration_since(wall) {
        Ok(left) => now.checked_add(left),
        Err(_) => Some(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_round_trips_through_the_header() {
        let mut map = HeaderMap::new();
        put_deadline(&mut map, Duration::from_secs(5));
        let at = read(Some(&map)).expect("a deadline");
        let left = at.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_millis(4_900) && left <= Duration::from_secs(5),
            "{left:?}"
        );
    }

    #[test]
    fn a_passed_deadline_is_now_and_garbage_is_none() {
        let mut map = HeaderMap::new();
        map.insert(DEADLINE, "1000");
        let at = read(Some(&map)).expect("a deadline");
        assert!(at <= Instant::now());
        for garbage in ["", "soon", "-5", "99999999999999999999999"] {
            let mut map = HeaderMap::new();
            map.insert(DEADLINE, garbage);
            assert_eq!(read(Some(&map)), None, "{garbage:?}");
        }
        assert_eq!(read(Some(&HeaderMap::new())), None);
        assert_eq!(read(None), None);
    }
}
