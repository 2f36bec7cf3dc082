//! `reads`: an authenticated read through edge → NATS → worker at a fixed concurrency, each
//! client with one request outstanding, beside the raw NATS request/reply rate measured in
//! the same run at the same concurrency, and the edge's own HTTP answer rate (no token, no
//! NATS), which no read through the bus can exceed. The default read is a group's profile
//! (`GET /v1/groups/{id}`), which the social service answers from its caches (the profile
//! and the caller's role);
//! `--read me` reads `GET /v1/users/me` instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::Ctx;
use crate::reader::{Get, Reader};
use crate::report::{Outcome, thousands};
use crate::tally::Tally;

/// The product's targets: at least half the raw request/reply rate, p99 below 5 ms.
pub const TARGET_RATIO: f64 = 0.5;
pub const TARGET_P99_MS: f64 = 5.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Read {
    /// `GET /v1/groups/{id}` of an open group every reader is a member of.
    Group,
    /// `GET /v1/users/me`.
    Me,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Readers, each with one request outstanding and a user of its own.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Length of the measurement.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of reading before the measurement (warms the caches).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    #[arg(long, value_enum, default_value_t = Read::Group)]
    pub read: Read,
}

pub async fn run(ctx: &mut Ctx, args: &Args) -> anyhow::Result<Outcome> {
    let concurrency = args.concurrency.max(1);
    let users = ctx.pool.users(concurrency.max(2)).await?;
    ctx.pool.lift_quotas(&users[..1]).await?;
    let path = match args.read {
        Read::Me => "/v1/users/me".to_owned(),
        Read::Group => {
            let group = ctx
                .api
                .create_open_group(&users[0].token, "loadgen reads", 2000)
                .await
                .context("creating the group")?;
            for user in &users[1..concurrency.max(2)] {
                ctx.api.join_group(&user.token, group).await?;
            }
            format!("/v1/groups/{group}")
        }
    };
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(args.warmup.max(0.0));
    let end = measure_from + Duration::from_secs_f64(args.seconds.max(1.0));
    let gets = users
        .iter()
        .take(concurrency)
        .map(|user| Get::new(ctx.api.base(), &path, Some(&user.token)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Reads answered while warming up: not in the figures, but the CPU they took is in the
    // scenario's, so the CPU per read divides by them too.
    let warm = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = gets
        .into_iter()
        .map(|get| {
            let path = path.clone();
            let warm = warm.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut reader = Reader::new(get);
                while Instant::now() < end {
                    let began = Instant::now();
                    let answer = reader.send().await;
                    if began < measure_from {
                        if answer.is_ok_and(|status| status.is_success()) {
                            warm.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    match answer {
                        Ok(status) if status.is_success() => tally.success(began),
                        Ok(status) => tally.failure(format!("GET {path} answered {status}")),
                        Err(err) => tally.failure(format!("{err:#}")),
                    }
                }
                tally
            })
        })
        .collect();
    let tally = Tally::join(tasks).await?;
    let (ok, failures) = (tally.ok, tally.failed);
    let seconds = end.saturating_duration_since(measure_from).as_secs_f64();
    let rate = ok as f64 / seconds;
    let latency = tally.latency();

    let mut outcome = Outcome::new(
        "reads",
        json!({ "concurrency": concurrency, "seconds": args.seconds, "read": path.split('/').nth(2) }),
    );
    outcome.row("reads/s", thousands(rate));
    outcome.row("read", format!("GET {path}"));
    outcome.row("latency", latency.line());
    outcome.versus(
        "reads/s",
        rate,
        "raw NATS request/reply/s",
        ctx.limits.request_reply,
    );
    outcome.versus(
        "reads/s",
        rate,
        "edge HTTP answers/s without the bus",
        ctx.limits.edge_http,
    );
    if failures > 0 {
        outcome.problem(format!(
            "{failures} reads failed, e.g. {}",
            tally.samples.join("; ")
        ));
    }
    let ratio = ctx.limits.request_reply.map(|raw| rate / raw);
    outcome.verdict(
        format!("≥ {TARGET_RATIO}x the raw request/reply rate"),
        ratio.is_some_and(|r| r >= TARGET_RATIO),
    );
    outcome.verdict(
        format!("p99 < {TARGET_P99_MS} ms"),
        latency.count > 0 && latency.p99_ms < TARGET_P99_MS,
    );
    outcome.results = json!({
        "reads_per_sec": rate.round(),
        "path": path,
        "latency": latency,
        "failed": failures,
        "ratio_to_raw_request_reply": ratio,
        "ratio_to_edge_http": ctx.limits.edge_http.map(|floor| rate / floor),
    });
    outcome.work = Some(("read", ok + warm.load(Ordering::Relaxed)));
    Ok(outcome)
}
