//! Small key-value buckets of the mesh (presence, leases): typed errors and compare-and-set,
//! so callers never handle `async_nats` types.

use std::collections::BTreeSet;

use async_nats::jetstream::kv::{CreateErrorKind, Store, UpdateErrorKind};
use bytes::Bytes;
use futures::StreamExt;
use mesh_contracts::Bucket;

use crate::bus::{Bus, ConnectError};

/// One bucket of the prefix.
#[derive(Clone)]
pub struct KvBucket {
    store: Store,
}

/// The current value of a key and the revision a compare-and-set must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Bytes,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A compare-and-set lost: someone else wrote the key first.
    #[error("the key changed concurrently")]
    Conflict,
    #[error("key-value operation failed: {0}")]
    Failed(String),
}

impl Bus {
    /// Opens a bucket created by `ensure_topology`.
    pub async fn bucket(&self, bucket: Bucket) -> Result<KvBucket, ConnectError> {
        let name = self.prefix.bucket(bucket);
        let store = self
            .jetstream
            .get_key_value(&name)
            .await
            .map_err(|err| ConnectError::Topology(format!("bucket {name}: {err}")))?;
        Ok(KvBucket { store })
    }
}

fn failed(err: impl std::fmt::Display) -> KvError {
    KvError::Failed(err.to_string())
}

impl KvBucket {
    pub async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        let entry = self.store.entry(key).await.map_err(failed)?;
        Ok(entry.and_then(|e| {
            matches!(e.operation, async_nats::jetstream::kv::Operation::Put).then_some(KvEntry {
                value: e.value,
                revision: e.revision,
            })
        }))
    }

    /// Writes `key` unconditionally (and so restarts its age).
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.store.put(key, value).await.map_err(failed)
    }

    /// Writes `key` only when it does not exist (or was deleted).
    pub async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.store.create(key, value).await.map_err(|err| {
            if err.kind() == CreateErrorKind::AlreadyExists {
                KvError::Conflict
            } else {
                failed(err)
            }
        })
    }

    /// Writes `key` only when its revision is still `revision`.
    pub async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, KvError> {
        self.store
            .update(key, value, revision)
            .await
            .map_err(|err| {
                if err.kind() == UpdateErrorKind::WrongLastRevision {
                    KvError::Conflict
                } else {
                    failed(err)
                }
            })
    }

    /// Deletes `key` only when its revision is still `revision`.
    pub async fn delete_if(&self, key: &str, revision: u64) -> Result<(), KvError> {
        self.store
            .delete_expect_revision(key, Some(revision))
            .await
            .map_err(failed)
    }

    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store.delete(key).await.map_err(failed)
    }

    /// Every live key starting with `prefix`.
    pub async fn keys_with_prefix(&self, prefix: &str) -> Result<BTreeSet<String>, KvError> {
        let mut keys = self.store.keys().await.map_err(failed)?;
        let mut found = BTreeSet::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(failed)?;
            if key.starts_with(prefix) {
                found.insert(key);
            }
        }
        Ok(found)
    }
}
