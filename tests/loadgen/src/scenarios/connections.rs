//! `connections`: many concurrent authenticated WebSockets, one user each (so each also costs
//! its push subscription), from source addresses spread over 127.0.0.0/8, each heartbeating.
//! The sockets are held by child processes (`holder`) and spread over every edge given, since
//! one process may open only so many files. Memory per connection is the slope of the mesh's
//! resident set (all its processes together) between two settled sizes; the mesh's CPU while
//! they idle is measured at each size. Where opening stops short, the report says how far it
//! got and the errors seen.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::json;

use super::Ctx;
use crate::holder::{self, Holders, Opening};
use crate::procs::rss_kib;
use crate::report::{Outcome, thousands};

/// The product's target: KiB of mesh memory per connected user.
pub const TARGET_KIB_PER_CONNECTION: f64 = 16.0;
/// Connections per source address.
const PER_ADDRESS: usize = 100;
/// Settling ends when two samples a second apart differ by less than this many KiB.
const STABLE_KIB: u64 = 512;
const MIN_SETTLE: Duration = Duration::from_secs(3);
const MAX_SETTLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Connection counts at which memory settles and is read, ascending; the slope between
    /// the first and the last is the memory per connection.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 50_000])]
    pub sizes: Vec<usize>,
    /// Connections opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds between a client's `ping` frames.
    #[arg(long, default_value_t = 20.0)]
    pub heartbeat: f64,
    /// Seconds the mesh's CPU is measured while the connections idle, at each size.
    #[arg(long, default_value_t = 10.0)]
    pub idle_seconds: f64,
}

/// The source address of connection `i`: 127.a.b.c, `PER_ADDRESS` connections each.
pub fn source_of(i: usize) -> IpAddr {
    let k = i / PER_ADDRESS;
    let c = (k % 250 + 1) as u8;
    let b = ((k / 250) % 250 + 1) as u8;
    let a = ((k / 62_500) % 250 + 1) as u8;
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

/// Below this share of one core the mesh counts as quiet.
const QUIET_CPU_SHARE: f64 = 0.2;
/// How long the mesh may stay busy after the connections close.
const QUIET_LIMIT: Duration = Duration::from_secs(180);

/// CPU seconds the mesh used over the next `window`.
async fn mesh_cpu_seconds(ctx: &Ctx, window: Duration) -> f64 {
    let before = ctx.procs.sample();
    tokio::time::sleep(window).await;
    ctx.procs
        .sample()
        .since(&before)
        .into_iter()
        .find(|u| u.process == "mesh")
        .map_or(0.0, |u| u.seconds)
}

/// Waits until the mesh uses less than `QUIET_CPU_SHARE` of a core over a second; how long
/// that took, or `None` past `QUIET_LIMIT`.
async fn quiet(ctx: &Ctx) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < QUIET_LIMIT {
        let window = Duration::from_secs(1);
        if mesh_cpu_seconds(ctx, window).await < QUIET_CPU_SHARE * window.as_secs_f64() {
            return Some(started.elapsed());
        }
    }
    None
}

/// VmRSS of every process in `pids`, summed.
fn total_rss(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|pid| rss_kib(*pid)).sum()
}

/// Samples the summed VmRSS of `pids` every second until it stops moving; answers the last
/// sample.
async fn settled_rss(pids: &[u32]) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut previous = total_rss(pids)?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = total_rss(pids)?;
        let stable = now.abs_diff(previous) < STABLE_KIB;
        if (stable && started.elapsed() >= MIN_SETTLE) || started.elapsed() >= MAX_SETTLE {
            return Ok(now);
        }
        previous = now;
    }
}

/// What one size measured.
#[derive(Debug, Clone, serde::Serialize)]
struct Step {
    asked: usize,
    open: usize,
    rss_kib: u64,
    open_seconds: f64,
    idle_cpu_seconds: f64,
    idle_cpu_percent: f64,
}

