//! The steps of one ingest round (the batches of one or more partitions taken together), in
//! order: read, set the unreadable aside, authorize (membership decides, once per poster),
//! store (in one transaction that checks every partition's fence and records how far each
//! reaches; halving around a message the store refuses), deliver, record apart what was not
//! stored whole, answer refusals, acknowledge. Nothing is acknowledged before it is stored or
//! refused; a step that fails for a transient reason is retried; a partition fenced out, or
//! handed over while a step is retried, leaves the round before anything of it is recorded
//! or acknowledged; a round stopped by shutdown returns before acknowledging.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use mesh_contracts::ErrorCode;
use mesh_contracts::chat::{ConversationId, SendAck, ServerFrame, ingest_lines};
use mesh_nats::Delivery;
use mesh_observability::metrics::{
    CHAT_ACCEPT_TO_STORE, CHAT_BATCH_SIZE, CHAT_DEAD_LETTERS, CHAT_DUPLICATES, CHAT_REDELIVERIES,
    CHAT_REJECTED, CHAT_ROUND_STEP, CHAT_STORED,
};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::ahead::{self, Ahead};
use super::audiences::Audiences;
use super::batch::{Batch, Poster};
use super::setback::{Halt, Setback};
use crate::domain::inbound::Valid;
use crate::push::RoundPushes;
use crate::state::State;
use crate::store::messages::{self, NewMessage, Outcome};
use crate::store::partitions::{self, Advance, AllFenced, Fence};

/// The name ingest dead letters are kept under in `chat.dead_letters`.
const DEAD_LETTER_CONSUMER: &str = "ingest";

/// One partition's batch in a round.
pub struct Lot {
    pub fence: Fence,
    pub deliveries: Vec<Delivery>,
    /// Cancelled when its owner is told to stop (the partition handed over).
    pub stop: CancellationToken,
}

/// Takes a round's lots through every step together; one verdict per lot, in order: true when
/// its batch was decided and acknowledged, false when stopped first or when a later owner
/// claimed its partition (the next owner redoes what this one did not record). A lot fenced
/// out, or whose owner was told to stop while a step was being retried, is dropped and the
/// round is taken again without it; the worker shutting down ends the round.
pub async fn process(state: &State, lots: Vec<Lot>, stop: &CancellationToken) -> Vec<bool> {
    let redelivered = lots
        .iter()
        .flat_map(|lot| &lot.deliveries)
        .filter(|d| d.delivered > 1)
        .count();
    CHAT_REDELIVERIES.inc_by(redelivered as u64);
    let mut verdicts = vec![false; lots.len()];
    let mut round = Round::new(lots.into_iter().enumerate().collect());
    // Unreadable messages already set aside, by stream sequence and line: a round taken again
    // does not write their dead letters twice.
    let mut set_aside = HashSet::new();
    while !round.parts.is_empty() {
        let span = mesh_nats::ingest_batch_span(&round.deliveries);
        match attempt(state, &round, &mut set_aside, stop)
            .instrument(span)
            .await
        {
            Attempt::Decided(decided) => {
                for (part, current) in round.parts.iter().zip(decided) {
                    verdicts[part.lot] = current;
                }
                break;
            }
            Attempt::Halted(Halt::Shutdown) => break,
            Attempt::Halted(Halt::Released(released)) => {
                for fence in &released {
                    tracing::info!(
                        partition = fence.partition,
                        "partition handed over while its batch was retried; batch left to the next owner"
                    );
                }
                round = round.without(&released);
            }
            Attempt::FencedOut(stale) => {
                stale.iter().copied().for_each(fenced_out);
                round = round.without(&stale);
            }
        }
    }
    verdicts
}

/// The lots of a round laid end to end: the steps read one batch, each lot keeps its range.
struct Round {
    deliveries: Vec<Delivery>,
    parts: Vec<Part>,
}

/// One lot of a round: its position among the round's lots, its fence, its deliveries and its
/// owner's stop.
struct Part {
    lot: usize,
    fence: Fence,
    range: Range<usize>,
    stop: CancellationToken,
}

impl Round {
    fn new(lots: Vec<(usize, Lot)>) -> Self {
        let mut deliveries = Vec::new();
        let mut parts = Vec::with_capacity(lots.len());
        for (lot, own) in lots {
            let start = deliveries.len();
            deliveries.extend(own.deliveries);
            parts.push(Part {
                lot,
                fence: own.fence,
                range: start..deliveries.len(),
                stop: own.stop,
            });
        }
        Self { deliveries, parts }
    }

