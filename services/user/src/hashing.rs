//! Password hashing with argon2id, on threads of its own and bounded in concurrency so that a
//! login storm cannot starve other requests or exhaust memory. The pool is shared fairly: one
//! client address (an IPv6 client's whole /64, `limit_key`) holds at most half of it (at least
//! one hash) at a time, and its further requests wait in a line of their own, so a storm from
//! one address delays other users' hashes by about one hash, not by the length of the storm's
//! queue.
//!
//! Each of the pool's threads takes the next hash from one shared queue as soon as it finishes
//! one, and verifies in a 19 MiB block buffer of its own, kept between sign-ins. Handing each
//! hash to the runtime's blocking pool left the CPUs idle between two hashes while the next
//! request was woken, took a permit and woke a thread; allocating the buffer afresh cost every
//! login its page faults and zeroing, since the allocator hands freed memory back to the system.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::PasswordHasher as _;
use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mesh_contracts::client_address::limit_key;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters")
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// One hash for a pool thread, given the thread's block buffer.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// How long an idle pool thread keeps its block buffer: a burst of sign-ins reuses it, a quiet
/// service gives the memory back.
const KEEP_BUFFER: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Hasher {
    /// The pool's queue; its threads end when the last sender is dropped.
    jobs: Sender<Job>,
    /// Hashes one client may run or queue at once.
    share: usize,
    /// Each busy client's own line, removed when it empties.
    lines: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// Verified against when the phone is unknown, so that timing does not reveal accounts.
    dummy_hash: Arc<String>,
}

impl Hasher {
    pub async fn new(concurrency: usize) -> anyhow::Result<Self> {
        let concurrency = concurrency.max(1);
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..concurrency {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || serve(&queue))?;
        }
        let dummy = run(&jobs, |_| hash_now("not a real password")).await??;
        Ok(Self {
            jobs,
            share: (concurrency / 2).max(1),
            lines: Arc::default(),
            dummy_hash: Arc::new(dummy),
        })
    }

    /// A place in `client`'s own line (one per limit key), held while its hash waits in the
    /// queue and runs.
    async fn line(&self, client: Option<&str>) -> anyhow::Result<Option<ClientLine>> {
        let Some(client) = client.map(limit_key) else {
            return Ok(None);
        };
        let line = {
            let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            lines
                .entry(client.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
                .clone()
        };
        Ok(Some(ClientLine {
            permit: Some(line.acquire_owned().await?),
            client,
            lines: self.lines.clone(),
        }))
    }

    /// Hashes `password` of `client` into a PHC string.
    pub async fn hash(&self, password: String, client: Option<&str>) -> anyhow::Result<String> {
        let _line = self.line(client).await?;
        // Registration is rare next to sign-in: it allocates its buffer each time.
        run(&self.jobs, move |_| hash_now(&password)).await?
    }

    /// True when `password` matches `hash`; an unreadable hash never matches.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
        client: Option<&str>,
    ) -> anyhow::Result<bool> {
        let _line = self.line(client).await?;
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let matches = run(&self.jobs, move |blocks| {
            matches_hash(password.as_bytes(), &hash, blocks)
        })
        .await?;
        Ok(known && matches)
    }
}

/// Runs `work` on a pool thread of `jobs`, after the hashes queued before it.
async fn run<T: Send + 'static>(
    jobs: &Sender<Job>,
    work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move |blocks| {
        // Nobody waits for it any more (the request was abandoned): skip the hash.
        if !answer.is_closed() {
            let _ = answer.send(work(blocks));
        }
    });
    jobs.send(job)
        .map_err(|_| anyhow::anyhow!("the hashing threads have stopped"))?;
    answered
        .await
        .map_err(|_| anyhow::anyhow!("a hashing thread stopped during a hash"))
}

/// A pool thread: runs queued jobs in its own buffer until the queue closes.
fn serve(queue: &Receiver<Job>) {
    let mut blocks = Vec::new();
    loop {
        let job = match queue.recv_timeout(KEEP_BUFFER) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                blocks = Vec::new();
                match queue.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if blocks.len() != params().block_count() {
            // New, given back while idle, or grown for a hash of a larger memory cost.
            blocks = vec![Block::default(); params().block_count()];
        }
        // A panic inside argon2 ends this job (its caller sees the hash fail), not the thread.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut blocks)));
        if ran.is_err() {
            blocks = Vec::new();
        }
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

    /// Hashes made with other parameters (an older, smaller or larger memory cost) still verify;
    /// a reused buffer gives the right answer whatever it held before.
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
    }

    /// A hash whose caller gave up while it waited in the queue is never computed; the
    /// thread goes on with the next one.
    #[tokio::test]
    async fn an_abandoned_hash_is_skipped() {
        let hasher = Hasher::new(1).await.unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = tokio::spawn({
            let (hasher, started) = (hasher.clone(), started.clone());
            async move {
                let work = move |_: &mut Vec<Block>| {
                    started.store(true, std::sync::atomic::Ordering::SeqCst);
                    released.recv().is_ok()
                };
                run(&hasher.jobs, work).await
            }
        });
        while !started.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let abandoned = run(&hasher.jobs, {
            let ran = ran.clone();
            move |_| ran.store(true, std::sync::atomic::Ordering::SeqCst)
        });
        let waited = tokio::time::timeout(std::time::Duration::from_millis(100), abandoned).await;
        assert!(
            waited.is_err(),
            "the only thread is busy, so the hash waits"
        );
        release.send(()).unwrap();
        assert!(busy.await.unwrap().unwrap());
        let after = run(&hasher.jobs, |blocks| blocks.len()).await.unwrap();
        assert_eq!(after, params().block_count(), "the thread's own buffer");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    /// The addresses of one IPv6 /64 stand in one line: rotating through them gets a client no
    /// larger share of the pool.
    #[tokio::test]
    async fn the_addresses_of_one_ipv6_64_share_a_line() {
        let hasher = Hasher::new(4).await.unwrap();
        let _first = hasher.line(Some("2001:db8:1:2::1")).await.unwrap();
        let _second = hasher.line(Some("2001:db8:1:2::ffff")).await.unwrap();
        let _other = hasher.line(Some("2001:db8:1:3::1")).await.unwrap();
        let lines = hasher.lines.lock().unwrap();
        assert_eq!(lines.len(), 2, "one line per /64");
        let shared = &lines["2001:db8:1:2::/64"];
        assert_eq!(shared.available_permits(), 0, "the /64's share is taken");
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
