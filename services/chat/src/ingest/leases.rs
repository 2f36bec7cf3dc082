//! Partition leases in the LEASES bucket. A worker announces itself under `worker.<id>` and
//! holds a partition while `part.<n>` names it; both expire with the bucket's age limit unless
//! renewed, so a dead worker's partitions free themselves within seconds.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use mesh_contracts::Bucket;
use mesh_contracts::leases::{LEASE_CALL_TIMEOUT, LeaseKey};
use mesh_nats::{Bus, KvBucket, KvError};
use uuid::Uuid;

/// Longest wait for the list of live workers: listing keys reads the bucket through a
/// consumer of its own, which can take seconds while NATS fails over (it runs in the
/// background, so no lease waits for it).
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// `call`, failing after [`LEASE_CALL_TIMEOUT`].
async fn bounded<T>(call: impl Future<Output = Result<T, KvError>>) -> Result<T, KvError> {
    bounded_by(LEASE_CALL_TIMEOUT, call).await
}

/// `call`, failing after `limit`.
async fn bounded_by<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, KvError>>,
) -> Result<T, KvError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(KvError::Failed(format!("no answer within {limit:?}"))))
}

pub struct Leases {
    kv: KvBucket,
    bus: Bus,
    me: Uuid,
}

fn part_key(partition: u32) -> String {
    LeaseKey::Partition(partition).key()
}

impl Leases {
    pub async fn open(bus: &Bus, me: Uuid) -> anyhow::Result<Self> {
        Ok(Self {
            kv: bus.bucket(Bucket::Leases).await?,
            bus: bus.clone(),
            me,
        })
    }

    /// When the bucket there is now was created: what a lease taken after this call is
    /// claimed with, so that a lease of a bucket made again since (JetStream lost its store)
    /// is told apart from one of the current bucket (its revisions start again at 1). Read
    /// before the lease is taken: a bucket made again in between makes the claim stale (its
    /// owner ends, and the lease is taken again), never a lease of an old bucket pass for one
    /// of the new.
    pub async fn bucket_created(&self) -> Result<time::OffsetDateTime, KvError> {
        let mark = bounded(async {
            self.bus
                .bucket_mark(Bucket::Leases)
                .await
                .map_err(|err| KvError::Failed(err.to_string()))
        })
        .await?;
        Ok(mark.created)
    }

    /// Announces this worker as alive (and restarts its expiry).
    pub async fn heartbeat(&self) -> Result<(), KvError> {
        bounded(self.kv.put(&LeaseKey::Worker(self.me).key(), Bytes::new()))
            .await
            .map(drop)
    }

    /// Every worker that announced itself recently, in id order.
    pub async fn live_workers(&self) -> Result<Vec<Uuid>, KvError> {
        let keys = bounded_by(LIST_TIMEOUT, self.kv.keys_with_prefix(LeaseKey::WORKERS)).await?;
        Ok(keys
            .iter()
            .filter_map(|k| match LeaseKey::parse(k) {
                Some(LeaseKey::Worker(id)) => Some(id),
                _ => None,
            })
            .collect())
    }

    /// Takes `partition` when nobody holds it; the lease revision on success, which is also
    /// the owner's fencing epoch (the bucket's revisions only grow).
    pub async fn acquire(&self, partition: u32) -> Result<Option<u64>, KvError> {
        let key = part_key(partition);
        let create = self.kv.create(&key, Bytes::from(self.me.to_string()));
        match bounded(create).await {
            Ok(revision) => Ok(Some(revision)),
            Err(KvError::Conflict) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Extends a held lease; `None` when it was lost (expired and taken by another). A renewal
    /// that timed out here may still have reached the server (the client sends it once it is
    /// connected again), moving the revision on: a lease that still names this worker is
    /// renewed from its current revision instead of being given up.
    pub async fn renew(&self, partition: u32, revision: u64) -> Result<Option<u64>, KvError> {
        let key = part_key(partition);
        let me = Bytes::from(self.me.to_string());
        match bounded(self.kv.update(&key, me.clone(), revision)).await {
            Ok(revision) => Ok(Some(revision)),
            Err(KvError::Conflict) => match bounded(self.kv.get(&key)).await? {
                Some(entry) if entry.value == me => {
                    match bounded(self.kv.update(&key, me, entry.revision)).await {
                        Ok(revision) => Ok(Some(revision)),
                        Err(KvError::Conflict) => Ok(None),
                        Err(err) => Err(err),
                    }
                }
                _ => Ok(None),
            },
            Err(err) => Err(err),
        }
    }

    /// True while the lease of `partition` still names this worker.
    pub async fn holds(&self, partition: u32) -> bool {
        matches!(
            bounded(self.kv.get(&part_key(partition))).await,
            Ok(Some(entry)) if entry.value == self.me.to_string().as_bytes()
        )
    }

    /// Gives a partition up so its next owner need not wait for the lease to expire.
    pub async fn release(&self, partition: u32, revision: u64) {
        if let Err(err) = bounded(self.kv.delete_if(&part_key(partition), revision)).await {
            tracing::debug!(partition, error = %err, "lease release failed; it will expire");
        }
    }

    /// Stops announcing this worker.
    pub async fn leave(&self) {
        let _ = bounded(self.kv.delete(&LeaseKey::Worker(self.me).key())).await;
    }
}
