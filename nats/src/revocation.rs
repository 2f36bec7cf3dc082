//! Session revocations in the `REVOKED` bucket: written by the user service, followed by edges
//! (`BucketFollower`).

use async_nats::jetstream::kv::Store;
use mesh_contracts::Bucket;
use uuid::Uuid;

use crate::bucket_follow::BucketEntry;
use crate::bus::Bus;

/// One revoked session and its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub session_id: Uuid,
    pub user_id: Uuid,
}

/// The revocation bucket of one prefix.
#[derive(Clone)]
pub struct Revocations {
    store: Store,
}

impl Revocation {
    /// The revocation a followed entry of the bucket records, if it is one (deletes and purges
    /// are not).
    pub fn from_entry(entry: &BucketEntry) -> Option<Self> {
        if !entry.present {
            return None;
        }
        let session_id = Uuid::parse_str(&entry.key).ok()?;
        let user_id = std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|v| Uuid::parse_str(v).ok())?;
        Some(Self {
            session_id,
            user_id,
        })
    }
}

impl Bus {
    /// Opens the revocation bucket (created by `ensure_topology`).
    pub async fn revocations(&self) -> Result<Revocations, crate::ConnectError> {
        let name = self.prefix.bucket(Bucket::Revoked);
        let store = self
            .jetstream
            .get_key_value(&name)
            .await
            .map_err(|err| crate::ConnectError::Topology(format!("bucket {name}: {err}")))?;
        Ok(Revocations { store })
    }
}

impl Revocations {
    /// Records that `session_id` is revoked; every edge watching refuses its tokens.
    pub async fn revoke(&self, revocation: Revocation) -> Result<(), String> {
        self.store
            .put(
                revocation.session_id.to_string(),
                revocation.user_id.to_string().into(),
            )
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}