pub async fn run(ctx: &mut Ctx, args: &Args) -> anyhow::Result<Outcome> {
    let pids = ctx.procs.meshes();
    if pids.is_empty() {
        anyhow::bail!("no --pid: the mesh's memory cannot be read");
    }
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let largest = *sizes.last().ok_or_else(|| anyhow::anyhow!("no --sizes"))?;
    let users = ctx.pool.users(largest).await?;
    let tokens: Vec<String> = users.into_iter().map(|u| u.token).collect();
    let heartbeat = Duration::from_secs_f64(args.heartbeat.max(1.0));
    let idle = Duration::from_secs_f64(args.idle_seconds.max(1.0));
    let edges = ctx.ws_urls.clone();
    let mut holders = Holders::spawn(holder::holders_for(largest))?;
    let mut failures: Vec<String> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let before = settled_rss(&pids).await?;
    eprintln!(
        "mesh VmRSS {} KiB before any connection ({} processes, {} edges, {} holders)",
        thousands(before as f64),
        pids.len(),
        edges.len(),
        holder::holders_for(largest)
    );
    let mut steps: Vec<Step> = Vec::new();
    let mut next = 0;
    for size in &sizes {
        let opening = Instant::now();
        let batch: Vec<Opening> = (next..*size)
            .map(|index| Opening {
                index,
                url: edges[index % edges.len()].clone(),
                token: tokens[index].clone(),
            })
            .collect();
        next = *size;
        let total = holders
            .open(batch, args.concurrency.max(1), heartbeat)
            .await?;
        let open_seconds = opening.elapsed().as_secs_f64();
        failures.extend(total.failures);
        let open = total.open;
        eprintln!("{open} of {size} connections open; letting memory settle");
        let rss = settled_rss(&pids).await?;
        let mesh_cpu = mesh_cpu_seconds(ctx, idle).await;
        steps.push(Step {
            asked: *size,
            open,
            rss_kib: rss,
            open_seconds,
            idle_cpu_seconds: mesh_cpu,
            idle_cpu_percent: (mesh_cpu / idle.as_secs_f64() * 1000.0).round() / 10.0,
        });
        if open < *size {
            break;
        }
    }
    let closed = holders.close().await?;
    problems.extend(closed.problems);
    let after_close = settled_rss(&pids).await?;
    // What the closing set off (every user reported offline, friends told) must be over
    // before the next scenario measures anything.
    let quiet_after = quiet(ctx).await;

    let first = steps.first().expect("at least one size");
    let last = steps.last().expect("at least one size");
    let slope = (last.open > first.open)
        .then(|| (last.rss_kib as f64 - first.rss_kib as f64) / (last.open - first.open) as f64);
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let mut outcome = Outcome::new(
        "connections",
        json!({
            "sizes": sizes,
            "heartbeat": args.heartbeat,
            "per_address": PER_ADDRESS,
            "edges": edges.len(),
            "holders": holder::holders_for(largest),
            "mesh_processes": pids.len(),
        }),
    );
    outcome.row(
        "KiB per connected user (RSS slope)",
        match slope {
            Some(slope) => format!(
                "{slope:.1} between {} and {} connections",
                thousands(first.open as f64),
                thousands(last.open as f64)
            ),
            None => "not measured: fewer than two sizes opened".to_owned(),
        },
    );
    for step in &steps {
        outcome.row(
            &format!("{} asked", thousands(step.asked as f64)),
            format!(
                "{} open in {:.1} s · mesh VmRSS {} · mesh CPU while idle {:.1}% of one core",
                thousands(step.open as f64),
                step.open_seconds,
                mib(step.rss_kib),
                step.idle_cpu_percent
            ),
        );
    }
    outcome.row(
        "mesh VmRSS before / after closing",
        format!("{} / {}", mib(before), mib(after_close)),
    );
    outcome.row(
        "mesh quiet again after closing",
        match quiet_after {
            Some(waited) => format!(
                "after {:.0} s (below {:.0}% of one core)",
                waited.as_secs_f64(),
                QUIET_CPU_SHARE * 100.0
            ),
            None => format!("not within {} s", QUIET_LIMIT.as_secs()),
        },
    );
    if quiet_after.is_none() {
        outcome.problem(format!(
            "the mesh was still busy {} s after the connections closed",
            QUIET_LIMIT.as_secs()
        ));
    }
    if last.open < last.asked {
        outcome.problem(format!(
            "opening stopped at {} of {} connections",
            thousands(last.open as f64),
            thousands(last.asked as f64)
        ));
    }
    if let Some(failure) = failures.first() {
        outcome.problem(format!(
            "{} connections failed to open, e.g. {failure}",
            failures.len()
        ));
    }
    for problem in problems {
        outcome.problem(problem);
    }
    outcome.verdict(
        format!("≤ {TARGET_KIB_PER_CONNECTION} KiB per connected user"),
        slope.is_some_and(|s| s <= TARGET_KIB_PER_CONNECTION),
    );
    outcome.verdict(
        format!("{} connections open", thousands(largest as f64)),
        last.open >= largest,
    );
    outcome.results = json!({
        "kib_per_connection": slope.map(|s| (s * 10.0).round() / 10.0),
        "steps": steps,
        "failed": failures.len(),
        "rss_before_kib": before,
        "rss_after_close_kib": after_close,
        "quiet_after_close_secs": quiet_after.map(|d| d.as_secs_f64().round()),
    });
    outcome.work = Some(("connection", last.open as u64));
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_over_loopback_addresses() {
        assert_eq!(source_of(0), IpAddr::V4(Ipv4Addr::new(127, 1, 1, 1)));
        assert_eq!(source_of(PER_ADDRESS - 1), source_of(0));
        assert_eq!(
            source_of(PER_ADDRESS),
            IpAddr::V4(Ipv4Addr::new(127, 1, 1, 2))
        );
        assert_eq!(
            source_of(250 * PER_ADDRESS),
            IpAddr::V4(Ipv4Addr::new(127, 1, 2, 1))
        );
        let distinct: std::collections::HashSet<IpAddr> =
            (0..50_000).step_by(PER_ADDRESS).map(source_of).collect();
        assert_eq!(distinct.len(), 500);
    }
}
