//! The owner of one partition at one epoch: claims the partition (learning how far its stream
//! is stored), reads batches in order from right after that, authorizes, stores each batch in
//! one fenced transaction that also records the batch's last stream sequence, pushes the
//! results, then acknowledges. Nothing is acknowledged before it is stored or refused by the
//! current epoch's owner; an owner whose epoch is no longer current stops before it stores,
//! pushes or acknowledges anything, and the next owner resumes exactly after what is stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_contracts::chat::{ConversationId, SendAck, ServerFrame};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::Delivery;
use mesh_observability::metrics::{
    CHAT_ACCEPT_TO_STORE, CHAT_BATCH_SIZE, CHAT_CONSUMER_PENDING, CHAT_DEAD_LETTERS,
    CHAT_DUPLICATES, CHAT_REDELIVERIES, CHAT_REJECTED, CHAT_STORED,
};
use mesh_service_kit::pause;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;
use uuid::Uuid;

use super::leases::Leases;
use crate::domain::inbound::{self, Refused, Valid};
use crate::handlers::State;
use crate::store::messages::{self, NewMessage, Outcome};
use crate::store::partitions::{self, Claimed, Fence, Fenced};

/// Pause before retrying a batch whose storage or authorization failed.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Owns `fence.partition` at `fence.epoch` until `stop` is cancelled or a later owner
/// claims it.
pub async fn own(state: State, leases: Arc<Leases>, fence: Fence, stop: CancellationToken) {
    let Fence { partition, epoch } = fence;
    let batch = state.config().batch_size;
    let Some(Claimed {
        mut stored_through,
        previous_epoch,
    }) = claim(&state, fence, &stop).await
    else {
        return;
    };
    // The backlog gauge is refreshed on its own clock, so a stalled partition shows as a
    // growing backlog even while no batch completes.
    let _reporter = AbortOnDropHandle::new(tokio::spawn(report_pending_every(
        state.clone(),
        fence,
        stop.clone(),
    )));
    loop {
        if stop.is_cancelled() {
            return;
        }
        let opened = state
            .bus()
            .open_partition(partition, epoch, previous_epoch, stored_through, batch)
            .await;
        let mut feed = match opened {
            Ok(feed) => feed,
            Err(err) => {
                tracing::warn!(partition, error = %err, "cannot open the partition feed");
                if pause(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = feed.next_batch(batch) => next,
            };
            match next {
                Ok(Some(deliveries)) => {
                    let span = mesh_nats::ingest_batch_span(&deliveries);
                    if !process(&state, fence, &deliveries, &stop)
                        .instrument(span)
                        .await
                    {
                        return;
                    }
                    if let Some(last) = deliveries.last() {
                        stored_through = last.stream_seq;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(partition, error = %err, "partition feed failed");
                    break;
                }
            }
        }
        // The feed broke: re-open it only while the lease is still ours (the fence would stop
        // a stale owner anyway; this spares it the reads).
        if pause(&stop, Duration::from_millis(300)).await || !leases.holds(partition).await {
            tracing::info!(partition, "partition feed closed");
            return;
        }
    }
}

/// Claims the partition for this epoch; how far its stream is stored, or `None` when
/// stopped first or a later owner claimed it already.
async fn claim(state: &State, fence: Fence, stop: &CancellationToken) -> Option<Claimed> {
    loop {
        match partitions::claim(state.pool(), fence).await {
            Ok(Fenced::Current(claimed)) => {
                tracing::info!(
                    partition = fence.partition,
                    epoch = fence.epoch,
                    stored_through = claimed.stored_through,
                    "partition claimed"
                );
                return Some(claimed);
            }
            Ok(Fenced::Stale) => {
                tracing::warn!(
                    partition = fence.partition,
                    "partition claimed by a later owner"
                );
                return None;
            }
            Err(err) => {
                tracing::warn!(partition = fence.partition, error = %err, "cannot claim the partition; retrying");
                if pause(stop, RETRY_DELAY).await {
                    return None;
                }
            }
        }
    }
}

/// How often an owner reports its partition's backlog.
const PENDING_REPORT: Duration = Duration::from_secs(5);

/// Reports the partition's backlog every [`PENDING_REPORT`] until `stop`, then drops its series
/// (another worker reports the partition from then on).
async fn report_pending_every(state: State, fence: Fence, stop: CancellationToken) {
    let label = fence.partition.to_string();
    loop {
        let pending = state
            .bus()
            .partition_pending(fence.partition, fence.epoch)
            .await;
        if let Some((pending, ack_pending)) = pending {
            let gauge =
                |which: &str| CHAT_CONSUMER_PENDING.with_label_values(&[label.as_str(), which]);
            gauge("pending").set(i64::try_from(pending).unwrap_or(i64::MAX));
            gauge("ack_pending").set(i64::try_from(ack_pending).unwrap_or(i64::MAX));
        }
        if pause(&stop, PENDING_REPORT).await {
            break;
        }
    }
    for which in ["pending", "ack_pending"] {
        let _ = CHAT_CONSUMER_PENDING.remove_label_values(&[label.as_str(), which]);
    }
}

/// One message of a batch on its way through.
enum Item {
    Ready(Valid),
    Refused {
        inbound: Box<mesh_contracts::chat::Inbound>,
        code: ErrorCode,
    },
    /// Set aside as a dead letter (unreadable): nobody to answer.
    Dropped,
}

/// The name ingest dead letters are kept under in `chat.dead_letters`.
const DEAD_LETTER_CONSUMER: &str = "ingest";

/// Handles one batch; false when stopped before it was acknowledged, or when a later owner
/// claimed the partition (the next owner redoes what this one did not record).
async fn process(
    state: &State,
    fence: Fence,
    deliveries: &[Delivery],
    stop: &CancellationToken,
) -> bool {
    let Some(through) = deliveries.last().map(|d| d.stream_seq) else {
        return true;
    };
    let redelivered = deliveries.iter().filter(|d| d.delivered > 1).count();
    if redelivered > 0 {
        CHAT_REDELIVERIES.inc_by(redelivered as u64);
    }
    let mut failures = 0;
    let mut items = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        items.push(match inbound::check(&delivery.payload) {
            Ok(valid) => Item::Ready(valid),
            Err(Refused::Message { code, inbound }) => Item::Refused { inbound, code },
            Err(Refused::Unreadable) => {
                let setback = Setback {
                    stop,
                    deliveries,
                    failures: &mut failures,
                };
                if !set_aside(state, delivery, "unreadable", "not a chat message", setback).await {
                    return false;
                }
                Item::Dropped
            }
        });
    }
    while let Err(err) = authorize_all(state, &mut items).await {
        if !backoff(stop, deliveries, &err, &mut failures).await {
            return false;
        }
    }
    let (new, positions): (Vec<NewMessage>, Vec<usize>) = items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| match item {
            Item::Ready(valid) => Some((
                NewMessage {
                    conversation: valid.conversation,
                    sender: valid.inbound.sender_id,
                    client_id: valid.inbound.client_id.clone(),
                    kind: valid.inbound.kind,
                    body: valid.inbound.body.clone(),
                },
                index,
            )),
            _ => None,
        })
        .unzip();
    let results = if new.is_empty() {
        Vec::new()
    } else {
        let members = state.rosters_to_sync(&new).await;
        let setback = Setback {
            stop,
            deliveries,
            failures: &mut failures,
        };
        let whole = Piece {
            fence,
            stored_through: Some(through),
            messages: &new,
        };
        let Some(results) = store_isolating(state, whole, &members, setback).await else {
            return false;
        };
        state.rosters_synced(&members).await;
        results
    };
    let recorded_apart = new.is_empty() || results.iter().any(Result::is_err);
    CHAT_BATCH_SIZE.observe(new.len() as f64);
    let now_ms = i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX);
    for (result, index) in results.iter().zip(&positions) {
        let Item::Ready(valid) = &items[*index] else {
            continue;
        };
        match result {
            Ok(outcome) => deliver(state, valid, outcome, now_ms).await,
            Err(error) => {
                let setback = Setback {
                    stop,
                    deliveries,
                    failures: &mut failures,
                };
                if !set_aside(state, &deliveries[*index], "unstorable", error, setback).await {
                    return false;
                }
                items[*index] = Item::Refused {
                    inbound: Box::new(valid.inbound.clone()),
                    code: ErrorCode::Unstorable,
                };
            }
        }
    }
    // Stored whole, the batch's transaction recorded `through` already; otherwise (nothing to
    // store, or stored piece by piece) record it now, once every message is decided and
    // before any refusal is answered or anything acknowledged.
    if recorded_apart && !record(state, fence, through, deliveries, stop, &mut failures).await {
        return false;
    }
    for item in &items {
        if let Item::Refused { inbound, code } = item {
            CHAT_REJECTED.with_label_values(&[code.as_str()]).inc();
            let ack = SendAck::rejected(
                inbound.client_id.clone(),
                Some(inbound.conversation_id.clone()),
                *code,
            );
            state
                .pusher()
                .send_one(inbound.sender_id, &ServerFrame::Ack(ack))
                .await;
        }
    }
    if let Some(last) = deliveries.last()
        && let Err(err) = last.ack().await
    {
        // Not fatal: the messages are stored; a redelivery is recognised as a resend.
        tracing::warn!(error = %err, "ack after store failed");
    }
    true
}

