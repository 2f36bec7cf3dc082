//! Recent failed sign-ins, counted cluster-wide in the `<P>_LOGIN_FAILURES` bucket per
//! account (by phone, known or not) and per client address. An entry is forgotten
//! `LOGIN_FAILURE_WINDOW` after its last failure. When the bucket cannot be reached, sign-ins
//! go on uncounted (logged), rather than locking everyone out.
//!
//! Each user service follows the bucket's keys (`FailedKeys`), so a sign-in whose account and
//! address have no failure counted reads nothing from NATS; a key the copy holds, or any key
//! while the copy is not current, is read from the bucket.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_contracts::Bucket;
use mesh_contracts::client_address::limit_key;
use mesh_nats::{BucketFollower, Bus, Followed, KvBucket, KvError, LOGIN_FAILURE_WINDOW};
use mesh_observability::metrics::LOGIN_FAILURE_KEYS_CURRENT;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::domain::failed_keys::{FailedKeys, MOST_KEYS};
use crate::domain::login_throttle::Failures;

/// Attempts at a compare-and-set increment racing other edges' increments.
const ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct LoginFailures {
    bucket: KvBucket,
    follower: BucketFollower,
    /// The keys the bucket holds, as followed.
    keys: Arc<Mutex<FailedKeys>>,
}

/// How long past its window a key is still taken as held: the bucket expires entries by its
/// own clock, from when they were written, which is before they are seen here.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// The bucket keys of one attempt: digests, so no phone or address is stored in the clear.
/// The address is counted by its limit key: an IPv6 client by its /64, so that rotating
/// addresses within it does not escape the lockout.
pub struct Subjects {
    account: String,
    ip: Option<String>,
}

fn key(kind: &str, value: &str) -> String {
    format!("{kind}.{}", hex::encode(Sha256::digest(value.as_bytes())))
}

impl Subjects {
    pub fn new(phone: &str, ip: Option<&str>) -> Self {
        Self {
            account: key("account", phone),
            ip: ip.map(|ip| key("ip", &limit_key(ip))),
        }
    }
}

impl LoginFailures {
    pub async fn open(bus: &Bus) -> anyhow::Result<Self> {
        Ok(Self {
            bucket: bus.bucket(Bucket::LoginFailures).await?,
            follower: bus.bucket_follower(Bucket::LoginFailures).await?,
            keys: Arc::new(Mutex::new(FailedKeys::new(
                LOGIN_FAILURE_WINDOW + EXPIRY_MARGIN,
                MOST_KEYS,
            ))),
        })
    }

    fn keys(&self) -> MutexGuard<'_, FailedKeys> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows the bucket's keys until `stop` flips.
    pub async fn follow(&self, stop: watch::Receiver<bool>) {
        self.follower
            .follow(stop, |followed| {
                let mut keys = self.keys();
                match followed {
                    Followed::Opened | Followed::Lost => {
                        LOGIN_FAILURE_KEYS_CURRENT.set(0);
                        keys.restart();
                    }
                    Followed::Entry(entry) if entry.present => {
                        keys.written(&entry.key, entry.revision, Instant::now());
                    }
                    Followed::Entry(entry) => keys.deleted(&entry.key, entry.revision),
                    Followed::CaughtUp => {
                        tracing::debug!("sign-in failure keys current");
                        keys.current();
                        LOGIN_FAILURE_KEYS_CURRENT.set(1);
                    }
                }
            })
            .await;
    }

    /// The count and revision of `key` in the bucket (zero and none when it has none).
    async fn read(&self, key: &str) -> Result<(u32, Option<u64>), KvError> {
        Ok(match self.bucket.get(key).await? {
            Some(entry) => (
                std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                Some(entry.revision),
            ),
            None => (0, None),
        })
    }

    /// Recent failures of the account and the address (zero when unknown or unreachable); only
    /// keys the bucket may hold are read from it.
    pub async fn count(&self, subjects: &Subjects) -> Counted {
        let read = |key: &str| {
            let key = key.to_owned();
            async move {
                if !self.keys().may_hold(&key, Instant::now()) {
                    return (0, None);
                }
                self.read(&key).await.unwrap_or_else(|err| {
                    tracing::warn!(error = %err, "cannot read sign-in failures");
                    (0, None)
                })
            }
        };
        let (account, revision) = read(&subjects.account).await;
        let ip = match &subjects.ip {
            Some(ip) => read(ip).await.0,
            None => 0,
        };
        Counted {
            failures: Failures { account, ip },
            account_revision: revision,
        }
    }

    /// Counts one more failure of the account and of the address.
    pub async fn record(&self, subjects: &Subjects) {
        for key in std::iter::once(&subjects.account).chain(subjects.ip.as_ref()) {
            if let Err(err) = self.increment(key).await {
                tracing::warn!(error = %err, "cannot count a sign-in failure");
            }
        }
    }

    async fn increment(&self, key: &str) -> Result<(), KvError> {
        for _ in 0..ATTEMPTS {
            let (n, revision) = self.read(key).await?;
            let value = Bytes::from((n + 1).to_string());
            let written = match revision {
                Some(revision) => self.bucket.update(key, value, revision).await,
                None => self.bucket.create(key, value).await,
            };
            match written {
                Ok(revision) => {
                    // Known here at once, before the watch brings it.
                    self.keys().written(key, revision, Instant::now());
                    return Ok(());
                }
                Err(KvError::Conflict) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(KvError::Conflict)
    }

    /// Forgets the account's failures after its owner signed in, as `counted` found them:
    /// failures counted since (other attempts while this one was hashing) are kept.
    pub async fn clear(&self, subjects: &Subjects, counted: &Counted) {
        let Some(revision) = counted.account_revision else {
            return;
        };
        if let Err(err) = self.bucket.delete_if(&subjects.account, revision).await {
            // Usually a failure counted meanwhile; an unreachable bucket is already reported
            // by `count` and `record`.
            tracing::debug!(error = %err, "sign-in failures not cleared");
        }
    }
}

/// What `count` found: the failures, and the revision of the account's entry (none when it
/// has none), which `clear` deletes only if it is still the latest.
pub struct Counted {
    pub failures: Failures,
    account_revision: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_addresses_of_one_ipv6_64_share_their_failures() {
        let ip = |address| Subjects::new("+123456", Some(address)).ip;
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_ne!(ip("192.0.2.1"), ip("192.0.2.2"));
        assert_eq!(
            ip("192.0.2.1"),
            Some(key("ip", "192.0.2.1")),
            "IPv4 keys unchanged"
        );
        assert_eq!(Subjects::new("+123456", None).ip, None);
    }
}
