//! `fanout`: one open group whose members each hold a WebSocket; one member posts at a steady
//! rate and every member (the sender included) must receive every message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt, TryStreamExt, stream};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::{Ctx, body, open_sockets};
use crate::meter::Window;
use crate::problems::Problems;
use crate::report::{self, Latency, Outcome, thousands};
use crate::timeline::{Slot, Timeline};
use crate::ws::{self, Frame, Profile, Stream, Target};

/// The product's target: message frames delivered per second into a 500-member group.
pub const TARGET_DELIVERIES_PER_SEC: f64 = 150_000.0;
/// The group size the target is set for; other sizes are reported without a rate target.
pub const TARGET_MEMBERS: usize = 500;
/// The `max_members` asked for groups up to this size (the mesh's default largest group);
/// larger groups ask for exactly their size, and the mesh may refuse them.
const DEFAULT_MAX_MEMBERS: usize = 2000;
/// Waiting for deliveries ends after this long without a new one.
const QUIET: Duration = Duration::from_secs(10);
/// Pause after the joins, so the chat worker's view of the group can catch up.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Members of the group, the sender included; each holds one WebSocket.
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// Messages the sender posts.
    #[arg(long, default_value_t = 200)]
    pub messages: usize,
    /// Messages per second the sender posts.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Bytes per message body.
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
}

#[derive(Default)]
struct Shared {
    deliveries: AtomicU64,
    last_delivery: AtomicU32,
    out_of_order: AtomicU64,
    problems: Problems,
}

