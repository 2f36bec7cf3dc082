//! The steps of one ingest batch, in the order the partition owner takes them: read, set the
//! unreadable aside, authorize (membership decides, once per poster), store (halving around a
//! message the store refuses), deliver, record how far the stream is decided, answer refusals,
//! acknowledge. Nothing is acknowledged before it is stored or refused; a step that fails for a
//! transient reason is retried; an owner fenced out or stopped returns before acknowledging.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_contracts::ErrorCode;
use mesh_contracts::chat::{ConversationId, SendAck, ServerFrame};
use mesh_nats::Delivery;
use mesh_observability::metrics::{
    CHAT_ACCEPT_TO_STORE, CHAT_BATCH_SIZE, CHAT_DEAD_LETTERS, CHAT_DUPLICATES, CHAT_REDELIVERIES,
    CHAT_REJECTED, CHAT_STORED,
};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::batch::Batch;
use super::setback::Setback;
use crate::domain::inbound::Valid;
use crate::state::State;
use crate::store::messages::{self, NewMessage, Outcome};
use crate::store::partitions::{self, Fence, Fenced};

/// The name ingest dead letters are kept under in `chat.dead_letters`.
const DEAD_LETTER_CONSUMER: &str = "ingest";

/// Takes one batch through every step; false when stopped before it was acknowledged, or when
/// a later owner claimed the partition (the next owner redoes what this one did not record).
pub async fn process(
    state: &State,
    fence: Fence,
    deliveries: &[Delivery],
    stop: &CancellationToken,
) -> bool {
    let Some(through) = deliveries.last().map(|d| d.stream_seq) else {
        return true;
    };
    let redelivered = deliveries.iter().filter(|d| d.delivered > 1).count();
    CHAT_REDELIVERIES.inc_by(redelivered as u64);
    let mut setback = Setback::new(stop, deliveries);
    let mut batch = Batch::read(deliveries.iter().map(|d| d.payload.as_ref()));
    if !set_aside_unreadable(state, &batch, deliveries, &mut setback).await
        || !authorize(state, &mut batch, &mut setback).await
    {
        return false;
    }
    let Some(stored) = store(state, fence, through, &batch, &mut setback).await else {
        return false;
    };
    if !deliver(state, &mut batch, &stored, deliveries, &mut setback).await {
        return false;
    }
    // Stored whole, the batch's transaction recorded `through` already; otherwise (nothing to
    // store, or stored piece by piece) record it now, once every message is decided and
    // before any refusal is answered or anything acknowledged.
    if stored.recorded_apart && !record(state, fence, through, &mut setback).await {
        return false;
    }
    answer_refusals(state, &batch).await;
    acknowledge(deliveries).await;
    true
}

/// Keeps each payload that is not a chat message as a dead letter.
async fn set_aside_unreadable(
    state: &State,
    batch: &Batch,
    deliveries: &[Delivery],
    setback: &mut Setback<'_>,
) -> bool {
    for index in batch.unreadable() {
        let delivery = &deliveries[index];
        if !set_aside(state, delivery, "unreadable", "not a chat message", setback).await {
            return false;
        }
    }
    true
}