/// What a step needs to wait and retry after a transient failure.
struct Setback<'a> {
    stop: &'a CancellationToken,
    deliveries: &'a [Delivery],
    failures: &'a mut u32,
}

impl Setback<'_> {
    /// Waits before the next try; false when stopped first.
    async fn wait(&mut self, err: &(dyn std::fmt::Display + Sync)) -> bool {
        backoff(self.stop, self.deliveries, err, self.failures).await
    }

    fn again(&mut self) -> Setback<'_> {
        Setback {
            stop: self.stop,
            deliveries: self.deliveries,
            failures: self.failures,
        }
    }
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
    mut setback: Setback<'_>,
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
    let mut results =
        Box::pin(store_isolating(state, half(left), members, setback.again())).await?;
    results.extend(
        Box::pin(store_isolating(
            state,
            half(right),
            members,
            setback.again(),
        ))
        .await?,
    );
    Some(results)
}

/// Records the batch through `through` as decided (retrying transient failures); false when
/// stopped first or fenced out.
async fn record(
    state: &State,
    fence: Fence,
    through: u64,
    deliveries: &[Delivery],
    stop: &CancellationToken,
    failures: &mut u32,
) -> bool {
    loop {
        match partitions::record(state.pool(), fence, through).await {
            Ok(Fenced::Current(())) => return true,
            Ok(Fenced::Stale) => {
                fenced_out(fence);
                return false;
            }
            Err(err) => {
                if !backoff(stop, deliveries, &err, failures).await {
                    return false;
                }
            }
        }
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
    mut setback: Setback<'_>,
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

/// Pushes a stored message to its audience and the `stored` ack to its sender.
async fn deliver(state: &State, valid: &Valid, outcome: &Outcome, now_ms: i64) {
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
            let pusher = state.pusher();
            pusher
                .send_one(sender, &ServerFrame::Ack(SendAck::stored(message)))
                .await;
            match state.membership().audience(valid.conversation).await {
                Ok(audience) => {
                    pusher
                        .send(&audience, None, &ServerFrame::Message(message.clone()))
                        .await;
                }
                Err(err) => {
                    // Stored anyway; members catch up by sync.
                    tracing::warn!(error = %err, "cannot resolve the audience; push skipped");
                }
            }
        }
        Outcome::Duplicate(message) => {
            CHAT_DUPLICATES.with_label_values(&["store"]).inc();
            state
                .pusher()
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
            state
                .pusher()
                .send_one(sender, &ServerFrame::Ack(ack))
                .await;
        }
    }
}

