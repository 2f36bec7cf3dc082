//! `loadgen`: drives a running nats-mesh over HTTP and WebSocket like many clients would,
//! measures the raw limits of this machine beside it (and a Matrix Synapse peer when given),
//! and writes what it measured to `bench/results.md` and `bench/results.json`.

mod api;
mod backlog;
mod ceiling;
mod checkpoints;
mod holder;
mod meter;
mod pace;
mod problems;
mod procs;
mod raw_nats;
mod reader;
mod report;
mod scenarios;
mod speed;
mod tally;
mod timeline;
mod users;
mod ws;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::api::Api;
use crate::backlog::Probe;
use crate::checkpoints::Checkpoints;
use crate::meter::Meter;
use crate::procs::Procs;
use crate::raw_nats::NatsAccess;
use crate::report::{Outcome, Writer};
use crate::scenarios::baseline::{self, Limit, PathFloor};
use crate::scenarios::{
    Ctx, connections, fanout, latency, login, overload, peer, reads, throughput,
};
use crate::users::Pool;

/// The mesh's allocator: the load generator's CPU per request counts against the two cores it
/// shares with the mesh, and glibc's malloc took about a tenth of it during reads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Phone of the bench administrator (in the mesh's `MESH_BOOTSTRAP_ADMINS`), who lifts
    /// the plan limits of the users that send messages and own groups.
    #[arg(long, global = true, env = "LOADGEN_ADMIN_PHONE")]
    admin_phone: Option<String>,
    /// Free text recorded with the results (commit, settings).
    #[arg(long, global = true)]
    note: Option<String>,
    /// The mesh process: its CPU and memory are read from /proc.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// More edges of the same mesh (HTTP base URLs): the connections scenario spreads its
    /// sockets over `--url` and these.
    #[arg(long, global = true)]
    edge_url: Vec<String>,
    /// Further processes of the mesh (e.g. the edges of `--edge-url`): counted with `--pid`.
    #[arg(long, global = true)]
    edge_pid: Vec<u32>,
    /// The nats-server process.
    #[arg(long, global = true)]
    nats_pid: Option<u32>,
    /// The Postgres postmaster (its children's CPU is counted with it).
    #[arg(long, global = true)]
    postgres_pid: Option<u32>,
    /// The Synapse peer's process.
    #[arg(long, global = true)]
    peer_pid: Option<u32>,
    /// NATS monitoring URL: scenarios start only once the mesh's ingest backlog is empty.
    #[arg(long, global = true)]
    nats_monitor: Option<String>,
    /// The mesh's NATS prefix (names the ingest stream whose backlog is watched).
    #[arg(long, global = true, default_value = "mesh")]
    prefix: String,
    /// NATS URL for the raw limits.
    #[arg(long, global = true, env = "MESH_NATS_URL")]
    nats_url: Option<String>,
    /// The role-credentials file of a NATS with authorization (`scripts/services.sh env`).
    #[arg(long, global = true, env = "MESH_NATS_ROLE_CREDENTIALS")]
    nats_credentials: Option<PathBuf>,
    /// The bench database, for the raw Postgres limit (a scratch schema `loadgen` in it).
    #[arg(long, global = true, env = "LOADGEN_DATABASE_URL")]
    database_url: Option<String>,
    /// Base URL of a Matrix Synapse to run the peer scenarios against.
    #[arg(long, global = true, env = "LOADGEN_PEER_URL")]
    peer_url: Option<String>,
    /// Why there is no peer (e.g. Synapse failed to install), recorded as the peer
    /// scenarios' result.
    #[arg(long, global = true)]
    peer_unavailable: Option<String>,
    /// Directory the pairs scenarios (throughput, overload, latency) write every message's
    /// moments to, as `<scenario>.csv`: sent, accepted, stored and delivered, in microseconds
    /// since the run's start, whose wall-clock time the file's first line gives.
    #[arg(long, global = true)]
    timelines: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stored messages per second with pipelined senders.
    Throughput(throughput::Args),
    /// Twice the maximum offered at a fixed pace: does the stored rate hold, how does the mesh
    /// push back.
    Overload(overload::Args),
    /// Accept-to-delivery and send-to-stored latency at a fixed rate.
    Latency(latency::Args),
    /// Deliveries per second into one large group.
    Fanout(fanout::Args),
    /// Memory per connected user and idle CPU with many heartbeating WebSockets.
    Connections(connections::Args),
    /// An authenticated read through the edge at a fixed concurrency.
    Reads(reads::Args),
    /// Sign-ins per second through the edge.
    Login(login::Args),
    /// The raw limits: JetStream publish+ack, Postgres batch insert, NATS request/reply,
    /// argon2id.
    Baseline(baseline::Args),
    /// Throughput of the same pairs against Matrix Synapse (--peer-url).
    PeerThroughput(peer::Args),
    /// Latency of the same pairs against Matrix Synapse (--peer-url).
    PeerLatency(peer::Args),
    /// Every scenario in turn (the full bench).
    All(AllArgs),
    /// Holds sockets for the connections scenario, as told on stdin (started by it).
    #[command(hide = true)]
    Hold,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Throughput(_) => "throughput",
            Command::Overload(_) => "overload",
            Command::Latency(_) => "latency",
            Command::Fanout(_) => "fanout",
            Command::Connections(_) => "connections",
            Command::Reads(_) => "reads",
            Command::Login(_) => "login",
            Command::Baseline(_) => "baseline",
            Command::PeerThroughput(_) => "peer-throughput",
            Command::PeerLatency(_) => "peer-latency",
            Command::All(_) => "all",
            Command::Hold => "hold",
        }
    }
}

