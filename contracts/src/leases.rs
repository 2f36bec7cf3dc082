//! Chat partition leases in the LEASES bucket: the keys a worker writes, and the timings that
//! depend on each other, derived here from the bucket's age limit so they cannot drift apart.

use std::time::Duration;

use uuid::Uuid;

/// How long a lease (and a worker's announcement) lives unless renewed: the bucket's age
/// limit (`mesh migrate` creates the bucket with it).
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// A lease not renewed for this long is treated as lost by its holder, a second before the
/// bucket expires it, so a holder gives a partition up before another worker can take it.
pub const LEASE_GRACE: Duration = LEASE_TTL.saturating_sub(Duration::from_secs(1));
/// Longest wait for one lease call: during a NATS blip a call fails after this instead of
/// hanging, so the next renewal (every second) retries well inside [`LEASE_GRACE`].
pub const LEASE_CALL_TIMEOUT: Duration = Duration::from_millis(750);

/// A key of the LEASES bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseKey {
    /// A live chat worker's announcement (`worker.<id>`).
    Worker(Uuid),
    /// The lease of one ingest partition (`part.<n>`); its value is the holder's worker id.
    Partition(u32),
}

impl LeaseKey {
    /// The prefix shared by every worker announcement (for listing them).
    pub const WORKERS: &'static str = "worker.";
    const PARTITION: &'static str = "part.";

    pub fn key(self) -> String {
        match self {
            LeaseKey::Worker(id) => format!("{}{id}", Self::WORKERS),
            LeaseKey::Partition(partition) => format!("{}{partition}", Self::PARTITION),
        }
    }

    pub fn parse(key: &str) -> Option<Self> {
        if let Some(id) = key.strip_prefix(Self::WORKERS) {
            return Uuid::parse_str(id).ok().map(LeaseKey::Worker);
        }
        let partition = key.strip_prefix(Self::PARTITION)?;
        let parsed = LeaseKey::Partition(partition.parse().ok()?);
        (parsed.key() == key).then_some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_round_trip() {
        let worker = LeaseKey::Worker(Uuid::now_v7());
        assert_eq!(LeaseKey::parse(&worker.key()), Some(worker));
        assert_eq!(LeaseKey::Partition(7).key(), "part.7");
        assert_eq!(LeaseKey::parse("part.7"), Some(LeaseKey::Partition(7)));
        for foreign in ["part.", "part.07", "part.-1", "worker.nope", "other.1", ""] {
            assert_eq!(LeaseKey::parse(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn a_holder_gives_up_before_the_bucket_frees_its_lease() {
        assert!(LEASE_GRACE < LEASE_TTL);
        // Several renewal attempts (one per second, each bounded) fit in the grace period.
        assert!(LEASE_CALL_TIMEOUT * 3 < LEASE_GRACE);
    }
}
