//! The least a stored, delivered message needs on this machine, at the latency target's rate:
//! publishers paced together publish each message into a JetStream file stream of the load
//! generator's own and wait for its ack (`accepted`); one consumer per CPU, each on its own
//! share of the partitions, takes whatever has arrived (waiting only for the first), stores it
//! in one Postgres transaction of the chat ingest's shape, publishes one core NATS message per stored message on the push subjects and then
//! acknowledges the batch; a subscriber takes them (`delivered`). No edge, no WebSocket, no
//! authorization, no fencing, no rounds: what is left is the bus, the disk and the database a
//! message cannot do without, so its accepted → delivered is the floor the mesh's `latency`
//! approaches at the same rate.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{self, AckKind};
use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

use serde_json::json;

use super::{Args, Limit, jetstream as raw_stream, postgres};
use crate::pace::Schedule;
use crate::raw_nats::{NatsAccess, RAW_PREFIX};
use crate::report::{self, Latency, Outcome, thousands};
use crate::scenarios::Ctx;

/// Most messages one store takes (the chat worker's round gathers up to 1,024).
const MOST_PER_STORE: usize = 1024;
/// How long the deliveries of what was accepted may take to arrive after the last send.
const DRAIN: Duration = Duration::from_secs(15);
/// Bytes that carry a message's publisher and number at the front of its payload.
const HEADER_BYTES: usize = 16;

pub struct Plan {
    pub database_url: String,
    pub publishers: usize,
    /// Store loops, each with a consumer on its share of the partitions.
    pub writers: usize,
    /// Messages a second, all publishers together.
    pub per_sec: f64,
    pub warmup: f64,
    pub seconds: f64,
    pub payload_bytes: usize,
    pub body_bytes: usize,
}

/// What the path did at the rate asked.
pub struct PathFigure {
    /// Messages accepted a second in the measured window.
    pub accepted_per_sec: f64,
    pub accept_to_delivery: Latency,
    /// Messages per store (one Postgres transaction each), on average.
    pub per_store: f64,
    /// Each store's transaction, begin to commit.
    pub store: Latency,
    /// Deliveries that arrived before their publisher read the ack (counted as 0 ms).
    pub before_ack: u64,
    /// Messages accepted but never delivered within the drain.
    pub undelivered: u64,
    pub failed: u64,
    pub samples: Vec<String>,
    /// Messages accepted in the measured window (the work unit).
    pub count: u64,
}

/// When each message was accepted, by number, until it is delivered.
#[derive(Default)]
struct Moments {
    accepted: HashMap<u64, Instant>,
    /// Delivered before its ack was read.
    early: HashMap<u64, Instant>,
}

/// A message's publisher and number, then filler up to `bytes`.
fn payload(publisher: u64, number: u64, bytes: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(bytes.max(HEADER_BYTES));
    out.put_u64(publisher);
    out.put_u64(number);
    out.resize(bytes.max(HEADER_BYTES), b'x');
    out.freeze()
}

/// The publisher and number at the front of a payload.
fn header(payload: &[u8]) -> Option<(u64, u64)> {
    let publisher = u64::from_be_bytes(payload.get(0..8)?.try_into().ok()?);
    let number = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((publisher, number))
}

/// Failures seen by any task, with the first few kept word for word.
#[derive(Default)]
struct Failures {
    count: AtomicU64,
    samples: std::sync::Mutex<Vec<String>>,
}

impl Failures {
    fn add(&self, what: &str, err: impl std::fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().expect("failure samples");
        if samples.len() < 3 {
            samples.push(format!("{what}: {err}"));
        }
    }
}

fn consumer_name(writer: usize) -> String {
    format!("{RAW_PREFIX}-path-{writer}")
}

/// One writer's store loop and what it needs.
struct Lane {
    pool: sqlx::PgPool,
    chat: async_nats::Client,
    conversations: Vec<String>,
    body: String,
    push_prefix: String,
    failures: Arc<Failures>,
    stop: tokio_util::sync::CancellationToken,
}