#[derive(Debug, clap::Args)]
struct AllArgs {
    /// Measured seconds of the throughput, latency, reads, login and peer scenarios.
    #[arg(long, default_value_t = 15.0)]
    seconds: f64,
    /// Measured seconds of the overload scenario.
    #[arg(long, default_value_t = 30.0)]
    overload_seconds: f64,
    /// Seconds each raw limit is measured.
    #[arg(long, default_value_t = 10.0)]
    baseline_seconds: f64,
    /// Pairs of the throughput, overload, latency and peer scenarios.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Messages each throughput sender may have unstored.
    #[arg(long, default_value_t = 200)]
    window: usize,
    /// Aggregate rate of the latency scenario (default: half what throughput measured).
    #[arg(long)]
    rate: Option<f64>,
    /// Members of the fan-out groups (the first one carries the rate target).
    #[arg(long, value_delimiter = ',', default_values_t = [500usize, 5000])]
    members: Vec<usize>,
    /// Messages posted to each fan-out group, in the order of `--members` (the last value
    /// serves the groups after it).
    #[arg(long, value_delimiter = ',', default_values_t = [400usize, 400])]
    fanout_messages: Vec<usize>,
    /// Messages per second posted to each fan-out group, in the order of `--members`: each
    /// group is offered 200,000 deliveries/s, above the target. Offers far above what the
    /// mesh delivers build a backlog that reaches the members' sockets in bursts, and a socket
    /// whose reader falls a send queue behind is closed as a slow consumer (1,000/s into 500
    /// and 400/s into 5,000 members each lost a socket that way in a full run), which is the
    /// mesh defending itself, not what this scenario measures.
    #[arg(long, value_delimiter = ',', default_values_t = [400.0, 40.0])]
    fanout_rate: Vec<f64>,
    /// Connection counts of the connections scenario (skipped when empty or without --pid).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 50_000])]
    sizes: Vec<usize>,
    /// Readers of the reads scenario (and requesters of the raw request/reply).
    #[arg(long, default_value_t = 32)]
    read_concurrency: usize,
    /// Clients of the login scenario.
    #[arg(long, default_value_t = 8)]
    login_concurrency: usize,
    /// Sends each Synapse sender keeps in flight.
    #[arg(long, default_value_t = 8)]
    peer_window: usize,
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

/// Runs scenarios from an empty backlog, adds their CPU use, and writes every outcome, a
/// failed one as a problem line.
struct Runner {
    writer: Writer,
    probe: Option<Probe>,
    /// The bench database, when given: a vacuum and a checkpoint before each scenario.
    checkpoints: Option<Checkpoints>,
    failed: Vec<String>,
}

impl Runner {
    async fn run(
        &mut self,
        ctx: &mut Ctx,
        name: &'static str,
        scenario: impl AsyncFnOnce(&mut Ctx) -> anyhow::Result<Outcome>,
    ) -> anyhow::Result<Option<Outcome>> {
        let procs = ctx.procs.clone();
        let checkpoints = self.checkpoints.as_ref();
        let measured = match Meter::start(&procs, self.probe.as_ref(), checkpoints).await {
            Ok(meter) => {
                ctx.speed = Some(meter.speed());
                let ran = scenario(ctx).await;
                ctx.speed = None;
                match ran {
                    Ok(mut outcome) => {
                        meter.finish(&procs, checkpoints, &mut outcome).await;
                        ctx.limits.record_cpu(&outcome);
                        ceiling::add(&mut outcome, ctx, procs::cpus());
                        Ok(outcome)
                    }
                    Err(err) => Err(err),
                }
            }
            Err(err) => Err(err),
        };
        match measured {
            Ok(outcome) => {
                self.writer.write(&outcome)?;
                Ok(Some(outcome))
            }
            Err(err) => {
                eprintln!("{name} failed: {err:#}");
                self.failed.push(format!("{name}: {err:#}"));
                let mut outcome = Outcome::new(name, json!({}));
                outcome.problem(format!("the scenario failed: {err:#}"));
                outcome.results = json!({ "error": format!("{err:#}") });
                self.writer.write(&outcome)?;
                Ok(None)
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    if matches!(cli.command, Command::Hold) {
        return holder::serve(|i| Some(connections::source_of(i))).await;
    }
    let api = Api::new(&cli.url)?;
    let pool = Pool::load(
        api.clone(),
        &cli.users_cache,
        cli.register_concurrency,
        cli.admin_phone.clone(),
    )?;
    let mut peer_problem = cli.peer_unavailable.clone();
    let peer = match &cli.peer_url {
        Some(url)
            if matches!(
                cli.command,
                Command::All(_) | Command::PeerThroughput(_) | Command::PeerLatency(_)
            ) =>
        {
            let pairs = match &cli.command {
                Command::All(a) => a.pairs,
                Command::PeerThroughput(a) | Command::PeerLatency(a) => a.pairs,
                _ => 0,
            };
            match peer::Peer::set_up(url, pairs).await {
                Ok(peer) => Some(peer),
                Err(err) => {
                    eprintln!("the Synapse peer could not be set up: {err:#}");
                    peer_problem = Some(format!("setting up Synapse users and rooms: {err:#}"));
                    None
                }
            }
        }
        _ => None,
    };
    let mut ctx = Ctx {
        ws_urls: std::iter::once(api.base())
            .chain(cli.edge_url.iter().map(String::as_str))
            .map(ws::ws_url)
            .collect(),
        api,
        pool,
        procs: Procs::new(
            cli.pid.into_iter().chain(cli.edge_pid.iter().copied()),
            cli.nats_pid,
            cli.postgres_pid,
            cli.peer_pid,
        ),
        nats: cli.nats_url.clone().map(|url| NatsAccess {
            url,
            credentials: cli.nats_credentials.clone(),
        }),
        database_url: cli.database_url.clone(),
        limits: baseline::Limits::default(),
        max_stored_per_sec: None,
        max_cpu: None,
        latency_p99_ms: None,
        peer,
        peer_problem,
        timelines: cli.timelines.clone(),
        speed: None,
    };
    let probe = cli
        .nats_monitor
        .as_deref()
        .map(|monitor| Probe::new(monitor, &cli.prefix))
        .transpose()?;
    let writer = Writer::new(
        cli.out.clone(),
        cli.json.clone(),
        cli.command.name(),
        ctx.api.base(),
        cli.note.clone(),
    );
    let checkpoints = match cli.database_url.as_deref() {
        Some(url) => match Checkpoints::connect(url).await {
            Ok(checkpoints) => Some(checkpoints),
            Err(err) => {
                eprintln!("warning: no checkpoints before the scenarios: {err:#}");
                None
            }
        },
        None => None,
    };
    let mut runner = Runner {
        writer,
        probe,
        checkpoints,
        failed: Vec::new(),
    };
    let r = &mut runner;
    let c = &mut ctx;
    match &cli.command {
        Command::Throughput(args) => {
            r.run(c, "throughput", async |c| throughput::run(c, args).await)
                .await?;
        }
        Command::Overload(args) => {
            r.run(c, "overload", async |c| overload::run(c, args).await)
                .await?;
        }
        Command::Latency(args) => {
            r.run(c, "latency", async |c| latency::run(c, args).await)
                .await?;
        }
        Command::Fanout(args) => {
            r.run(c, "fanout", async |c| fanout::run(c, args).await)
                .await?;
        }
        Command::Connections(args) => {
            r.run(c, "connections", async |c| connections::run(c, args).await)
                .await?;
        }
        Command::Reads(args) => {
            r.run(c, "reads", async |c| reads::run(c, args).await)
                .await?;
        }
        Command::Login(args) => {
            r.run(c, "login", async |c| login::run(c, args).await)
                .await?;
        }
        Command::Baseline(args) => {
            for limit in args.chosen() {
                r.run(c, limit.name(), async |c| {
                    baseline::run(c, args, limit).await
                })
                .await?;
            }
        }
        Command::PeerThroughput(args) => {
            r.run(c, "peer_throughput", async |c| {
                peer::throughput(c, args).await
            })
            .await?;
        }
        Command::PeerLatency(args) => {
            r.run(c, "peer_latency", async |c| peer::latency(c, args).await)
                .await?;
        }
        Command::All(args) => run_all(r, c, args).await?,
        Command::Hold => unreachable!("answered before the run starts"),
    }
    eprintln!(
        "results appended to {} and {}",
        cli.out.display(),
        cli.json.display()
    );
    if runner.failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("scenarios failed: {}", runner.failed.join("; "))
    }
}

/// Every scenario in turn. Connections go first, while the mesh's heap has not yet been grown
/// (and freed) by the busy scenarios; the raw limits next, so every later figure has its limit.
/// Measures `limits` in turn (each kept in `ctx.limits` for the scenarios that follow).
async fn measure_limits(
    r: &mut Runner,
    ctx: &mut Ctx,
    raw: &baseline::Args,
    limits: &[Limit],
) -> anyhow::Result<()> {
    for &limit in limits {
        r.run(ctx, limit.name(), async |c| {
            baseline::run(c, raw, limit).await
        })
        .await?;
    }
    Ok(())
}

async fn run_all(r: &mut Runner, ctx: &mut Ctx, args: &AllArgs) -> anyhow::Result<()> {
    let users = (args.pairs * 2)
        .max(args.members.iter().copied().max().unwrap_or(0))
        .max(args.read_concurrency)
        .max(args.login_concurrency);
    ctx.pool
        .users(users)
        .await
        .context("preparing the test users")?;
    if !ctx.procs.meshes().is_empty() && !args.sizes.is_empty() {
        let connections = connections::Args {
            sizes: args.sizes.clone(),
            concurrency: 64,
            heartbeat: 20.0,
            idle_seconds: 10.0,
        };
        r.run(ctx, "connections", async |c| {
            connections::run(c, &connections).await
        })
        .await?;
    } else {
        eprintln!("no --pid or no --sizes: skipping the connections scenario");
    }
    let raw = baseline::Args {
        seconds: args.baseline_seconds,
        publishers: args.pairs,
        window: args.window,
        payload_bytes: 256,
        writers: 8,
        batch: 256,
        concurrency: args.read_concurrency,
        threads: None,
        path_rate: 10_000.0,
        only: Vec::new(),
    };
    // Each raw limit is measured right before the scenario compared with it: this machine's
    // speed drifts within minutes (other tenants), and a ratio is only fair when both sides
    // ran under the same conditions.
    measure_limits(r, ctx, &raw, &[Limit::JetStream, Limit::Postgres]).await?;
    let throughput = throughput::Args {
        pairs: args.pairs,
        seconds: args.seconds,
        warmup: 3.0,
        window: args.window,
        body_bytes: 64,
        unanswered: None,
    };
    let measured = r
        .run(ctx, "throughput", async |c| {
            throughput::run(c, &throughput).await
        })
        .await?;
    ctx.max_stored_per_sec = measured
        .as_ref()
        .and_then(|o| o.results["stored_per_sec"].as_f64())
        .filter(|rate| *rate > 0.0);
    ctx.max_cpu = measured.as_ref().and_then(|o| o.cpu.clone());
    let overload = overload::Args {
        pairs: args.pairs,
        maximum: None,
        factor: 2.0,
        seconds: args.overload_seconds,
        warmup: 3.0,
        body_bytes: 64,
    };
    r.run(ctx, "overload", async |c| overload::run(c, &overload).await)
        .await?;
    let rate = args.rate.or(ctx
        .max_stored_per_sec
        .map(|m| (m / 2.0 / 100.0).floor().max(1.0) * 100.0));
    match rate {
        Some(rate) => {
            // What a message needs at all, at the same rate, right before the mesh is asked it.
            let path = baseline::Args {
                path_rate: rate,
                ..raw.clone()
            };
            measure_limits(r, ctx, &path, &[Limit::MessagePath]).await?;
            // A raw path that misses the target would rule it out, yet its p99 at nearly the
            // same rate has ranged from 20 to 98 ms between runs on one host, and the mesh
            // has met 50 ms after a raw path that missed it. So a miss gets one more run, and
            // the ceiling counts the better of the two (`PathFloor::better`).
            if ctx
                .limits
                .message_path
                .as_ref()
                .is_some_and(PathFloor::rules_out)
            {
                measure_limits(r, ctx, &path, &[Limit::MessagePath]).await?;
            }
            let latency = latency::Args {
                pairs: args.pairs,
                rate,
                seconds: args.seconds,
                warmup: 3.0,
                max_in_flight: 2000,
                body_bytes: 64,
                reference: false,
            };
            let measured = r
                .run(ctx, "latency", async |c| latency::run(c, &latency).await)
                .await?;
            ctx.latency_p99_ms = measured
                .as_ref()
                .and_then(|o| o.results["accept_to_delivery"]["p99_ms"].as_f64());
            let headroom = latency::Args {
                rate: (rate / 2.0 / 100.0).floor().max(1.0) * 100.0,
                reference: true,
                ..latency
            };
            r.run(ctx, "latency_headroom", async |c| {
                latency::run(c, &headroom).await
            })
            .await?;
        }
        None => eprintln!("no maximum measured and no --rate: skipping latency"),
    }
    let reads = reads::Args {
        concurrency: args.read_concurrency,
        seconds: args.seconds,
        warmup: 2.0,
        read: reads::Read::Group,
    };
    measure_limits(
        r,
        ctx,
        &raw,
        &[Limit::RequestReply, Limit::EdgeHttp, Limit::ReadParts],
    )
    .await?;
    r.run(ctx, "reads", async |c| reads::run(c, &reads).await)
        .await?;
    let login = login::Args {
        concurrency: args.login_concurrency,
        seconds: args.seconds,
    };
    measure_limits(r, ctx, &raw, &[Limit::Argon2id]).await?;
    r.run(ctx, "login", async |c| login::run(c, &login).await)
        .await?;
    for (group, members) in args.members.iter().enumerate() {
        let fanout = fanout::Args {
            members: *members,
            messages: nth_or_last(&args.fanout_messages, group).unwrap_or(400),
            rate: nth_or_last(&args.fanout_rate, group).unwrap_or(400.0),
            body_bytes: 64,
        };
        r.run(ctx, "fanout", async |c| fanout::run(c, &fanout).await)
            .await?;
    }
    if ctx.peer.is_some() {
        let peer = peer::Args {
            pairs: args.pairs,
            window: args.peer_window,
            rate: None,
            seconds: args.seconds,
            warmup: 3.0,
            body_bytes: 64,
        };
        r.run(ctx, "peer_throughput", async |c| {
            peer::throughput(c, &peer).await
        })
        .await?;
        r.run(ctx, "peer_latency", async |c| peer::latency(c, &peer).await)
            .await?;
    } else if let Some(problem) = ctx.peer_problem.clone() {
        r.run(ctx, "peer_throughput", async |_| {
            Err(anyhow::anyhow!("no Synapse peer: {problem}"))
        })
        .await?;
    } else {
        eprintln!("no Synapse peer (--peer-url): skipping the peer scenarios");
    }
    Ok(())
}

/// The `n`th of `values`, or the last one when there are fewer.
fn nth_or_last<T: Copy>(values: &[T], n: usize) -> Option<T> {
    values.get(n).or(values.last()).copied()
}

#[cfg(test)]
mod tests {
    use super::nth_or_last;

    #[test]
    fn a_group_without_its_own_value_takes_the_last() {
        assert_eq!(nth_or_last(&[1000, 400], 0), Some(1000));
        assert_eq!(nth_or_last(&[1000, 400], 1), Some(400));
        assert_eq!(nth_or_last(&[1000, 400], 2), Some(400));
        assert_eq!(nth_or_last::<u32>(&[], 0), None);
    }
}
