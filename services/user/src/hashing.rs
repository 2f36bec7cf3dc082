//! Password hashing with argon2id, off the async runtime and bounded in concurrency so that a
//! login storm cannot starve other requests or exhaust memory. The pool is shared fairly: one
//! client address holds at most half of it (at least one hash) at a time, and its further
//! requests wait in a line of their own, so a storm from one address delays other users' hashes
//! by about one hash, not by the length of the storm's queue.
//!
//! A sign-in verifies in a 19 MiB block buffer kept from the previous one (at most one per
//! pool permit): allocating it afresh cost every login its page faults and zeroing, since the
//! allocator hands freed memory back to the system.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::password_hash::PasswordHasher as _;
use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters")
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// Block buffers of the current parameters' size, kept between verifications.
type Buffers = Arc<Mutex<Vec<Vec<Block>>>>;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Hashes one client may run at once.
    share: usize,
    /// Each busy client's own line, removed when it empties.
    lines: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// Verified against when the phone is unknown, so that timing does not reveal accounts.
    dummy_hash: Arc<String>,
    /// Idle block buffers; never more than the pool has permits.
    buffers: Buffers,
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
            buffers: Arc::default(),
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
        let buffers = self.buffers.clone();
        let matches = tokio::task::spawn_blocking(move || {
            let mut blocks = take_buffer(&buffers);
            let matches = matches_hash(password.as_bytes(), &hash, &mut blocks);
            give_back(&buffers, blocks);
            matches
        })
        .await?;
        Ok(known && matches)
    }
}

/// An idle buffer of the current parameters' size, or a new one.
fn take_buffer(buffers: &Buffers) -> Vec<Block> {
    let idle = buffers.lock().unwrap_or_else(|p| p.into_inner()).pop();
    idle.unwrap_or_else(|| vec![Block::default(); params().block_count()])
}

/// Keeps `blocks` for the next verification (the caller holds a pool permit, so at most one
/// buffer per permit is ever kept).
fn give_back(buffers: &Buffers, blocks: Vec<Block>) {
    if blocks.len() == params().block_count() {
        buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(blocks);
    }
}

/// Whether `password` hashes to the PHC string `hash`, computed in `blocks` (grown when the
/// hash was made with more memory than the current parameters). Unreadable hashes never match;
/// the outputs are compared in constant time.
fn matches_hash(password: &[u8], hash: &str, blocks: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let Ok(version) = Version::try_from(parsed.version.unwrap_or(Version::V0x13 as u32)) else {
        return false;
    };
    if blocks.len() < params.block_count() {
        blocks.resize(params.block_count(), Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        &mut out,
        &mut blocks[..],
    );
    computed.is_ok() && Output::new(&out).is_ok_and(|out| out == *expected)
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
    // Registration is rare next to sign-in: it allocates its buffer each time.
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

    /// Hashes made with other parameters (an older, smaller or larger memory cost) still verify;
    /// a reused buffer gives the right answer whatever it held before, and only buffers of the
    /// current size are kept.
    #[tokio::test]
    async fn hashes_of_other_parameters_verify_with_reused_buffers() {
        let hasher = Hasher::new(2).await.unwrap();
        let current = hasher.hash("right".into(), None).await.unwrap();
        for m_cost in [8 * 1024, 32 * 1024] {
            let other = Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(m_cost, 1, 1, None).unwrap(),
            )
            .hash_password(b"right")
            .unwrap()
            .to_string();
            for (password, hash, expected) in [
                ("right", &other, true),
                ("wrong", &other, false),
                ("right", &current, true),
                ("wrong", &current, false),
            ] {
                let verified = hasher
                    .verify(password.into(), Some(hash.clone()), None)
                    .await
                    .unwrap();
                assert_eq!(verified, expected, "{password} against {hash}");
            }
        }
        let kept = hasher.buffers.lock().unwrap();
        assert_eq!(kept.len(), 1, "one verification at a time keeps one buffer");
        assert_eq!(kept[0].len(), params().block_count());
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