impl Lane {
    /// Stores, pushes and acknowledges batch after batch until stopped; answers each store's
    /// time, the batches and the messages stored.
    async fn run(self, mut messages: pull::Stream) -> (Histogram<u64>, u64, u64) {
        let mut stores = report::histogram();
        let (mut batches, mut stored) = (0u64, 0u64);
        let mut n = 0u64;
        loop {
            let first = tokio::select! {
                _ = self.stop.cancelled() => break,
                next = messages.next() => next,
            };
            let mut batch = match first {
                Some(Ok(message)) => vec![message],
                Some(Err(err)) => {
                    self.failures.add("reading", err);
                    continue;
                }
                None => break,
            };
            while batch.len() < MOST_PER_STORE {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(message),
                    Some(Some(Err(err))) => self.failures.add("reading", err),
                    _ => break,
                }
            }
            let carried: Vec<(u64, u64)> =
                batch.iter().filter_map(|m| header(&m.payload)).collect();
            let rows: Vec<usize> = carried
                .iter()
                .map(|(publisher, _)| *publisher as usize % self.conversations.len())
                .collect();
            let began = std::time::Instant::now();
            let result =
                postgres::store(&self.pool, &self.conversations, &rows, &self.body, &mut n).await;
            if let Err(err) = result {
                // Not acknowledged: JetStream delivers the batch again after its ack wait.
                self.failures.add("storing", err);
                continue;
            }
            let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
            stores.saturating_record(micros.max(1));
            batches += 1;
            stored += batch.len() as u64;
            for (publisher, number) in &carried {
                let subject = format!("{}.{publisher}", self.push_prefix);
                let number = Bytes::copy_from_slice(&number.to_be_bytes());
                if let Err(err) = self.chat.publish(subject, number).await {
                    self.failures.add("pushing", err);
                }
            }
            if let Some(last) = batch.last()
                && let Err(err) = last.ack_with(AckKind::Ack).await
            {
                self.failures.add("acknowledging", err);
            }
        }
        (stores, batches, stored)
    }
}

