//! `peer`: the same pairs scenarios against a real peer, Matrix Synapse, through its
//! client-server API on the same machine and Postgres (`scripts/bench-synapse.sh` installs
//! and starts it). Each sender has a private room with its partner and sends `m.room.message`
//! events (`PUT .../send/m.room.message/{txn}`; the answer means persisted, Matrix's `stored`);
//! each recipient long-polls `/sync`. `peer-throughput` keeps a window of sends in flight per
//! sender; `peer-latency` sends at a fixed rate (default half what peer-throughput measured).
//! Both report mesh/peer ratios against the mesh's figures of the same run.

mod matrix;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::json;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::{Ctx, body, secs};
use crate::problems::Problems;
use crate::report::{self, Latency, Outcome, thousands};
use crate::timeline::{Slot, Timeline};
pub use matrix::{Matrix, MatrixUser};

/// How long after sending stops deliveries may still arrive.
const DELIVERY_GRACE: Duration = Duration::from_secs(10);
/// How long one `/sync` long-poll waits.
const SYNC_POLL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Pairs of users, each pair with a private room.
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Sends each sender keeps in flight in peer-throughput.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Aggregate rate of peer-latency (default: half what peer-throughput measured).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Length of each measurement, after the warm-up.
    #[arg(long, default_value_t = 15.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
}

/// The peer's users and rooms, set up once per run.
pub struct Peer {
    matrix: Matrix,
    pairs: Vec<(MatrixUser, MatrixUser, String)>,
    /// What peer-throughput measured.
    pub max_stored_per_sec: Option<f64>,
}

