//! Wall-clock helpers: Unix milliseconds for the wire, and wall-clock deadlines (token
//! expiry) as timer instants.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Farther deadlines are treated as this far away (keeps `Instant` arithmetic in range).
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

pub fn unix_millis() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// The timer instant at which the wall clock reaches `deadline` (now, if it already passed).
pub fn instant_at(deadline: SystemTime) -> Instant {
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .min(FAR_FUTURE);
    Instant::now() + left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_deadlines_are_now_and_far_ones_are_bounded() {
        let now = Instant::now();
        assert!(instant_at(UNIX_EPOCH) <= Instant::now());
        assert!(instant_at(UNIX_EPOCH) >= now);
        let far = SystemTime::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        assert!(instant_at(far) <= Instant::now() + FAR_FUTURE);
        let soon = SystemTime::now() + Duration::from_secs(60);
        assert!(instant_at(soon) > now + Duration::from_secs(50));
    }
}
