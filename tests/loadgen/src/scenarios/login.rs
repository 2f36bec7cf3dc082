//! `login`: sign-ins per second through the edge (`POST /v1/auth/login`, each hashing the
//! password with argon2id) from clients spread over loopback addresses, beside the raw
//! argon2id hash rate measured in the same run. The bench lifts the sign-in limits
//! (`scripts/bench.sh`), so only the hashing path is measured.

use std::time::{Duration, Instant};

use serde_json::json;

use super::Ctx;
use crate::api::Api;
use crate::report::{Outcome, thousands};
use crate::tally::Tally;

/// The product's target: at least this share of the raw argon2id rate.
pub const TARGET_RATIO: f64 = 0.9;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Clients signing in at once, each from its own address and as its own user.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Length of the measurement.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

pub async fn run(ctx: &mut Ctx, args: &Args) -> anyhow::Result<Outcome> {
    let concurrency = args.concurrency.max(1);
    ctx.pool.users(concurrency).await?;
    let credentials = ctx.pool.credentials(concurrency);
    let local = ctx.api.base().starts_with("http://127.");
    let end = Instant::now() + Duration::from_secs_f64(args.seconds.max(1.0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, (phone, password)) in credentials.into_iter().enumerate() {
        let source = local
            .then(|| std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 4, 0, (i % 250 + 1) as u8)));
        let api = Api::new_from(ctx.api.base(), source)?;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < end {
                let began = Instant::now();
                match api.login(&phone, &password).await {
                    Ok(_) => tally.success(began),
                    Err(err) => tally.failure(format!("{err:#}")),
                }
            }
            tally
        }));
    }
    let tally = Tally::join(tasks).await?;
    // Hundreds of sign-ins per user: the mesh has revoked the sessions the cache holds.
    ctx.pool.forget_tokens(concurrency)?;
    let (ok, failures) = (tally.ok, tally.failed);
    let seconds = started.elapsed().as_secs_f64();
    let rate = ok as f64 / seconds;
    let latency = tally.latency();
    let mut outcome = Outcome::new(
        "login",
        json!({ "concurrency": concurrency, "seconds": args.seconds }),
    );
    outcome.row("logins/s", thousands(rate));
    outcome.row("latency", latency.line());
    outcome.versus("logins/s", rate, "raw argon2id hashes/s", ctx.limits.argon2);
    if failures > 0 {
        outcome.problem(format!(
            "{failures} logins failed, e.g. {}",
            tally.samples.join("; ")
        ));
    }
    let ratio = ctx.limits.argon2.map(|raw| rate / raw);
    outcome.verdict(
        format!("≥ {TARGET_RATIO}x the raw argon2id rate"),
        ratio.is_some_and(|r| r >= TARGET_RATIO),
    );
    outcome.results = json!({
        "logins_per_sec": (rate * 10.0).round() / 10.0,
        "latency": latency,
        "failed": failures,
        "ratio_to_raw_argon2id": ratio,
    });
    outcome.work = Some(("login", ok));
    Ok(outcome)
}
