//! `loadgen`: drives a running nats-mesh over HTTP and WebSocket like many clients would, and
//! writes what it measured to `bench/results.md` and `bench/results.json`.

mod api;
mod problems;
mod report;
mod scenarios;
mod timeline;
mod users;
mod ws;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::api::Api;
use crate::report::{Outcome, Writer};
use crate::scenarios::{Ctx, fanout, idle, latency, throughput};
use crate::users::Pool;

#[derive(Debug, Parser)]
#[command(version, about = "Load generator for nats-mesh")]
struct Cli {
    /// HTTP base URL of the mesh's edge.
    #[arg(
        long,
        global = true,
        env = "LOADGEN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Markdown file a dated section of results is appended to.
    #[arg(long, global = true, default_value = "bench/results.md")]
    out: PathBuf,
    /// File one JSON line per scenario is appended to.
    #[arg(long, global = true, default_value = "bench/results.json")]
    json: PathBuf,
    /// Where test users, their tokens and friendships are kept between runs.
    #[arg(long, global = true, default_value = "bench/.users.json")]
    users_cache: PathBuf,
    /// Registrations and logins at once (each hashes a password, slowly on purpose).
    #[arg(long, global = true, default_value_t = 4)]
    register_concurrency: usize,
    /// Free text recorded with the results (commit, settings).
    #[arg(long, global = true)]
    note: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stored messages per second with pipelined senders.
    Throughput(throughput::Args),
    /// Accept-to-delivery and send-to-stored latency at a fixed rate.
    Latency(latency::Args),
    /// Deliveries per second into one large group.
    Fanout(fanout::Args),
    /// Edge memory per idle WebSocket.
    Idle(idle::Args),
    /// Every scenario in turn with moderate settings (a few minutes on 2 cores).
    All(AllArgs),
}

#[derive(Debug, clap::Args)]
struct AllArgs {
    /// The mesh process, for the idle-memory scenario (skipped without it).
    #[arg(long)]
    pid: Option<u32>,
    /// Measured seconds of the throughput and latency scenarios.
    #[arg(long, default_value_t = 15.0)]
    seconds: f64,
    /// Pairs of the throughput and latency scenarios.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Aggregate rate of the latency scenario (half the throughput target). When the
    /// throughput scenario measured less than twice this, latency is also measured at half of
    /// what it measured.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Members of the fan-out group.
    #[arg(long, default_value_t = 500)]
    members: usize,
    /// Messages posted to the fan-out group.
    #[arg(long, default_value_t = 400)]
    fanout_messages: usize,
    /// Messages per second posted to the fan-out group; 400 into 500 members offers 200,000
    /// deliveries/s, well above the target, so the result shows what the mesh manages.
    #[arg(long, default_value_t = 400.0)]
    fanout_rate: f64,
    /// Idle connections of the memory scenario.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
}

/// Raises the soft open-files limit to the hard one: every socket is a descriptor.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < 8192 => eprintln!(
            "warning: only {limit} open files allowed; raise `ulimit -n` for thousands of sockets"
        ),
        Ok(_) => {}
        Err(err) => eprintln!("warning: could not raise the open-files limit: {err}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    let api = Api::new(&cli.url)?;
    let pool = Pool::load(api.clone(), &cli.users_cache, cli.register_concurrency)?;
    let mut ctx = Ctx {
        ws_url: ws::ws_url(api.base()),
        api,
        pool,
    };
    let command = match &cli.command {
        Command::Throughput(_) => "throughput",
        Command::Latency(_) => "latency",
        Command::Fanout(_) => "fanout",
        Command::Idle(_) => "idle",
        Command::All(_) => "all",
    };
    let mut writer = Writer::new(
        cli.out.clone(),
        cli.json.clone(),
        command,
        ctx.api.base(),
        cli.note.clone(),
    );
    match &cli.command {
        Command::Throughput(args) => writer.write(&throughput::run(&mut ctx, args).await?)?,
        Command::Latency(args) => writer.write(&latency::run(&mut ctx, args).await?)?,
        Command::Fanout(args) => writer.write(&fanout::run(&mut ctx, args).await?)?,
        Command::Idle(args) => writer.write(&idle::run(&mut ctx, args).await?)?,
        Command::All(args) => run_all(&mut ctx, &mut writer, args).await?,
    }
    eprintln!(
        "results appended to {} and {}",
        cli.out.display(),
        cli.json.display()
    );
    Ok(())
}

/// Every scenario in turn. Idle memory goes first, while the mesh's heap has not yet been
/// grown (and freed) by the busy scenarios, so its growth reflects the connections.
async fn run_all(ctx: &mut Ctx, writer: &mut Writer, args: &AllArgs) -> anyhow::Result<()> {
    let users = (args.pairs * 2).max(args.members).max(20);
    ctx.pool
        .users(users)
        .await
        .context("preparing the test users")?;
    let mut failed = Vec::new();
    // A scenario that fails is reported as such and the next one still runs.
    let mut record = |name: &'static str, outcome: anyhow::Result<Outcome>| match outcome {
        Ok(outcome) => writer.write(&outcome),
        Err(err) => {
            eprintln!("{name} failed: {err:#}");
            failed.push(format!("{name}: {err:#}"));
            let mut outcome = Outcome::new(name, json!({}));
            outcome.problem(format!("the scenario failed: {err:#}"));
            outcome.results = json!({ "error": format!("{err:#}") });
            writer.write(&outcome)
        }
    };
    match args.pid {
        Some(pid) => {
            let idle = idle::Args {
                connections: args.connections,
                users: 20,
                pid,
                concurrency: 32,
            };
            record("idle", idle::run(ctx, &idle).await)?;
        }
        None => eprintln!("no --pid: skipping the idle-memory scenario"),
    }
    let throughput = throughput::Args {
        pairs: args.pairs,
        seconds: args.seconds,
        warmup: 3.0,
        window: 200,
        body_bytes: 64,
    };
    let measured = throughput::run(ctx, &throughput).await;
    let stored_per_sec = measured
        .as_ref()
        .ok()
        .and_then(|o| o.results["stored_per_sec"].as_f64());
    record("throughput", measured)?;
    let mut rates = vec![args.rate];
    // Above what the mesh can store, latency only measures a growing backlog; so also
    // measure at half of what it sustained.
    if let Some(sustained) = stored_per_sec
        && sustained / 2.0 < args.rate * 0.9
        && sustained >= 200.0
    {
        rates.push((sustained / 2.0 / 100.0).floor() * 100.0);
    }
    for rate in rates {
        let latency = latency::Args {
            pairs: args.pairs,
            rate,
            seconds: args.seconds,
            warmup: 3.0,
            max_in_flight: 2000,
            body_bytes: 64,
        };
        record("latency", latency::run(ctx, &latency).await)?;
    }
    let fanout = fanout::Args {
        members: args.members,
        messages: args.fanout_messages,
        rate: args.fanout_rate,
        body_bytes: 64,
    };
    record("fanout", fanout::run(ctx, &fanout).await)?;
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("scenarios failed: {}", failed.join("; "))
    }
}