/// Refuses what its poster may not post, as membership decides; retried while social cannot
/// answer (never refused for that).
async fn authorize(state: &State, batch: &mut Batch, setback: &mut Setback<'_>) -> bool {
    let posters = batch.posters();
    if posters.is_empty() {
        return true;
    }
    let open = state.config().open_private;
    loop {
        let now = OffsetDateTime::now_utc();
        match state
            .membership()
            .authorize_batch(posters.clone(), open, now)
            .await
        {
            Ok(verdicts) => {
                batch.apply(&verdicts);
                return true;
            }
            Err(err) => {
                if !setback.wait(&err).await {
                    return false;
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

/// Stores the ready messages in one fenced transaction that also records `through`; around a
/// message the store refuses, in pieces. `None` when stopped first or fenced out.
async fn store(
    state: &State,
    fence: Fence,
    through: u64,
    batch: &Batch,
    setback: &mut Setback<'_>,
) -> Option<Stored> {
    let (new, positions) = batch.to_store();
    CHAT_BATCH_SIZE.observe(new.len() as f64);
    if new.is_empty() {
        return Some(Stored {
            results: Vec::new(),
            positions,
            recorded_apart: true,
        });
    }
    let members = state.rosters.to_sync(state.membership(), &new).await;
    let whole = Piece {
        fence,
        stored_through: Some(through),
        messages: &new,
    };
    let results = store_isolating(state, whole, &members, setback).await?;
    state.rosters.synced(&members).await;
    let recorded_apart = results.iter().any(Result::is_err);
    Some(Stored {
        results,
        positions,
        recorded_apart,
    })
}

/// Messages stored in one transaction, and the stream sequence that records (`None` for a
/// piece of a split batch: the batch is recorded once all of it is decided).
#[derive(Clone, Copy)]
struct Piece<'a> {
    fence: Fence,
    stored_through: Option<u64>,
    messages: &'a [NewMessage],
}

/// Stores `piece` in order. A failure that is not transient (the data itself is refused:
/// a constraint, an encoding error) is narrowed down by halving the batch until the message
/// that causes it stands alone; that message's result is its error, and every other message
/// is stored in its order. Transient failures (lock or statement timeouts included) are
/// retried. `None` when stopped first or fenced out.
async fn store_isolating(
    state: &State,
    piece: Piece<'_>,
    members: &HashMap<ConversationId, Vec<Uuid>>,
    setback: &mut Setback<'_>,
) -> Option<Vec<Result<Outcome, String>>> {
    let Piece {
        fence, messages, ..
    } = piece;
    let err = loop {
        let stored =
            messages::store_batch(state.pool(), fence, piece.stored_through, messages, members)
                .await;
        match stored {
            Ok(Fenced::Current(outcomes)) => return Some(outcomes.into_iter().map(Ok).collect()),
            Ok(Fenced::Stale) => {
                fenced_out(fence);
                return None;
            }
            Err(err) if mesh_service_kit::is_permanent(&err) => break err,
            Err(err) => {
                if !setback.wait(&err).await {
                    return None;
                }
            }
        }
    };
    if messages.len() == 1 {
        return Some(vec![Err(err.to_string())]);
    }
    let (left, right) = messages.split_at(messages.len() / 2);
    let half = |messages| Piece {
        fence,
        stored_through: None,
        messages,
    };
    let mut results = Box::pin(store_isolating(state, half(left), members, setback)).await?;
    results.extend(Box::pin(store_isolating(state, half(right), members, setback)).await?);
    Some(results)
}

/// Pushes each stored message and its ack; sets a message the store refused aside and
/// refuses it (`unstorable`). False when stopped first.
async fn deliver(
    state: &State,
    batch: &mut Batch,
    stored: &Stored,
    deliveries: &[Delivery],
    setback: &mut Setback<'_>,
) -> bool {
    let now_ms = i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX);
    let mut audiences = Audiences::default();
    for (result, &index) in stored.results.iter().zip(&stored.positions) {
        match result {
            Ok(outcome) => {
                if let Some(valid) = batch.valid(index) {
                    deliver_one(state, valid, outcome, now_ms, &mut audiences).await;
                }
            }
            Err(error) => {
                if !set_aside(state, &deliveries[index], "unstorable", error, setback).await {
                    return false;
                }
                batch.refuse(index, ErrorCode::Unstorable);
            }
        }
    }
    true
}

/// Who receives each conversation's messages, asked once per batch: a group's roster is read
/// from social once for all of the batch's messages to it, not once per message.
#[derive(Default)]
struct Audiences(HashMap<ConversationId, Option<Arc<[Uuid]>>>);

impl Audiences {
    /// The audience of `conversation`, or `None` when it cannot be resolved (the message is
    /// stored anyway; members catch up by sync).
    async fn of(&mut self, state: &State, conversation: ConversationId) -> Option<Arc<[Uuid]>> {
        if let Some(known) = self.0.get(&conversation) {
            return known.clone();
        }
        let audience = match state.membership().audience(conversation).await {
            Ok(audience) => Some(audience),
            Err(err) => {
                tracing::warn!(error = %err, "cannot resolve the audience; push skipped");
                None
            }
        };
        self.0.insert(conversation, audience.clone());
        audience
    }
}

/// Pushes a stored message to its audience and the `stored` ack to its sender.
async fn deliver_one(
    state: &State,
    valid: &Valid,
    outcome: &Outcome,
    now_ms: i64,
    audiences: &mut Audiences,
) {
    let sender = valid.inbound.sender_id;
    let pusher = state.pusher();
    match outcome {
        Outcome::Stored(message) => {
            let kind = match valid.conversation {
                ConversationId::Private(..) => "private",
                ConversationId::Group(_) => "group",
            };
            CHAT_STORED.with_label_values(&[kind]).inc();
            let waited = (now_ms - valid.inbound.accepted_at_ms).max(0) as f64 / 1000.0;
            CHAT_ACCEPT_TO_STORE.observe(waited);
            pusher
                .send_one(sender, &ServerFrame::Ack(SendAck::stored(message)))
                .await;
            if let Some(audience) = audiences.of(state, valid.conversation).await {
                pusher
                    .send(&audience, None, &ServerFrame::Message(message.clone()))
                    .await;
            }
        }
        Outcome::Duplicate(message) => {
            CHAT_DUPLICATES.with_label_values(&["store"]).inc();
            pusher
                .send_one(sender, &ServerFrame::Ack(SendAck::stored(message)))
                .await;
        }
        Outcome::OverQuota => {
            let code = ErrorCode::QuotaExceeded;
            CHAT_REJECTED.with_label_values(&[code.as_str()]).inc();
            let ack = SendAck::rejected(
                valid.inbound.client_id.clone(),
                Some(valid.inbound.conversation_id.clone()),
                code,
            );
            pusher.send_one(sender, &ServerFrame::Ack(ack)).await;
        }
    }
}

/// Records the batch through `through` as decided (retrying transient failures); false when
/// stopped first or fenced out.
async fn record(state: &State, fence: Fence, through: u64, setback: &mut Setback<'_>) -> bool {
    loop {
        match partitions::record(state.pool(), fence, through).await {
            Ok(Fenced::Current(())) => return true,
            Ok(Fenced::Stale) => {
                fenced_out(fence);
                return false;
            }
            Err(err) => {
                if !setback.wait(&err).await {
                    return false;
                }
            }
        }
    }
}

/// Tells each refused message's sender why.
async fn answer_refusals(state: &State, batch: &Batch) {
    for (sender, code, ack) in batch.refusals() {
        CHAT_REJECTED.with_label_values(&[code.as_str()]).inc();
        state
            .pusher()
            .send_one(sender, &ServerFrame::Ack(ack))
            .await;
    }
}

/// Acknowledges the batch (its last message: the consumer acknowledges all before it).
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

/// Keeps a message that cannot be handled in `chat.dead_letters` (retrying while Postgres is
/// unreachable), counts and logs it. False when stopped first.
async fn set_aside(
    state: &State,
    delivery: &Delivery,
    reason: &'static str,
    error: &str,
    setback: &mut Setback<'_>,
) -> bool {
    loop {
        let written = mesh_service_kit::dead_letter::write(
            state.pool(),
            "chat",
            DEAD_LETTER_CONSUMER,
            &delivery.payload,
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
        stream_seq = delivery.stream_seq,
        reason,
        error,
        "chat ingest message set aside as a dead letter"
    );
    true
}