pub async fn measure(access: &NatsAccess, plan: &Plan) -> anyhow::Result<PathFigure> {
    let publishers = plan.publishers.max(1);
    raw_stream::fresh_stream(access).await?;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(plan.writers.max(1) + 1).unwrap_or(u32::MAX))
        .connect(&plan.database_url)
        .await
        .context("connecting to the bench database")?;
    postgres::prepare(&pool, publishers).await?;
    let conversations: Vec<String> = (1..=publishers).map(postgres::conversation).collect();

    // The consumer's messages are acknowledged on the connection that pulls them: the chat
    // role's, as in the mesh.
    let chat = access.connect("chat").await?;
    let stream = jetstream::new(chat.clone())
        .get_stream(raw_stream::stream_name())
        .await
        .context("binding to the raw stream as the chat role")?;
    let edge = access.connect("edge").await?;
    let push_prefix = format!("{RAW_PREFIX}.push.user");
    let mut pushes = edge.subscribe(format!("{push_prefix}.*")).await?;
    edge.flush().await?;

    let moments = Arc::new(std::sync::Mutex::new(Moments::default()));
    let failures = Arc::new(Failures::default());
    let stop = tokio_util::sync::CancellationToken::new();

    // The store loops, one per writer, each on the partitions of its own (so on conversations
    // of its own, as ingest partitions are): the first message waits, the rest of a batch is
    // what already arrived.
    let writers = plan.writers.clamp(1, raw_stream::PARTITIONS);
    let mut loops = Vec::with_capacity(writers);
    for writer in 0..writers {
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(consumer_name(writer)),
                filter_subjects: (0..raw_stream::PARTITIONS)
                    .filter(|p| p % writers == writer)
                    .map(|p| format!("{RAW_PREFIX}.chat.in.{p}"))
                    .collect(),
                ack_policy: AckPolicy::All,
                max_ack_pending: i64::try_from(MOST_PER_STORE * 4).unwrap_or(i64::MAX),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .context("creating the raw path's consumer")?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(MOST_PER_STORE)
            .messages()
            .await
            .context("reading the raw path's consumer")?;
        let lane = Lane {
            pool: pool.clone(),
            chat: chat.clone(),
            conversations: conversations.clone(),
            body: crate::scenarios::body(plan.body_bytes),
            push_prefix: push_prefix.clone(),
            failures: failures.clone(),
            stop: stop.clone(),
        };
        loops.push(tokio::spawn(lane.run(messages)));
    }

    // The recipient: how long from each accepted message's ack to its delivery.
    let measured_from = Arc::new(AtomicU64::new(u64::MAX));
    // How many messages arrived, watched by the drain at the end.
    let (delivered, mut arrivals) = tokio::sync::watch::channel(0u64);
    let receiver = tokio::spawn({
        let (moments, measured_from, delivered, stop) = (
            moments.clone(),
            measured_from.clone(),
            delivered,
            stop.clone(),
        );
        async move {
            let mut latencies: Histogram<u64> = report::histogram();
            let mut before_ack = 0u64;
            loop {
                let push = tokio::select! {
                    _ = stop.cancelled() => break,
                    push = pushes.next() => push,
                };
                let Some(push) = push else { break };
                let Some(number) = push
                    .payload
                    .get(0..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                else {
                    continue;
                };
                let now = Instant::now();
                let accepted = {
                    let mut moments = moments.lock().expect("moments");
                    match moments.accepted.remove(&number) {
                        Some(at) => Some(at),
                        None => {
                            moments.early.insert(number, now);
                            None
                        }
                    }
                };
                delivered.send_modify(|count| *count += 1);
                if number < measured_from.load(Ordering::Relaxed) {
                    continue;
                }
                match accepted {
                    Some(at) => {
                        let micros = u64::try_from((now - at).as_micros()).unwrap_or(u64::MAX);
                        latencies.saturating_record(micros.max(1));
                    }
                    None => {
                        before_ack += 1;
                        latencies.saturating_record(1);
                    }
                }
            }
            (latencies, before_ack)
        }
    });

    // The publishers, paced together; each keeps reading its acks while it waits for a slot.
    let schedule = Arc::new(Schedule::new(plan.per_sec));
    let numbers = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let accepted = Arc::new(AtomicU64::new(0));
    let js = jetstream::new(access.connect("edge").await?);
    let tasks: Vec<_> = (0..publishers as u64)
        .map(|p| {
            let (js, schedule, numbers, sending, accepted, moments, failures) = (
                js.clone(),
                schedule.clone(),
                numbers.clone(),
                sending.clone(),
                accepted.clone(),
                moments.clone(),
                failures.clone(),
            );
            let bytes = plan.payload_bytes;
            tokio::spawn(async move {
                let mut pending = FuturesUnordered::new();
                let mut due = schedule.take();
                loop {
                    let open = sending.load(Ordering::Relaxed);
                    if !open && pending.is_empty() {
                        break;
                    }
                    tokio::select! {
                        Some((number, ack)) = pending.next(), if !pending.is_empty() => {
                            match ack {
                                Ok(_) => {
                                    let now = Instant::now();
                                    accepted.fetch_add(1, Ordering::Relaxed);
                                    let mut moments = moments.lock().expect("moments");
                                    if moments.early.remove(&number).is_none() {
                                        moments.accepted.insert(number, now);
                                    }
                                }
                                Err(err) => failures.add("publishing", err),
                            }
                        }
                        _ = tokio::time::sleep_until(due), if open => {
                            due = schedule.take();
                            let number = numbers.fetch_add(1, Ordering::Relaxed);
                            let subject = format!("{RAW_PREFIX}.chat.in.{}", p % raw_stream::PARTITIONS as u64);
                            let publish = jetstream::message::PublishMessage::build()
                                .message_id(format!("path-{number}"))
                                .payload(payload(p, number, bytes));
                            match js.send_publish(subject, publish).await {
                                Ok(ack) => pending.push(async move { (number, ack.await) }),
                                Err(err) => failures.add("publishing", err),
                            }
                        }
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(crate::scenarios::secs(plan.warmup)).await;
    let first = numbers.load(Ordering::Relaxed);
    measured_from.store(first, Ordering::Relaxed);
    let accepted_before = accepted.load(Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(crate::scenarios::secs(plan.seconds.max(1.0))).await;
    let accepted_in_window = accepted.load(Ordering::Relaxed) - accepted_before;
    let window_secs = window.elapsed().as_secs_f64();
    sending.store(false, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let total = accepted.load(Ordering::Relaxed);
    // Until every accepted message arrived, or the drain's time is up.
    let _ = tokio::time::timeout(DRAIN, arrivals.wait_for(|count| *count >= total)).await;
    stop.cancel();
    let mut stores = report::histogram();
    let (mut batches, mut stored) = (0u64, 0u64);
    for lane in loops {
        let (times, lane_batches, lane_stored) = lane.await?;
        stores.add(times).ok();
        batches += lane_batches;
        stored += lane_stored;
    }
    let store = Latency::of(&stores);
    let (latencies, before_ack) = receiver.await?;
    let undelivered = total.saturating_sub(*arrivals.borrow());
    for writer in 0..writers {
        let _ = stream.delete_consumer(&consumer_name(writer)).await;
    }
    raw_stream::remove_stream(access).await;
    postgres::clear(&pool).await;
    let failures = Arc::try_unwrap(failures).unwrap_or_default();
    Ok(PathFigure {
        accepted_per_sec: accepted_in_window as f64 / window_secs,
        accept_to_delivery: Latency::of(&latencies),
        per_store: if batches == 0 {
            0.0
        } else {
            stored as f64 / batches as f64
        },
        store,
        before_ack,
        undelivered,
        failed: failures.count.into_inner(),
        samples: failures.samples.into_inner().unwrap_or_default(),
        count: accepted_in_window,
    })
}

/// The floor `latency` is set beside: p99 accepted → delivered of the raw path at a rate.
#[derive(Debug, Clone, Copy)]
pub struct PathFloor {
    pub rate: f64,
    pub p99_ms: f64,
    pub p50_ms: f64,
    /// Whether the path kept to the rate and delivered everything it accepted.
    pub kept_up: bool,
    /// Share of every CPU busy meanwhile, once measured.
    pub busy_share: Option<f64>,
    /// When the path ran twice at this rate: the p99 of the run not kept (`better`).
    pub other_p99_ms: Option<f64>,
    /// Whether this is the run measured last, whose CPU figures are still to come.
    pub just_measured: bool,
}

impl PathFloor {
    /// Whether this floor alone puts the latency target out of reach: the raw path fell
    /// behind the rate, or its own p99 missed the target.
    pub fn rules_out(&self) -> bool {
        !self.kept_up || self.p99_ms >= crate::scenarios::latency::TARGET_P99_MS
    }

    /// Of this run and a `later` one at the same rate, the one that allows more: one that
    /// kept up before one that did not, then the lower p99. A floor is what the machine
    /// allows at best, and a single run's p99 swings with the host from one run to the next.
    pub fn better(self, later: PathFloor) -> PathFloor {
        let key = |f: &PathFloor| (!f.kept_up, f.p99_ms);
        let later_wins = key(&later).partial_cmp(&key(&self)) == Some(std::cmp::Ordering::Less);
        let (kept, dropped) = if later_wins {
            (later, self)
        } else {
            (self, later)
        };
        PathFloor {
            other_p99_ms: Some(dropped.p99_ms),
            just_measured: later_wins,
            ..kept
        }
    }
}

/// Runs the raw message path at `rate` (the latency target's) and keeps its floor.
pub async fn run(
    ctx: &mut Ctx,
    args: &Args,
    nats: &NatsAccess,
    rate: f64,
) -> anyhow::Result<Outcome> {
    let url = ctx
        .database_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no --database-url"))?;
    let plan = Plan {
        database_url: url,
        publishers: args.publishers,
        writers: crate::procs::cpus(),
        per_sec: rate,
        warmup: 2.0,
        seconds: args.seconds.max(5.0),
        payload_bytes: args.payload_bytes,
        body_bytes: 64,
    };
    let path = measure(nats, &plan).await?;
    let mut outcome = Outcome::new(
        Limit::MessagePath.name(),
        json!({
            "limit": "a message's raw path (JetStream, Postgres, NATS) at the latency rate",
            "rate": rate,
            "publishers": plan.publishers,
            "seconds": plan.seconds,
        }),
    );
    outcome.row(
        "accepted msg/s",
        format!(
            "{} (asked {})",
            thousands(path.accepted_per_sec),
            thousands(rate)
        ),
    );
    outcome.row("accepted → delivered", path.accept_to_delivery.line());
    outcome.row(
        "how",
        format!(
            "{} publishers paced together, {} B payloads into a file stream; {} consumers (one \
             per CPU) on their own partitions, each storing what has arrived (on average {:.0} \
             messages) per Postgres transaction, one core NATS push per message, then one ack",
            plan.publishers, plan.payload_bytes, plan.writers, path.per_store
        ),
    );
    outcome.row("store transaction", path.store.line());
    let kept_up = path.accepted_per_sec >= rate * 0.95 && path.undelivered == 0;
    if path.accepted_per_sec < rate * 0.95 {
        outcome.problem(format!(
            "the senders reached only {} of the asked {} msg/s",
            thousands(path.accepted_per_sec),
            thousands(rate)
        ));
    }
    if path.undelivered > 0 {
        outcome.problem(format!(
            "{} accepted messages were not delivered within {DRAIN:?}",
            path.undelivered
        ));
    }
    if path.failed > 0 {
        outcome.problem(format!(
            "{} operations failed (first: {})",
            path.failed,
            path.samples.join("; ")
        ));
    }
    outcome.work = Some(("message", path.count));
    outcome.results = json!({
        "asked_per_sec": rate,
        "accepted_per_sec": path.accepted_per_sec.round(),
        "accept_to_delivery": path.accept_to_delivery,
        "store": path.store,
        "per_store": (path.per_store * 10.0).round() / 10.0,
        "delivered_before_ack_read": path.before_ack,
        "undelivered": path.undelivered,
        "failed": path.failed,
        "kept_up": kept_up,
    });
    let floor = PathFloor {
        rate,
        p99_ms: path.accept_to_delivery.p99_ms,
        p50_ms: path.accept_to_delivery.p50_ms,
        kept_up,
        busy_share: None,
        other_p99_ms: None,
        just_measured: true,
    };
    ctx.limits.message_path = Some(match ctx.limits.message_path.take() {
        Some(earlier) if earlier.rate == rate => earlier.better(floor),
        _ => floor,
    });
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_its_publisher_and_number() {
        let bytes = payload(7, 123_456, 256);
        assert_eq!(bytes.len(), 256);
        assert_eq!(header(&bytes), Some((7, 123_456)));
        assert_eq!(
            payload(1, 2, 4).len(),
            HEADER_BYTES,
            "never shorter than the header"
        );
        assert_eq!(header(b"short"), None);
    }
}
