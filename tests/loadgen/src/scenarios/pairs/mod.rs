//! The driver shared by `throughput` and `latency`: pairs of friends, each sender and each
//! recipient on its own WebSocket. Senders pipeline private messages to their partner, either
//! as fast as a window of unstored messages allows or at a fixed pace; readers stamp every
//! ack and delivery on the shared timeline. Afterwards the stored sequence numbers are checked.

mod integrity;
mod readers;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use integrity::{Integrity, describe, retry_after_summary};
use readers::{Permits, Resend, Shared, Slots, read_acks, read_deliveries};

use super::{Ctx, open_sockets};
use crate::report;
use crate::timeline::{Slot, Timeline};
use crate::users::User;
use crate::ws::{self, Profile, Sink, Target};

/// How long senders wait for the acks of what they sent after the measurement ends, unless
/// the plan says otherwise.
pub const DRAIN: Duration = Duration::from_secs(15);
/// How often the accepted-but-not-stored count is sampled.
const BACKLOG_SAMPLE: Duration = Duration::from_millis(100);
/// The pause before sending again a message refused without a `retry_after`.
const RESEND_BACKOFF: Duration = Duration::from_millis(50);
/// How long recipients may still be receiving after the last ack.
const DELIVERY_GRACE: Duration = Duration::from_secs(5);
/// Frames fed before the socket is flushed even when more could be sent.
const FLUSH_EVERY: usize = 32;

/// How senders decide when to send.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// As fast as possible with at most this many messages not yet stored (or rejected).
    Window(usize),
    /// `per_sender` messages per second each, with at most `max_in_flight` unstored.
    Rate {
        per_sender: f64,
        max_in_flight: usize,
    },
}

pub struct Plan {
    /// The scenario, naming its timeline file (`--timelines`).
    pub name: &'static str,
    pub pairs: usize,
    pub pacing: Pacing,
    pub warmup: Duration,
    pub measure: Duration,
    pub body: String,
    /// Send `service_unavailable` rejections again, in order, after their `retry_after` (as
    /// the client contract asks); otherwise they count as answered.
    pub resend: bool,
    /// How long to wait after the measurement for every message to be answered.
    pub drain: Duration,
    /// Most sends a sender keeps written but not yet answered (`accepted` or `rejected`);
    /// `None`: no limit but the unstored window of the pacing.
    pub unanswered: Option<usize>,
}

/// Everything a pairs run produced.
pub struct Run {
    pub timeline: Arc<Timeline>,
    /// The measurement window on the timeline, in microseconds.
    pub window: (u32, u32),
    pub sent: u64,
    pub stored: u64,
    pub rejected: u64,
    pub rejections: BTreeMap<String, u64>,
    /// Times a sender found its in-flight limit reached and had to wait.
    pub throttled: u64,
    pub integrity: Integrity,
    pub problems: Vec<String>,
    /// Messages that got an `accepted` ack.
    pub accepted: u64,
    /// Accepted but not yet stored (nor rejected), sampled over the run: (seconds since the
    /// start of sending, count).
    pub backlog: Vec<(f64, u64)>,
    /// `retry_after*` fields seen, by field: values in the order seen.
    pub retry_after: Vec<(String, f64)>,
    /// Error frames by code.
    pub error_codes: BTreeMap<String, u64>,
    /// Messages sent again after a `service_unavailable` rejection.
    pub resent: u64,
    /// How far the paced senders fell behind the offer's schedule, at most (zero for a window).
    pub behind_schedule: Duration,
}

impl Run {
    /// Messages whose `moment` falls inside the measurement window.
    pub fn count_in_window(&self, moment: impl Fn(&Slot) -> &AtomicU32) -> u64 {
        let (from, to) = self.window;
        self.timeline
            .slots()
            .filter_map(|slot| Slot::get(moment(slot)))
            .filter(|t| (from..to).contains(t))
            .count() as u64
    }

    /// Time from one moment to a later one of each message sent inside the window, in
    /// microseconds; answers the histogram and how many came out negative (clamped to 0).
    pub fn between(
        &self,
        from: impl Fn(&Slot) -> &AtomicU32,
        to: impl Fn(&Slot) -> &AtomicU32,
    ) -> (Histogram<u64>, u64) {
        self.between_where(from, to, |_| true)
    }

