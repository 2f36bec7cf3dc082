//! Password hashing with argon2id, off the async runtime and bounded in concurrency so that a
//! login storm cannot starve other requests or exhaust memory. The pool is shared fairly: one
//! client address holds at most half of it (at least one hash) at a time, and its further
//! requests wait in a line of their own, so a storm from one address delays other users' hashes
//! by about one hash, not by the length of the storm's queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Hashes one client may run at once.
    share: usize,
    /// Each busy client's own line, removed when it empties.
    lines: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// Verified against when the phone is unknown, so that timing does not reveal accounts.
    dummy_hash: Arc<String>,
}

impl Hasher {
    pub async fn new(concurrency: usize) -> anyhow::Result<Self> {
        let concurrency = concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        let dummy = tokio::task::spawn_blocking(|| hash_now("not a real password")).await??;
        Ok(Self {
            permits,
            share: (concurrency / 2).max(1),
            lines: Arc::default(),
            dummy_hash: Arc::new(dummy),
        })
    }

    /// A turn in the pool for `client`: first a place in the client's own line, then a
    /// permit of the shared pool.
    async fn turn(&self, client: Option<&str>) -> anyhow::Result<Turn> {
        let line = match client {
            Some(client) => {
                let line = {
                    let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
                    lines
                        .entry(client.to_owned())
                        .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
                        .clone()
                };
                Some(ClientLine {
                    permit: Some(line.acquire_owned().await?),
                    client: client.to_owned(),
                    lines: self.lines.clone(),
                })
            }
            None => None,
        };
        let pool = self.permits.clone().acquire_owned().await?;
        Ok(Turn {
            _pool: pool,
            _line: line,
        })
    }

    /// Hashes `password` of `client` into a PHC string.
    pub async fn hash(&self, password: String, client: Option<&str>) -> anyhow::Result<String> {
        let _turn = self.turn(client).await?;
        tokio::task::spawn_blocking(move || hash_now(&password)).await?
    }

    /// True when `password` matches `hash`; an unreadable hash never matches.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
        client: Option<&str>,
    ) -> anyhow::Result<bool> {
        let _turn = self.turn(client).await?;
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await?;
        Ok(known && matches)
    }
}

/// Held while a hash runs.
struct Turn {
    _pool: OwnedSemaphorePermit,
    _line: Option<ClientLine>,
}

/// A place in one client's line; the line is forgotten when nobody holds or awaits it.
struct ClientLine {
    permit: Option<OwnedSemaphorePermit>,
    client: String,
    lines: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl Drop for ClientLine {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it: no one runs or waits in this line.
        if lines
            .get(&self.client)
            .is_some_and(|line| Arc::strong_count(line) == 1)
        {
            lines.remove(&self.client);
        }
    }
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| anyhow::anyhow!("argon2: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_argon2id() {
        let hasher = Hasher::new(2).await.unwrap();
        let hash = hasher.hash("correct horse".into(), None).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()), None)
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), Some(hash), Some("1.2.3.4"))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("not a real password".into(), None, None)
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("x".into(), Some("garbage".into()), None)
                .await
                .unwrap()
        );
    }

    /// A storm of 12 hashes from one address, queued first, does not make another address
    /// wait for it: the other hash finishes while most of the storm still waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_address_cannot_take_the_whole_pool() {
        let hasher = Hasher::new(2).await.unwrap();
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut storm = Vec::new();
        for _ in 0..12 {
            let (hasher, done) = (hasher.clone(), done.clone());
            storm.push(tokio::spawn(async move {
                hasher
                    .verify("guess".into(), None, Some("6.6.6.6"))
                    .await
                    .unwrap();
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        // Let the storm fill its line and the pool first.
        tokio::task::yield_now().await;
        hasher
            .verify("mine".into(), None, Some("1.1.1.1"))
            .await
            .unwrap();
        let storm_done = done.load(std::sync::atomic::Ordering::SeqCst);
        assert!(storm_done <= 4, "{storm_done} storm hashes ran before ours");
        for task in storm {
            task.await.unwrap();
        }
        assert!(
            hasher.lines.lock().unwrap().is_empty(),
            "lines are forgotten"
        );
    }
}