/// Decides who may post, once per (conversation, sender) of the batch, all asked of social at
/// once. An error means social could not answer: the batch is retried, never refused for it.
async fn authorize_all(state: &State, items: &mut [Item]) -> Result<(), ServiceError> {
    let now = OffsetDateTime::now_utc();
    let keys: Vec<(ConversationId, Uuid)> = items
        .iter()
        .filter_map(|item| match item {
            Item::Ready(valid) => Some((valid.conversation, valid.inbound.sender_id)),
            _ => None,
        })
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    let verdicts = futures::future::try_join_all(
        keys.iter()
            .map(|(conversation, sender)| decide(state, *conversation, *sender, now)),
    )
    .await?;
    let decided: HashMap<(ConversationId, Uuid), Result<(), ErrorCode>> =
        keys.into_iter().zip(verdicts).collect();
    for item in items.iter_mut() {
        let Item::Ready(valid) = item else { continue };
        let key = (valid.conversation, valid.inbound.sender_id);
        if let Some(Err(code)) = decided.get(&key).copied() {
            let Item::Ready(valid) = std::mem::replace(item, Item::Dropped) else {
                unreachable!("matched above")
            };
            *item = Item::Refused {
                inbound: Box::new(valid.inbound),
                code,
            };
        }
    }
    Ok(())
}

async fn decide(
    state: &State,
    conversation: ConversationId,
    sender: Uuid,
    now: OffsetDateTime,
) -> Result<Result<(), ErrorCode>, ServiceError> {
    let open = state.config().open_private;
    state
        .membership()
        .may_post(conversation, sender, open, now)
        .await
}

/// After a failed step: logs, keeps the batch from being redelivered meanwhile, and waits.
/// False when stopped first (the batch is left unacknowledged for the next owner).
async fn backoff(
    stop: &CancellationToken,
    deliveries: &[Delivery],
    err: &(dyn std::fmt::Display + Sync),
    failures: &mut u32,
) -> bool {
    *failures += 1;
    if *failures == 1 || failures.is_multiple_of(20) {
        tracing::warn!(error = %err, failures = *failures, "batch step failed; retrying");
    }
    if let Some(last) = deliveries.last() {
        last.in_progress().await;
    }
    !pause(stop, RETRY_DELAY).await
}