    /// `between`, over the messages `keep` keeps.
    pub fn between_where(
        &self,
        from: impl Fn(&Slot) -> &AtomicU32,
        to: impl Fn(&Slot) -> &AtomicU32,
        keep: impl Fn(&Slot) -> bool,
    ) -> (Histogram<u64>, u64) {
        let (start, end) = self.window;
        let mut histogram = report::histogram();
        let mut negative = 0;
        for slot in self.timeline.slots() {
            let in_window = Slot::get(&slot.sent).is_some_and(|t| (start..end).contains(&t));
            if let (true, Some(a), Some(b)) = (
                in_window && keep(slot),
                Slot::get(from(slot)),
                Slot::get(to(slot)),
            ) {
                if b < a {
                    negative += 1;
                }
                histogram.saturating_record(u64::from(b.saturating_sub(a)).max(1));
            }
        }
        (histogram, negative)
    }

    /// The most messages seen accepted but not yet stored at once.
    pub fn max_backlog(&self) -> u64 {
        self.backlog.iter().map(|(_, n)| *n).max().unwrap_or(0)
    }

    pub fn window_secs(&self) -> f64 {
        f64::from(self.window.1 - self.window.0) / 1e6
    }
}

/// The users of the pairs, befriended: sender `2i`, recipient `2i + 1`.
pub async fn pair_up(ctx: &mut Ctx, pairs: usize) -> anyhow::Result<Vec<(User, User)>> {
    let users = ctx.pool.users(pairs * 2).await?;
    ctx.pool.lift_quotas(&users).await?;
    let pairs: Vec<(User, User)> = users
        .chunks_exact(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    ctx.pool.befriend(&pairs).await?;
    Ok(pairs)
}

pub async fn run(ctx: &mut Ctx, plan: &Plan) -> anyhow::Result<Run> {
    let pairs = pair_up(ctx, plan.pairs).await?;
    let tokens: Vec<String> = pairs
        .iter()
        .flat_map(|(a, b)| [a.token.clone(), b.token.clone()])
        .collect();
    let (sockets, failures) = open_sockets(ctx.ws_url(), &tokens, Profile::Busy, 32).await;
    if let Some(failure) = failures.first() {
        anyhow::bail!(
            "{} of {} sockets did not open, e.g. {failure}",
            failures.len(),
            tokens.len()
        );
    }
    let mut sockets = sockets.into_iter().flatten();

    let timeline = Arc::new(Timeline::new());
    let shared = Arc::new(Shared::default());
    let stop_readers = CancellationToken::new();
    // Senders keep sending refused messages again until everything is answered.
    let drained = CancellationToken::new();
    let in_flight = match plan.pacing {
        Pacing::Window(n) => n,
        Pacing::Rate { max_in_flight, .. } => max_in_flight,
    }
    .max(1);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + plan.warmup + plan.measure;
    let mut senders = Vec::new();
    let mut recipients = Vec::new();
    let mut sender_readers = Vec::new();
    for (i, (_, recipient)) in pairs.iter().enumerate() {
        let (Some(out), Some(inbox)) = (sockets.next(), sockets.next()) else {
            anyhow::bail!("fewer sockets than users");
        };
        let permits = Arc::new(Permits::new(in_flight, plan.unanswered));
        let (sink, stream) = out.split();
        let (resend_tx, resend_rx) = mpsc::unbounded_channel();
        sender_readers.push(tokio::spawn(read_acks(
            stream,
            timeline.clone(),
            shared.clone(),
            permits.clone(),
            plan.resend.then_some(resend_tx),
            stop_readers.clone(),
        )));
        let (inbox_sink, inbox_stream) = inbox.split();
        recipients.push((
            inbox_sink,
            tokio::spawn(read_deliveries(
                inbox_stream,
                timeline.clone(),
                shared.clone(),
                stop_readers.clone(),
            )),
        ));
        // Paced senders start spread over one period, so the aggregate rate is smooth.
        let offset = match plan.pacing {
            Pacing::Rate { per_sender, .. } => {
                Duration::from_secs_f64(i as f64 / plan.pairs as f64 / per_sender.max(1e-9))
            }
            Pacing::Window(_) => Duration::ZERO,
        };
        senders.push(tokio::spawn(write_sends(
            sink,
            SendPlan {
                to: recipient.id,
                body: plan.body.clone(),
                pacing: plan.pacing,
                start: start + offset,
                end,
            },
            timeline.clone(),
            permits,
            resend_rx,
            drained.clone(),
        )));
    }
    eprintln!(
        "{} pairs connected; sending for {:.0?} ({:.0?} warm-up)",
        pairs.len(),
        plan.warmup + plan.measure,
        plan.warmup
    );

    let sampler = tokio::spawn(sample_backlog(shared.clone(), start, drained.clone()));
    sleep_until(end.into()).await;
    // Drain: every message stored or rejected, then every stored one delivered.
    let drained_by = Instant::now() + plan.drain;
    while shared.stored.load(Ordering::Relaxed) + shared.rejected.load(Ordering::Relaxed)
        < timeline.allocated()
        && Instant::now() < drained_by
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered_by = Instant::now() + DELIVERY_GRACE;
    while shared.delivered.load(Ordering::Relaxed) < shared.stored.load(Ordering::Relaxed)
        && Instant::now() < delivered_by
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drained.cancel();
    let backlog = sampler.await?;
    let mut sinks = Vec::new();
    let mut throttled = 0;
    let mut resent = 0;
    let mut behind_schedule = Duration::ZERO;
    for sender in senders {
        let (sink, stats) = sender.await?;
        throttled += stats.throttled;
        resent += stats.resent;
        behind_schedule = behind_schedule.max(stats.behind_schedule);
        sinks.push(sink);
    }
    let sent = timeline.allocated();
    stop_readers.cancel();
    let mut logs = Vec::new();
    for reader in sender_readers {
        logs.push(reader.await?);
    }
    let mut out_of_order = 0;
    for (sink, reader) in recipients {
        out_of_order += reader.await?;
        sinks.push(sink);
    }
    futures::future::join_all(sinks.into_iter().map(ws::close)).await;

    let measure_from = timeline.at(start + plan.warmup);
    let measure_to = timeline.at(end);
    let integrity = integrity::check(&timeline, &logs, out_of_order, &shared.problems);
    let rejections = shared.rejections.lock().expect("rejections lock").clone();
    if let Some(dir) = &ctx.timelines {
        write_timeline(dir, plan.name, &timeline)?;
    }
    Ok(Run {
        window: (measure_from, measure_to),
        sent,
        stored: shared.stored.load(Ordering::Relaxed),
        rejected: shared.rejected.load(Ordering::Relaxed),
        rejections,
        throttled,
        integrity,
        problems: shared.problems.lines(),
        accepted: shared.accepted.load(Ordering::Relaxed),
        backlog,
        retry_after: std::mem::take(&mut *shared.retry_after.lock().expect("retry_after lock")),
        error_codes: shared.error_codes.lock().expect("error codes lock").clone(),
        resent,
        behind_schedule,
        timeline,
    })
}

/// Writes a run's per-message moments to `<dir>/<name>.csv` (see `Timeline::write_csv`).
fn write_timeline(dir: &std::path::Path, name: &str, timeline: &Timeline) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.csv"));
    let file = std::fs::File::create(&path)
        .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", path.display()))?;
    timeline.write_csv(std::io::BufWriter::new(file))?;
    Ok(())
}