impl Peer {
    /// Registers `pairs` pairs of fresh users and gives each pair a room.
    pub async fn set_up(url: &str, pairs: usize) -> anyhow::Result<Self> {
        let matrix = Matrix::new(url)?;
        let tag = format!("{:08x}", rand::random::<u32>());
        let started = Instant::now();
        let users: Vec<MatrixUser> = stream::iter(0..pairs * 2)
            .map(|i| {
                let matrix = matrix.clone();
                let name = format!("lg{tag}_{i}");
                async move { matrix.register(&name, "loadgen-peer-password").await }
            })
            .buffered(8)
            .try_collect()
            .await
            .context("registering Synapse users")?;
        let pairs: Vec<(MatrixUser, MatrixUser, String)> = stream::iter(users.chunks_exact(2))
            .map(|p| {
                let matrix = matrix.clone();
                async move {
                    let room = matrix.direct_room(&p[0], &p[1]).await?;
                    anyhow::Ok((p[0].clone(), p[1].clone(), room))
                }
            })
            .buffered(8)
            .try_collect()
            .await
            .context("creating Synapse rooms")?;
        eprintln!(
            "Synapse: {} users and {} rooms set up in {:.1?}",
            pairs.len() * 2,
            pairs.len(),
            started.elapsed()
        );
        Ok(Self {
            matrix,
            pairs,
            max_stored_per_sec: None,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Pacing {
    Window(usize),
    Rate(f64),
}

struct PeerRun {
    timeline: Arc<Timeline>,
    window: (u32, u32),
    failed: u64,
    problems: Vec<String>,
}

impl PeerRun {
    fn count(&self, moment: impl Fn(&Slot) -> &std::sync::atomic::AtomicU32) -> u64 {
        let (from, to) = self.window;
        self.timeline
            .slots()
            .filter_map(|s| Slot::get(moment(s)))
            .filter(|t| (from..to).contains(t))
            .count() as u64
    }

    fn between(
        &self,
        from: impl Fn(&Slot) -> &std::sync::atomic::AtomicU32,
        to: impl Fn(&Slot) -> &std::sync::atomic::AtomicU32,
    ) -> Latency {
        let (start, end) = self.window;
        let mut h = report::histogram();
        for slot in self.timeline.slots() {
            let in_window = Slot::get(&slot.sent).is_some_and(|t| (start..end).contains(&t));
            if let (true, Some(a), Some(b)) =
                (in_window, Slot::get(from(slot)), Slot::get(to(slot)))
            {
                h.saturating_record(u64::from(b.saturating_sub(a)).max(1));
            }
        }
        Latency::of(&h)
    }

    fn secs(&self) -> f64 {
        f64::from(self.window.1 - self.window.0) / 1e6
    }
}

async fn drive(peer: &Peer, pacing: Pacing, args: &Args) -> anyhow::Result<PeerRun> {
    let timeline = Arc::new(Timeline::new());
    let problems = Arc::new(Problems::default());
    let failed = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    // Recipients start syncing before anything is sent.
    let mut syncers = Vec::new();
    for (_, recipient, _) in &peer.pairs {
        let first = peer.matrix.sync(recipient, None, Duration::ZERO).await?;
        syncers.push(tokio::spawn(follow(
            peer.matrix.clone(),
            recipient.clone(),
            first.next_batch,
            timeline.clone(),
            problems.clone(),
            stop.clone(),
        )));
    }
    let text = body(args.body_bytes);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + secs(args.warmup) + secs(args.seconds.max(1.0));
    let n = peer.pairs.len();
    let senders: Vec<_> = peer
        .pairs
        .iter()
        .enumerate()
        .map(|(i, (sender, _, room))| {
            let matrix = peer.matrix.clone();
            let sender = sender.clone();
            let room = room.clone();
            let timeline = timeline.clone();
            let problems = problems.clone();
            let failed = failed.clone();
            let text = text.clone();
            tokio::spawn(async move {
                let send_one = |index: u64, client_id: String| {
                    let matrix = matrix.clone();
                    let sender = sender.clone();
                    let room = room.clone();
                    let timeline = timeline.clone();
                    let problems = problems.clone();
                    let failed = failed.clone();
                    let body = format!("{client_id} {text}");
                    async move {
                        match matrix.send(&sender, &room, &client_id, &body).await {
                            Ok(()) => {
                                let slot = timeline.slot(index);
                                let now = timeline.now();
                                Slot::stamp(&slot.accepted, now);
                                Slot::stamp(&slot.stored, now);
                            }
                            Err(err) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                problems.add("send failed", || format!("{err:#}"));
                            }
                        }
                    }
                };
                let mut in_flight = FuturesUnordered::new();
                match pacing {
                    Pacing::Window(window) => {
                        sleep_until(start.into()).await;
                        while Instant::now() < end {
                            while in_flight.len() < window.max(1) {
                                let (index, client_id) = timeline.allocate();
                                Slot::stamp(&timeline.slot(index).sent, timeline.now());
                                in_flight.push(send_one(index, client_id));
                            }
                            in_flight.next().await;
                        }
                    }
                    Pacing::Rate(total) => {
                        let per_sender = (total / n as f64).max(0.01);
                        let period = Duration::from_secs_f64(1.0 / per_sender);
                        let offset = Duration::from_secs_f64(i as f64 / n as f64 / per_sender);
                        let mut k = 0u32;
                        loop {
                            let due = start + offset + period * k;
                            if due >= end {
                                break;
                            }
                            tokio::select! {
                                () = sleep_until(due.into()) => {}
                                Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                            }
                            let (index, client_id) = timeline.allocate();
                            Slot::stamp(&timeline.slot(index).sent, timeline.now());
                            in_flight.push(send_one(index, client_id));
                            k += 1;
                        }
                    }
                }
                while in_flight.next().await.is_some() {}
            })
        })
        .collect();
    for sender in senders {
        sender.await?;
    }
    let stored = || {
        timeline
            .slots()
            .filter(|s| Slot::get(&s.stored).is_some())
            .count()
    };
    let delivered = || {
        timeline
            .slots()
            .filter(|s| Slot::get(&s.delivered).is_some())
            .count()
    };
    let by = Instant::now() + DELIVERY_GRACE;
    while delivered() < stored() && Instant::now() < by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for syncer in syncers {
        syncer.await?;
    }
    Ok(PeerRun {
        window: (timeline.at(start + secs(args.warmup)), timeline.at(end)),
        failed: failed.load(Ordering::Relaxed),
        problems: problems.lines(),
        timeline,
    })
}

/// Long-polls a recipient's `/sync` and stamps each message of this run when it arrives.
async fn follow(
    matrix: Matrix,
    user: MatrixUser,
    mut since: String,
    timeline: Arc<Timeline>,
    problems: Arc<Problems>,
    stop: CancellationToken,
) {
    loop {
        let synced = tokio::select! {
            () = stop.cancelled() => return,
            synced = matrix.sync(&user, Some(&since), SYNC_POLL) => synced,
        };
        match synced {
            Ok(synced) => {
                let now = timeline.now();
                for body in &synced.bodies {
                    let client_id = body.split(' ').next().unwrap_or_default();
                    if let Some(index) = timeline.index_of(client_id) {
                        let slot = timeline.slot(index);
                        Slot::stamp(&slot.delivered, now);
                        slot.deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                }
                since = synced.next_batch;
            }
            Err(err) => {
                problems.add("sync failed", || format!("{err:#}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn peer_of(ctx: &mut Ctx) -> anyhow::Result<&mut Peer> {
    let problem = ctx.peer_problem.clone();
    ctx.peer.as_mut().ok_or_else(|| match problem {
        Some(problem) => anyhow::anyhow!("no Synapse peer: {problem}"),
        None => anyhow::anyhow!("no Synapse: give --peer-url (scripts/bench-synapse.sh)"),
    })
}

fn common(outcome: &mut Outcome, run: &PeerRun) {
    let sent = run.timeline.allocated();
    let stored = run
        .timeline
        .slots()
        .filter(|s| Slot::get(&s.stored).is_some())
        .count();
    let delivered = run
        .timeline
        .slots()
        .filter(|s| Slot::get(&s.delivered).is_some())
        .count();
    outcome.row(
        "messages sent / persisted / delivered",
        format!(
            "{} / {} / {}",
            thousands(sent as f64),
            thousands(stored as f64),
            thousands(delivered as f64)
        ),
    );
    if run.failed > 0 {
        outcome.problem(format!("{} sends failed", run.failed));
    }
    if delivered < stored {
        outcome.problem(format!(
            "{} persisted messages never reached the recipient's /sync",
            stored - delivered
        ));
    }
    for problem in &run.problems {
        outcome.problem(problem.clone());
    }
    outcome.work = Some(("stored message", stored as u64));
}

pub async fn throughput(ctx: &mut Ctx, args: &Args) -> anyhow::Result<Outcome> {
    let mesh = ctx.max_stored_per_sec;
    let peer = peer_of(ctx)?;
    let run = drive(peer, Pacing::Window(args.window), args).await?;
    let rate = run.count(|s| &s.stored) as f64 / run.secs();
    peer.max_stored_per_sec = Some(rate);
    let send_to_stored = run.between(|s| &s.sent, |s| &s.stored);
    let mut outcome = Outcome::new(
        "peer_throughput",
        json!({ "peer": "synapse", "pairs": peer.pairs.len(), "window": args.window, "seconds": args.seconds }),
    );
    outcome.row("Synapse persisted msg/s", thousands(rate));
    outcome.row("send → persisted under full load", send_to_stored.line());
    if let Some(mesh) = mesh {
        outcome.versus(
            "mesh stored msg/s",
            mesh,
            "Synapse persisted msg/s",
            Some(rate),
        );
    }
    common(&mut outcome, &run);
    outcome.results = json!({
        "stored_per_sec": rate.round(),
        "send_to_stored": send_to_stored,
        "mesh_stored_per_sec": mesh,
        "mesh_over_peer": mesh.filter(|_| rate > 0.0).map(|m| m / rate),
    });
    Ok(outcome)
}

pub async fn latency(ctx: &mut Ctx, args: &Args) -> anyhow::Result<Outcome> {
    let mesh_p99 = ctx.latency_p99_ms;
    let peer = peer_of(ctx)?;
    let rate = args
        .rate
        .or(peer.max_stored_per_sec.map(|m| (m / 2.0).max(1.0)))
        .ok_or_else(|| anyhow::anyhow!("no rate: run peer-throughput first or give --rate"))?;
    let run = drive(peer, Pacing::Rate(rate), args).await?;
    let sent_rate = run.count(|s| &s.sent) as f64 / run.secs();
    let stored_to_delivered = run.between(|s| &s.stored, |s| &s.delivered);
    let send_to_stored = run.between(|s| &s.sent, |s| &s.stored);
    let send_to_delivered = run.between(|s| &s.sent, |s| &s.delivered);
    let mut outcome = Outcome::new(
        "peer_latency",
        json!({ "peer": "synapse", "pairs": peer.pairs.len(), "rate": rate, "seconds": args.seconds }),
    );
    outcome.row(
        "achieved send rate msg/s",
        format!("{} (asked {})", thousands(sent_rate), thousands(rate)),
    );
    outcome.row("persisted → delivered (/sync)", stored_to_delivered.line());
    outcome.row("send → persisted", send_to_stored.line());
    outcome.row("send → delivered", send_to_delivered.line());
    if let Some(mesh_p99) = mesh_p99 {
        outcome.row(
            "p99 mesh accepted → delivered vs Synapse persisted → delivered",
            format!(
                "{mesh_p99} ms vs {} ms (mesh/peer = {:.2})",
                stored_to_delivered.p99_ms,
                mesh_p99 / stored_to_delivered.p99_ms.max(0.01)
            ),
        );
    }
    common(&mut outcome, &run);
    outcome.results = json!({
        "sent_per_sec": sent_rate.round(),
        "stored_to_delivered": stored_to_delivered,
        "send_to_stored": send_to_stored,
        "send_to_delivered": send_to_delivered,
        "mesh_p99_accept_to_delivery_ms": mesh_p99,
    });
    Ok(outcome)
}