    /// The round without the lots of `dropped` fences.
    fn without(self, dropped: &[Fence]) -> Self {
        let mut deliveries = self.deliveries.into_iter();
        let mut kept = Vec::with_capacity(self.parts.len());
        for part in self.parts {
            let own: Vec<Delivery> = deliveries.by_ref().take(part.range.len()).collect();
            if !dropped.contains(&part.fence) {
                kept.push((
                    part.lot,
                    Lot {
                        fence: part.fence,
                        deliveries: own,
                        stop: part.stop,
                    },
                ));
            }
        }
        Self::new(kept)
    }

    /// The last delivery of each lot (acknowledging it acknowledges the lot).
    fn lasts(&self) -> Vec<&Delivery> {
        self.parts
            .iter()
            .filter_map(|part| self.deliveries[part.range.clone()].last())
            .collect()
    }

    /// Each lot's partition and its owner's stop.
    fn owners(&self) -> Vec<(Fence, &CancellationToken)> {
        self.parts
            .iter()
            .map(|part| (part.fence, &part.stop))
            .collect()
    }

    /// Each lot's fence with the stream sequence its batch reaches.
    fn advances(&self) -> Vec<Advance> {
        self.parts
            .iter()
            .map(|part| Advance {
                fence: part.fence,
                through: self.deliveries[part.range.clone()]
                    .last()
                    .map(|d| d.stream_seq),
            })
            .collect()
    }
}

/// One chat message of a round: a line of one of its ingest messages.
struct Line<'a> {
    /// The delivery (ingest message) it came in, by position in the round.
    delivery: usize,
    /// Its line in that ingest message.
    number: usize,
    payload: &'a [u8],
}

/// The round's chat messages in stream order, each line of each ingest message.
fn lines_of(deliveries: &[Delivery]) -> Vec<Line<'_>> {
    deliveries
        .iter()
        .enumerate()
        .flat_map(|(delivery, d)| {
            ingest_lines(&d.payload)
                .enumerate()
                .map(move |(number, payload)| Line {
                    delivery,
                    number,
                    payload,
                })
        })
        .collect()
}

