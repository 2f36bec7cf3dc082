//! Raw argon2id: password hashes per second on this machine with the user service's
//! parameters (19 MiB, 2 passes, 1 lane; `services/user/src/hashing.rs`), one hashing thread
//! per CPU, each hashing into a block buffer it keeps (no allocation or page faults per hash):
//! the pure hashing cost, which is what a login costs at the least.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::Figure;
use crate::tally::Tally;

pub struct Plan {
    pub threads: usize,
    pub seconds: f64,
}

fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters")
}

pub async fn measure(plan: &Plan) -> anyhow::Result<Figure> {
    let threads = plan.threads.max(1);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(plan.seconds.max(1.0));
    let tasks: Vec<_> = (0..threads)
        .map(|_| {
            tokio::task::spawn_blocking(move || {
                let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
                let mut blocks = vec![Block::default(); params().block_count()];
                let mut out = [0u8; 32];
                let mut tally = Tally::default();
                while Instant::now() < end {
                    let began = Instant::now();
                    match hasher.hash_password_into_with_memory(
                        b"loadgen raw argon2id password",
                        b"a sixteen b salt",
                        &mut out,
                        &mut blocks[..],
                    ) {
                        Ok(_) => tally.success(began),
                        Err(err) => tally.failure(err),
                    }
                }
                tally
            })
        })
        .collect();
    let tally = Tally::join(tasks).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Figure::of(
        &tally,
        1,
        seconds,
        format!("{threads} threads, m = 19 MiB, t = 2, p = 1"),
    ))
}
