//! `idle`: the edge's memory per idle authenticated WebSocket, read as the growth of the
//! mesh process's resident set (VmRSS) while N connections are held open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{Ctx, open_sockets};
use crate::problems::Problems;
use crate::report::{Outcome, thousands};
use crate::ws::{self, Profile, Socket};

/// The product's target: KiB of edge memory per idle connection.
pub const TARGET_KIB_PER_CONNECTION: f64 = 16.0;
/// Settling ends when two samples a second apart differ by less than this many KiB.
const STABLE_KIB: u64 = 256;
const MIN_SETTLE: Duration = Duration::from_secs(3);
const MAX_SETTLE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Idle WebSockets to hold open.
    #[arg(long, default_value_t = 2000)]
    pub connections: usize,
    /// Users the connections are spread over (each holds several).
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// The mesh (edge) process whose VmRSS is read from /proc/<pid>/status.
    #[arg(long)]
    pub pid: u32,
    /// Connections opened at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is --pid the mesh process?)"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// Samples VmRSS every second until it stops moving; answers the last sample.
async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut previous = rss_kib(pid)?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_kib(pid)?;
        let stable = now.abs_diff(previous) < STABLE_KIB;
        if (stable && started.elapsed() >= MIN_SETTLE) || started.elapsed() >= MAX_SETTLE {
            return Ok(now);
        }
        previous = now;
    }
}

/// Keeps a socket open: reads (which answers the server's pings) until told to stop.
async fn hold(mut socket: Socket, stop: CancellationToken, problems: Arc<Problems>) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = socket.next() => message,
        };
        match message {
            Some(Ok(Message::Close(frame))) => {
                let close = ws::describe_close(&Message::Close(frame)).unwrap_or_default();
                problems.add("idle socket closed by the server", || close);
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                problems.add("idle socket failed", || err.to_string());
                return;
            }
            None => {
                problems.add("idle socket ended", String::new);
                return;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
}

pub async fn run(ctx: &mut Ctx, args: &Args) -> anyhow::Result<Outcome> {
    let users = ctx.pool.users(args.users.max(1)).await?;
    let tokens: Vec<String> = (0..args.connections)
        .map(|i| users[i % users.len()].token.clone())
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(args.pid)?;
    eprintln!(
        "mesh VmRSS {} KiB; opening {} idle connections",
        thousands(before as f64),
        args.connections
    );
    let opening = Instant::now();
    let (sockets, failures) =
        open_sockets(&ctx.ws_url, &tokens, Profile::Idle, args.concurrency.max(1)).await;
    let open_secs = opening.elapsed().as_secs_f64();
    let stop = CancellationToken::new();
    let problems = Arc::new(Problems::default());
    let holders: Vec<_> = sockets
        .into_iter()
        .flatten()
        .map(|socket| tokio::spawn(hold(socket, stop.clone(), problems.clone())))
        .collect();
    let opened = holders.len();
    let after = settled_rss(args.pid).await?;
    stop.cancel();
    for holder in holders {
        holder.await?;
    }
    let after_close = settled_rss(args.pid).await?;

    let per_connection = if opened > 0 {
        after.saturating_sub(before) as f64 / opened as f64
    } else {
        0.0
    };
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let mut outcome = Outcome::new(
        "idle",
        json!({ "connections": args.connections, "users": users.len() }),
    );
    outcome.row("KiB per idle connection", format!("{per_connection:.1}"));
    outcome.row(
        "connections opened",
        format!(
            "{opened} of {} in {open_secs:.1} s ({} per s)",
            args.connections,
            thousands(opened as f64 / open_secs.max(1e-3))
        ),
    );
    outcome.row(
        "mesh VmRSS before / with the connections / after closing them",
        format!("{} / {} / {}", mib(before), mib(after), mib(after_close)),
    );
    if let Some(failure) = failures.first() {
        outcome.problem(format!(
            "{} connections failed to open, e.g. {failure}",
            failures.len()
        ));
    }
    for problem in problems.lines() {
        outcome.problem(problem);
    }
    outcome.verdict(
        format!("≤ {TARGET_KIB_PER_CONNECTION} KiB per idle connection"),
        opened > 0 && per_connection <= TARGET_KIB_PER_CONNECTION,
    );
    outcome.results = json!({
        "kib_per_connection": (per_connection * 10.0).round() / 10.0,
        "opened": opened,
        "failed": failures.len(),
        "open_seconds": open_secs,
        "rss_before_kib": before,
        "rss_with_connections_kib": after,
        "rss_after_close_kib": after_close,
    });
    Ok(outcome)
}