/// Samples what the mesh accepted but did not yet store, until `stop`.
async fn sample_backlog(
    shared: Arc<Shared>,
    start: Instant,
    stop: CancellationToken,
) -> Vec<(f64, u64)> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(BACKLOG_SAMPLE);
    loop {
        tokio::select! {
            () = stop.cancelled() => return samples,
            _ = tick.tick() => {}
        }
        let accepted = shared.accepted.load(Ordering::Relaxed);
        let settled = shared.settled.load(Ordering::Relaxed);
        let at = Instant::now()
            .saturating_duration_since(start)
            .as_secs_f64();
        samples.push((at, accepted.saturating_sub(settled)));
    }
}

struct SendPlan {
    to: Uuid,
    body: String,
    pacing: Pacing,
    start: Instant,
    end: Instant,
}

#[derive(Default)]
struct SendStats {
    throttled: u64,
    resent: u64,
    behind_schedule: Duration,
}

/// Takes an answer slot for one more send, waiting when none is free (`Slots`); what is
/// buffered is flushed before waiting so the mesh can answer it. False when the socket failed
/// or the sender was stopped first.
async fn answer_slot(sink: &mut Sink, slots: &mut Slots<'_>) -> bool {
    if slots.try_take() {
        return true;
    }
    sink.flush().await.is_ok() && slots.take().await
}