/// The positions of the lines that came in the deliveries of `deliveries` (a lot's range).
fn lines_in(lines: &[Line<'_>], deliveries: Range<usize>) -> Range<usize> {
    let start = lines.partition_point(|line| line.delivery < deliveries.start);
    let end = lines.partition_point(|line| line.delivery < deliveries.end);
    start..end
}

/// How one attempt at a round ended.
enum Attempt {
    /// Every message decided; per lot, whether its partition was still ours when recorded
    /// (and the lot acknowledged).
    Decided(Vec<bool>),
    /// A step's retries were given up (`Halt` says why) before anything was recorded.
    Halted(Halt),
    /// Later owners claimed these partitions before anything was stored.
    FencedOut(Vec<Fence>),
}

async fn attempt(
    state: &State,
    round: &Round,
    set_aside: &mut HashSet<(u64, usize)>,
    stop: &CancellationToken,
) -> Attempt {
    let deliveries = &round.deliveries;
    let mut setback = Setback::new(stop, round.owners(), round.lasts());
    let lines = lines_of(deliveries);
    let mut batch = Batch::read(lines.iter().map(|line| line.payload));
    // Every step up to the store is retried or given up before anything is recorded; after a
    // store that recorded the round, nothing waits any more.
    let mut clock = StepClock::start();
    if !set_aside_unreadable(state, &batch, &lines, deliveries, set_aside, &mut setback).await {
        return Attempt::Halted(setback.halt());
    }
    let advances = round.advances();
    let (audiences, stored) =
        match authorize_and_store(state, &advances, &mut batch, &mut setback, &mut clock).await {
            Step::Done(decided) => decided,
            Step::Stopped => return Attempt::Halted(setback.halt()),
            Step::FencedOut(stale) => return Attempt::FencedOut(stale),
        };
    let decided = deliver(
        state,
        &mut batch,
        &stored,
        &lines,
        deliveries,
        &audiences,
        &mut setback,
    )
    .await;
    if !decided {
        return Attempt::Halted(setback.halt());
    }
    clock.lap("deliver");
    // Stored whole, the round's transaction recorded each lot's position already; otherwise
    // (nothing to store, or stored piece by piece) record them now, all in one transaction,
    // once every message is decided and before any refusal is answered or anything
    // acknowledged. A lot fenced out here is neither answered nor acknowledged.
    let stale = if stored.recorded_apart {
        match record(state, &advances, &mut setback).await {
            Some(stale) => stale,
            None => return Attempt::Halted(setback.halt()),
        }
    } else {
        Vec::new()
    };
    let current: Vec<bool> = round
        .parts
        .iter()
        .map(|part| !stale.contains(&part.fence))
        .collect();
    let answered: Vec<Range<usize>> = round
        .parts
        .iter()
        .zip(&current)
        .filter(|(_, current)| **current)
        .map(|(part, _)| part.range.clone())
        .collect();
    let answered_lines: Vec<Range<usize>> = answered
        .iter()
        .map(|range| lines_in(&lines, range.clone()))
        .collect();
    answer_refusals(state, &batch, &answered_lines).await;
    for range in answered {
        acknowledge(&deliveries[range]).await;
    }
    clock.lap("acknowledge");
    clock.finish();
    Attempt::Decided(current)
}

/// Times the steps of one attempt into `mesh_chat_round_step_seconds`. An attempt that ends
/// early (halted while retrying, or fenced out) records the step it was in as `unfinished`.
struct StepClock {
    last: Instant,
    finished: bool,
}

impl StepClock {
    fn start() -> Self {
        Self {
            last: Instant::now(),
            finished: false,
        }
    }

    /// Records the time since the previous lap as `step`'s.
    fn lap(&mut self, step: &str) {
        let now = Instant::now();
        CHAT_ROUND_STEP
            .with_label_values(&[step])
            .observe(now.duration_since(self.last).as_secs_f64());
        self.last = now;
    }

    /// Every step was recorded.
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StepClock {
    fn drop(&mut self) {
        if !self.finished {
            self.lap("unfinished");
        }
    }
}

/// How a step that may be fenced out ended.
enum Step<T> {
    Done(T),
    /// Stopped before it took effect.
    Stopped,
    /// Later owners claimed these partitions: it took no effect.
    FencedOut(Vec<Fence>),
}

/// Keeps each line that is not a chat message as a dead letter (once per round: `done`
/// holds the stream sequences and lines already set aside).
async fn set_aside_unreadable(
    state: &State,
    batch: &Batch,
    lines: &[Line<'_>],
    deliveries: &[Delivery],
    done: &mut HashSet<(u64, usize)>,
    setback: &mut Setback<'_>,
) -> bool {
    for index in batch.unreadable() {
        let line = &lines[index];
        let key = (deliveries[line.delivery].stream_seq, line.number);
        if done.contains(&key) {
            continue;
        }
        let unreadable = SetAside {
            payload: line.payload,
            stream_seq: key.0,
            line: key.1,
            reason: "unreadable",
            error: "not a chat message",
        };
        if !set_aside(state, unreadable, setback).await {
            return false;
        }
        done.insert(key);
    }
    true
}

/// Decides who may post and stores what they may: side by side when the round may be stored
/// ahead of its authorization (`ahead`), else one after the other.
async fn authorize_and_store(
    state: &State,
    advances: &[Advance],
    batch: &mut Batch,
    setback: &mut Setback<'_>,
    clock: &mut StepClock,
) -> Step<(Audiences, Stored)> {
    let mut asked = false;
    let posters = batch.posters();
    if ahead::worth_trying(&posters) {
        let tried = ahead::store(state, advances, batch, posters.clone()).await;
        clock.lap("store_ahead");
        match tried {
            Ahead::Stored(AllFenced::Current(outcomes), positions) => {
                CHAT_BATCH_SIZE.observe(outcomes.len() as f64);
                let stored = Stored {
                    results: outcomes.into_iter().map(Ok).collect(),
                    positions,
                    recorded_apart: false,
                };
                // Only private conversations are stored ahead: no roster decides who receives.
                return Step::Done((Audiences::default(), stored));
            }
            Ahead::Stored(AllFenced::Stale(stale), _) => return Step::FencedOut(stale),
            Ahead::NotStored { asked: answered } => asked = answered,
        }
    }
    let audiences = if asked {
        Audiences::default()
    } else {
        // Unchanged since `posters` was read: social's verdicts were not applied.
        let Some(audiences) = authorize(state, batch, posters, setback).await else {
            return Step::Stopped;
        };
        clock.lap("authorize");
        audiences
    };
    match store(state, advances, batch, &audiences, setback).await {
        Step::Done(stored) => {
            clock.lap("store");
            Step::Done((audiences, stored))
        }
        Step::Stopped => Step::Stopped,
        Step::FencedOut(stale) => Step::FencedOut(stale),
    }
}

/// Refuses what its poster may not post (`posters`: the batch's, as read), as membership
/// decides; retried while social cannot answer (never refused for that). The audiences of the groups decided (from the rosters
/// asked); `None` when stopped first.
async fn authorize(
    state: &State,
    batch: &mut Batch,
    posters: Vec<Poster>,
    setback: &mut Setback<'_>,
) -> Option<Audiences> {
    if posters.is_empty() {
        return Some(Audiences::default());
    }
    let open = state.config().open_private;
    loop {
        let now = OffsetDateTime::now_utc();
        match state
            .membership()
            .authorize_batch(posters.clone(), open, now)
            .await
        {
            Ok(decided) => {
                batch.apply(&decided.verdicts);
                return Some(Audiences::known(decided.audiences));
            }
            Err(err) => {
                if !setback.wait(&err).await {
                    return None;
                }
            }
        }
    }
}

/// What the store step decided: one result per message to store, at these batch positions.
struct Stored {
    results: Vec<Result<Outcome, String>>,
    positions: Vec<usize>,
    /// The batch's stream position still needs recording (not stored whole in one
    /// transaction).
    recorded_apart: bool,
}

/// Stores the ready messages in one transaction that checks every lot's fence and records
/// how far each lot reaches; around a message the store refuses, in pieces.
async fn store(
    state: &State,
    advances: &[Advance],
    batch: &Batch,
    audiences: &Audiences,
    setback: &mut Setback<'_>,
) -> Step<Stored> {
    let (new, positions) = batch.to_store();
    CHAT_BATCH_SIZE.observe(new.len() as f64);
    if new.is_empty() {
        return Step::Done(Stored {
            results: Vec::new(),
            positions,
            recorded_apart: true,
        });
    }
    let members = state.rosters.to_sync(&audiences.of_groups(&new)).await;
    let checks: Vec<Advance> = advances
        .iter()
        .map(|advance| Advance {
            through: None,
            ..*advance
        })
        .collect();
    let whole = Piece {
        advances,
        checks: &checks,
        messages: &new,
    };
    let results = match store_isolating(state, whole, &members, setback).await {
        Step::Done(results) => results,
        Step::Stopped => return Step::Stopped,
        Step::FencedOut(stale) => return Step::FencedOut(stale),
    };
    state.rosters.synced(&members).await;
    let recorded_apart = results.iter().any(Result::is_err);
    Step::Done(Stored {
        results,
        positions,
        recorded_apart,
    })
}

/// Messages stored in one transaction, with the fences it checks and the positions it records
/// (`checks`, the same fences recording nothing, for the pieces of a split round: the round is
/// recorded once all of it is decided).
#[derive(Clone, Copy)]
struct Piece<'a> {
    advances: &'a [Advance],
    checks: &'a [Advance],
    messages: &'a [NewMessage],
}

/// Stores `piece` in order. A failure that is not transient (the data itself is refused:
/// a constraint, an encoding error) is narrowed down by halving the batch until the message
/// that causes it stands alone; that message's result is its error, and every other message
/// is stored in its order. Transient failures (lock or statement timeouts included) are
/// retried.
async fn store_isolating(
    state: &State,
    piece: Piece<'_>,
    members: &HashMap<ConversationId, Vec<Uuid>>,
    setback: &mut Setback<'_>,
) -> Step<Vec<Result<Outcome, String>>> {
    let messages = piece.messages;
    let err = loop {
        let stored = messages::store_batch(state.pool(), piece.advances, messages, members).await;
        match stored {
            Ok(AllFenced::Current(outcomes)) => {
                return Step::Done(outcomes.into_iter().map(Ok).collect());
            }
            Ok(AllFenced::Stale(stale)) => return Step::FencedOut(stale),
            Err(err) if mesh_service_kit::is_permanent(&err) => break err,
            Err(err) => {
                if !setback.wait(&err).await {
                    return Step::Stopped;
                }
            }
        }
    };
    if messages.len() == 1 {
        return Step::Done(vec![Err(err.to_string())]);
    }
    let (left, right) = messages.split_at(messages.len() / 2);
    let half = |messages| Piece {
        advances: piece.checks,
        checks: piece.checks,
        messages,
    };
    let mut results = match Box::pin(store_isolating(state, half(left), members, setback)).await {
        Step::Done(results) => results,
        other => return other,
    };
    match Box::pin(store_isolating(state, half(right), members, setback)).await {
        Step::Done(right) => results.extend(right),
        other => return other,
    }
    Step::Done(results)
}

/// Pushes each stored message and its ack (all of the round's pushes together, once every
/// message is decided); sets a message the store refused aside and refuses it
/// (`unstorable`). False when stopped first (what was decided before is still pushed).
async fn deliver(
    state: &State,
    batch: &mut Batch,
    stored: &Stored,
    lines: &[Line<'_>],
    deliveries: &[Delivery],
    audiences: &Audiences,
    setback: &mut Setback<'_>,
) -> bool {
    let now_ms = i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX);
    let mut pushes = RoundPushes::default();
    let mut decided = true;
    for (result, &index) in stored.results.iter().zip(&stored.positions) {
        match result {
            Ok(outcome) => {
                if let Some(valid) = batch.valid(index) {
                    let audience = match outcome {
                        Outcome::Stored(_) => audiences.of(valid.conversation),
                        _ => None,
                    };
                    deliver_one(valid, outcome, now_ms, audience.as_ref(), &mut pushes);
                }
            }
            Err(error) => {
                let line = &lines[index];
                let unstorable = SetAside {
                    payload: line.payload,
                    stream_seq: deliveries[line.delivery].stream_seq,
                    line: line.number,
                    reason: "unstorable",
                    error,
                };
                if !set_aside(state, unstorable, setback).await {
                    decided = false;
                    break;
                }
                batch.refuse(index, ErrorCode::Unstorable);
            }
        }
    }
    pushes.send(state.pusher()).await;
    decided
}

/// Adds to the round's pushes what `outcome` tells: a stored message for its `audience` with
/// the `stored` ack for its sender, or the sender's ack alone.
fn deliver_one(
    valid: &Valid,
    outcome: &Outcome,
    now_ms: i64,
    audience: Option<&Arc<[Uuid]>>,
    pushes: &mut RoundPushes,
) {
    let sender = valid.inbound.sender_id;
    match outcome {
        Outcome::Stored(message) => {
            let kind = match valid.conversation {
                ConversationId::Private(..) => "private",
                ConversationId::Group(_) => "group",
            };
            CHAT_STORED.with_label_values(&[kind]).inc();
            let waited = (now_ms - valid.inbound.accepted_at_ms).max(0) as f64 / 1000.0;
            CHAT_ACCEPT_TO_STORE.observe(waited);
            let ack = ServerFrame::Ack(SendAck::stored(message));
            let frame = ServerFrame::Message(message.clone());
            pushes.stored(valid.conversation, sender, &ack, audience, &frame);
        }
        Outcome::Duplicate(message) => {
            CHAT_DUPLICATES.with_label_values(&["store"]).inc();
            pushes.one(sender, &ServerFrame::Ack(SendAck::stored(message)));
        }
        Outcome::OverQuota => {
            let code = ErrorCode::QuotaExceeded;
            CHAT_REJECTED.with_label_values(&[code.as_str()]).inc();
            let ack = SendAck::rejected(
                valid.inbound.client_id.clone(),
                Some(valid.inbound.conversation_id.clone()),
                code,
            );
            pushes.one(sender, &ServerFrame::Ack(ack));
        }
    }
}

/// Records every lot of `advances` as decided, in one transaction (retrying transient
/// failures); a lot whose partition a later owner took is left out, and the rest recorded
/// without it. The fences left out; `None` when stopped first.
async fn record(
    state: &State,
    advances: &[Advance],
    setback: &mut Setback<'_>,
) -> Option<Vec<Fence>> {
    let mut left: Vec<Advance> = advances.to_vec();
    let mut stale_all = Vec::new();
    while !left.is_empty() {
        match partitions::record_all(state.pool(), &left).await {
            Ok(stale) if stale.is_empty() => break,
            Ok(stale) => {
                stale.iter().copied().for_each(fenced_out);
                left.retain(|advance| !stale.contains(&advance.fence));
                stale_all.extend(stale);
            }
            Err(err) => {
                if !setback.wait(&err).await {
                    return None;
                }
            }
        }
    }
    Some(stale_all)
}

/// Tells each refused message's sender why: those at positions inside `ranges`.
async fn answer_refusals(state: &State, batch: &Batch, ranges: &[Range<usize>]) {
    for (at, sender, code, ack) in batch.refusals() {
        if !ranges.iter().any(|range| range.contains(&at)) {
            continue;
        }
        CHAT_REJECTED.with_label_values(&[code.as_str()]).inc();
        state
            .pusher()
            .send_one(sender, &ServerFrame::Ack(ack))
            .await;
    }
}

/// Acknowledges a lot (its last message: the consumer acknowledges all before it).
async fn acknowledge(deliveries: &[Delivery]) {
    if let Some(last) = deliveries.last()
        && let Err(err) = last.ack().await
    {
        // Not fatal: the messages are stored; a redelivery is recognised as a resend.
        tracing::warn!(error = %err, "ack after store failed");
    }
}

/// A later owner claimed the partition: this one stops without storing or acknowledging.
fn fenced_out(fence: Fence) {
    tracing::warn!(
        partition = fence.partition,
        epoch = fence.epoch,
        "partition fenced out by a later owner; stopping"
    );
}

/// A message that cannot be handled, and why.
struct SetAside<'a> {
    payload: &'a [u8],
    /// The ingest message it came in, and its line there.
    stream_seq: u64,
    line: usize,
    reason: &'static str,
    error: &'a str,
}

/// Keeps a message that cannot be handled in `chat.dead_letters` (retrying while Postgres is
/// unreachable), counts and logs it. False when stopped first.
async fn set_aside(state: &State, message: SetAside<'_>, setback: &mut Setback<'_>) -> bool {
    let SetAside {
        payload,
        stream_seq,
        line,
        reason,
        error,
    } = message;
    loop {
        let written = mesh_service_kit::dead_letter::write(
            state.pool(),
            "chat",
            DEAD_LETTER_CONSUMER,
            payload,
            &format!("{reason}: {error}"),
        )
        .await;
        match written {
            Ok(()) => break,
            Err(err) => {
                if !setback.wait(&err).await {
                    return false;
                }
            }
        }
    }
    CHAT_DEAD_LETTERS.with_label_values(&[reason]).inc();
    tracing::warn!(
        stream_seq,
        line,
        reason,
        error,
        "chat ingest message set aside as a dead letter"
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(step: &str) -> u64 {
        CHAT_ROUND_STEP
            .with_label_values(&[step])
            .get_sample_count()
    }

    #[test]
    fn a_lots_lines_are_those_of_its_deliveries() {
        // Deliveries 0 and 1 hold two lines each, delivery 2 one, delivery 3 three.
        let lines: Vec<Line<'_>> = [0, 0, 1, 1, 2, 3, 3, 3]
            .into_iter()
            .enumerate()
            .map(|(number, delivery)| Line {
                delivery,
                number,
                payload: b"",
            })
            .collect();
        assert_eq!(lines_in(&lines, 0..2), 0..4);
        assert_eq!(lines_in(&lines, 2..3), 4..5);
        assert_eq!(lines_in(&lines, 3..4), 5..8);
        assert_eq!(lines_in(&lines, 1..4), 2..8);
        assert_eq!(lines_in(&lines, 4..4), 8..8, "an empty lot has no lines");
    }

    #[test]
    fn an_attempt_that_ends_early_records_its_step_as_unfinished() {
        let unfinished = count("unfinished");
        let acknowledged = count("acknowledge");
        {
            let mut clock = StepClock::start();
            clock.lap("acknowledge");
            clock.finish();
        }
        assert_eq!(count("unfinished"), unfinished, "a finished attempt");
        assert_eq!(count("acknowledge"), acknowledged + 1);
        {
            let mut clock = StepClock::start();
            clock.lap("authorize");
        }
        assert_eq!(count("unfinished"), unfinished + 1, "ended after authorize");
    }
}