pub async fn run(ctx: &mut Ctx, args: &Args) -> anyhow::Result<Outcome> {
    let members = args.members.max(2);
    // The group first, so a mesh that refuses its size says so before members are made.
    let owner = ctx.pool.users(1).await?;
    ctx.pool.lift_quotas(&owner).await?;
    let group = ctx
        .api
        .create_open_group(
            &owner[0].token,
            &format!("loadgen fan-out {members}"),
            u32::try_from(members.max(DEFAULT_MAX_MEMBERS)).unwrap_or(u32::MAX),
        )
        .await
        .with_context(|| format!("creating a group for {members} members"))?;
    let users = ctx.pool.users(members).await?;
    let joined = Instant::now();
    let api = ctx.api.clone();
    stream::iter(&users[1..])
        .map(|user| {
            let api = api.clone();
            async move { api.join_group(&user.token, group).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .context("joining the group")?;
    eprintln!(
        "{} users joined group {group} in {:.1?}",
        members - 1,
        joined.elapsed()
    );
    tokio::time::sleep(SETTLE).await;

    let tokens: Vec<String> = users.iter().map(|u| u.token.clone()).collect();
    let (sockets, failures) = open_sockets(ctx.ws_url(), &tokens, Profile::Idle, 32).await;
    if let Some(failure) = failures.first() {
        anyhow::bail!(
            "{} of {members} sockets did not open, e.g. {failure}",
            failures.len()
        );
    }
    let timeline = Arc::new(Timeline::new());
    let shared = Arc::new(Shared::default());
    let stop = CancellationToken::new();
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    for socket in sockets.into_iter().flatten() {
        let (sink, stream) = socket.split();
        sinks.push(sink);
        readers.push(tokio::spawn(read_member(
            stream,
            timeline.clone(),
            shared.clone(),
            stop.clone(),
        )));
    }

    let conversation = format!("g:{group}");
    let text = body(args.body_bytes);
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let start = Instant::now() + Duration::from_millis(100);
    let first_send = timeline.at(start);
    eprintln!(
        "{members} members connected; posting {} messages at {}/s",
        args.messages, args.rate
    );
    sleep_until(start.into()).await;
    let window = Window::open(&ctx.procs);
    for k in 0..args.messages {
        sleep_until((start + period * k as u32).into()).await;
        let (index, client_id) = timeline.allocate();
        Slot::stamp(&timeline.slot(index).sent, timeline.now());
        let frame = ws::send_frame(&client_id, Target::Conversation(&conversation), &text);
        sinks[0].send(frame).await.context("sending to the group")?;
    }

    // Wait until every member has every stored message, or nothing arrives for a while.
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stored = timeline
            .slots()
            .filter(|s| s.stores.load(Ordering::Relaxed) > 0)
            .count();
        let answered = timeline
            .slots()
            .filter(|s| {
                s.stores.load(Ordering::Relaxed) > 0 || s.rejected.load(Ordering::Relaxed) > 0
            })
            .count();
        let count = shared.deliveries.load(Ordering::Relaxed);
        if answered == args.messages && count >= (stored * members) as u64 {
            break;
        }
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        } else if last_change.elapsed() > QUIET {
            break;
        }
    }
    let delivering = window.close(&ctx.procs);
    stop.cancel();
    let mut latencies = report::histogram();
    for reader in readers {
        latencies.add(reader.await?).ok();
    }
    futures::future::join_all(sinks.into_iter().map(ws::close)).await;

    let stored = timeline
        .slots()
        .filter(|s| s.stores.load(Ordering::Relaxed) > 0)
        .count();
    let rejected = timeline
        .slots()
        .filter(|s| s.rejected.load(Ordering::Relaxed) > 0)
        .count();
    let fully_delivered = timeline
        .slots()
        .filter(|s| s.deliveries.load(Ordering::Relaxed) as usize >= members)
        .count();
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let expected = (args.messages * members) as u64;
    let last = shared.last_delivery.load(Ordering::Relaxed);
    let span = f64::from(last.saturating_sub(first_send)) / 1e6;
    let rate = if span > 0.0 {
        deliveries as f64 / span
    } else {
        0.0
    };
    let fraction = if expected > 0 {
        deliveries as f64 / expected as f64
    } else {
        0.0
    };
    let latency = Latency::of(&latencies);

    let mut outcome = Outcome::new(
        "fanout",
        json!({
            "members": members,
            "messages": args.messages,
            "rate": args.rate,
            "body_bytes": args.body_bytes,
        }),
    );
    outcome.row("deliveries/s", thousands(rate));
    outcome.row(
        "delivered",
        format!(
            "{} of {} message frames ({:.2}%); {} of {} messages reached every member",
            thousands(deliveries as f64),
            thousands(expected as f64),
            fraction * 100.0,
            fully_delivered,
            args.messages
        ),
    );
    outcome.row(
        "stored / rejected",
        format!("{stored} / {rejected} of {}", args.messages),
    );
    outcome.row("first send → last delivery", format!("{span:.2} s"));
    outcome.row("send → delivered (each member)", latency.line());
    // The scenario's own CPU rows include joining and connecting; these cover only the
    // sending and delivering, to say whether the CPUs or something else paced it.
    outcome.row(
        &format!(
            "CPU ms per delivery while sending and delivering ({:.1} s)",
            delivering.seconds
        ),
        delivering.ms_per(deliveries, 4),
    );
    if let Some(busy) = delivering.busy_share() {
        outcome.row(
            "machine CPU busy while sending and delivering",
            format!("{:.0}%", busy * 100.0),
        );
    }
    let out_of_order = shared.out_of_order.load(Ordering::Relaxed);
    if out_of_order > 0 {
        outcome.problem(format!(
            "{out_of_order} times a member received a seq other than the previous one plus one"
        ));
    }
    if deliveries < expected {
        outcome.problem(format!(
            "{} message frames never arrived",
            thousands((expected - deliveries) as f64)
        ));
    }
    for problem in shared.problems.lines() {
        outcome.problem(problem);
    }
    if members == TARGET_MEMBERS {
        outcome.verdict(
            format!(
                "≥ {} deliveries/s into a {members}-member group",
                thousands(TARGET_DELIVERIES_PER_SEC)
            ),
            rate >= TARGET_DELIVERIES_PER_SEC,
        );
    }
    outcome.verdict("100% delivered", deliveries == expected);
    outcome.results = json!({
        "group_id": group,
        "deliveries_per_sec": rate.round(),
        "deliveries": deliveries,
        "expected": expected,
        "delivered_fraction": fraction,
        "messages_fully_delivered": fully_delivered,
        "stored": stored,
        "rejected": rejected,
        "seconds_first_send_to_last_delivery": span,
        "send_to_delivery": latency,
        "out_of_order": out_of_order,
        "delivering": {
            "seconds": delivering.seconds,
            "cpu_seconds": delivering.processes,
            "busy_share": delivering.busy_share(),
        },
    });
    outcome.work = Some(("delivery", deliveries));
    Ok(outcome)
}

/// Reads one member's socket: acks (the sender's) and the group's messages. Answers the
/// send-to-delivery times of the messages it received.
async fn read_member(
    mut stream: Stream,
    timeline: Arc<Timeline>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Histogram<u64> {
    let mut latencies = report::histogram();
    let mut last_seq: Option<i64> = None;
    while let Some(text) = ws::next_text(&mut stream, &stop, &shared.problems, "member").await {
        let Ok(frame) = Frame::parse(&text) else {
            shared
                .problems
                .add("undecodable frame", || text.to_string());
            continue;
        };
        let Some(index) = timeline.index_of(&frame.client_id) else {
            if frame.kind == "error" {
                shared.problems.add("error frame", || text.to_string());
            }
            continue;
        };
        let slot = timeline.slot(index);
        let now = timeline.now();
        match (frame.kind.as_ref(), frame.status.as_ref()) {
            ("message", _) => {
                slot.deliveries.fetch_add(1, Ordering::Relaxed);
                shared.deliveries.fetch_add(1, Ordering::Relaxed);
                shared.last_delivery.fetch_max(now, Ordering::Relaxed);
                if let Some(sent) = Slot::get(&slot.sent) {
                    latencies.saturating_record(u64::from(now.saturating_sub(sent)).max(1));
                }
                if let Some(seq) = frame.seq {
                    if last_seq.is_some_and(|last| seq != last + 1) {
                        shared.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    last_seq = Some(seq);
                }
            }
            ("ack", "accepted") => {
                Slot::stamp(&slot.accepted, now);
            }
            ("ack", "stored") => {
                Slot::stamp(&slot.stored, now);
                slot.stores.fetch_add(1, Ordering::Relaxed);
            }
            ("ack", "rejected") => {
                slot.rejected.fetch_add(1, Ordering::Relaxed);
                shared.problems.add("message rejected", || text.to_string());
            }
            _ => {}
        }
    }
    latencies
}