/// Sends again, in order, every refused message the reader handed back, after the longest
/// delay they asked for. False when the socket failed or `stop` came.
async fn send_again(
    sink: &mut Sink,
    queue: &mut VecDeque<Resend>,
    plan: &SendPlan,
    timeline: &Timeline,
    stats: &mut SendStats,
    slots: &mut Slots<'_>,
) -> bool {
    if queue.is_empty() {
        return true;
    }
    if sink.flush().await.is_err() {
        return false;
    }
    let wait = queue
        .iter()
        .filter_map(|(_, delay)| *delay)
        .max()
        .unwrap_or(RESEND_BACKOFF);
    tokio::time::sleep(wait).await;
    while let Some((index, _)) = queue.pop_front() {
        if !answer_slot(sink, slots).await {
            return false;
        }
        Slot::set(&timeline.slot(index).attempted, timeline.now());
        let frame = ws::send_frame(
            &timeline.client_id(index),
            Target::User(plan.to),
            &plan.body,
        );
        if sink.feed(frame).await.is_err() {
            return false;
        }
        stats.resent += 1;
    }
    sink.flush().await.is_ok()
}

/// Sends until `end`; each message takes a permit that its `stored` or `rejected` ack gives
/// back. Answers the sink, so the socket stays open until everything is drained.
async fn write_sends(
    mut sink: Sink,
    plan: SendPlan,
    timeline: Arc<Timeline>,
    permits: Arc<Permits>,
    mut resend: mpsc::UnboundedReceiver<Resend>,
    drained: CancellationToken,
) -> (Sink, SendStats) {
    let mut slots = Slots::new(&permits, &drained);
    let mut stats = SendStats::default();
    let mut queue: VecDeque<Resend> = VecDeque::new();
    let period = match plan.pacing {
        Pacing::Rate { per_sender, .. } => Some(Duration::from_secs_f64(1.0 / per_sender)),
        Pacing::Window(_) => None,
    };
    let mut unflushed = 0;
    let mut n: u32 = 0;
    sleep_until(plan.start.into()).await;
    loop {
        while let Ok(item) = resend.try_recv() {
            queue.push_back(item);
        }
        if !send_again(
            &mut sink, &mut queue, &plan, &timeline, &mut stats, &mut slots,
        )
        .await
        {
            break;
        }
        let now = Instant::now();
        if let Some(period) = period {
            let due = plan.start + period * n;
            if due >= plan.end {
                break;
            }
            if due > now {
                if sink.flush().await.is_err() {
                    break;
                }
                unflushed = 0;
                sleep_until(due.into()).await;
            }
        } else if now >= plan.end {
            break;
        }
        match permits.unstored.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                stats.throttled += 1;
                if sink.flush().await.is_err() {
                    break;
                }
                unflushed = 0;
                // Refused messages hold permits: send them again while waiting for one.
                let acquired = loop {
                    tokio::select! {
                        permit = timeout_at(plan.end.into(), permits.unstored.acquire()) => {
                            match permit {
                                Ok(Ok(permit)) => {
                                    permit.forget();
                                    break true;
                                }
                                _ => break false,
                            }
                        }
                        Some(item) = resend.recv() => {
                            queue.push_back(item);
                            if !send_again(&mut sink, &mut queue, &plan, &timeline, &mut stats, &mut slots).await {
                                break false;
                            }
                        }
                    }
                };
                if !acquired {
                    break;
                }
            }
        }
        let answered = tokio::select! {
            ok = answer_slot(&mut sink, &mut slots) => ok,
            () = sleep_until(plan.end.into()) => false,
        };
        if !answered {
            break;
        }
        if let Some(period) = period {
            let due = plan.start + period * n;
            stats.behind_schedule = stats
                .behind_schedule
                .max(Instant::now().saturating_duration_since(due));
        }
        let (index, client_id) = timeline.allocate();
        let (slot, now) = (timeline.slot(index), timeline.now());
        Slot::stamp(&slot.sent, now);
        Slot::set(&slot.attempted, now);
        let frame = ws::send_frame(&client_id, Target::User(plan.to), &plan.body);
        if sink.feed(frame).await.is_err() {
            break;
        }
        n += 1;
        unflushed += 1;
        if unflushed >= FLUSH_EVERY {
            if sink.flush().await.is_err() {
                break;
            }
            unflushed = 0;
        }
    }
    let _ = sink.flush().await;
    // Until everything is answered, refused messages are still sent again.
    loop {
        let item = tokio::select! {
            () = drained.cancelled() => break,
            item = resend.recv() => item,
        };
        let Some(item) = item else { break };
        queue.push_back(item);
        while let Ok(item) = resend.try_recv() {
            queue.push_back(item);
        }
        if !send_again(
            &mut sink, &mut queue, &plan, &timeline, &mut stats, &mut slots,
        )
        .await
        {
            break;
        }
    }
    (sink, stats)
}
