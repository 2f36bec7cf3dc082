//! Which live worker should own which partition: rendezvous hashing, so a worker joining or
//! leaving moves only the partitions it gains or loses.

use uuid::Uuid;

/// FNV-1a over the worker id and partition: stable across processes and versions.
fn weight(worker: Uuid, partition: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in worker.as_bytes().iter().chain(&partition.to_be_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV mixes the last bytes weakly; finish with a murmur-style avalanche.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash
}

/// The worker that should own `partition` among `workers` (none when there are none).
pub fn owner(partition: u32, workers: &[Uuid]) -> Option<Uuid> {
    workers
        .iter()
        .copied()
        .max_by_key(|worker| (weight(*worker, partition), *worker))
}

/// The partitions `me` should own among `workers`.
pub fn wanted(me: Uuid, partitions: u32, workers: &[Uuid]) -> Vec<u32> {
    (0..partitions)
        .filter(|p| owner(*p, workers) == Some(me))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_owner() {
        let workers: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut owned: Vec<u32> = workers
            .iter()
            .flat_map(|w| wanted(*w, 64, &workers))
            .collect();
        owned.sort_unstable();
        assert_eq!(owned, (0..64).collect::<Vec<_>>());
        for w in &workers {
            assert!(!wanted(*w, 64, &workers).is_empty(), "work is spread");
        }
    }

    #[test]
    fn a_leaving_worker_moves_only_its_own_partitions() {
        let workers: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let before: Vec<Option<Uuid>> = (0..64).map(|p| owner(p, &workers)).collect();
        let remaining = &workers[1..];
        for (p, was) in before.iter().enumerate() {
            let now = owner(p as u32, remaining);
            if *was != Some(workers[0]) {
                assert_eq!(now, *was, "partition {p} moved needlessly");
            }
        }
        assert_eq!(owner(0, &[]), None);
    }
}
