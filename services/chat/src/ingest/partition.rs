//! The owner of one partition: reads batches in order, authorizes, stores each batch in one
//! transaction, pushes the results, then acknowledges. Nothing is acknowledged before it is
//! stored or refused, so an owner that dies loses nothing: the next owner reads from the ack
//! floor and the store drops what was already stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_contracts::chat::{ConversationId, SendAck, ServerFrame};
use mesh_contracts::{ErrorCode, ServiceError};
use mesh_nats::Delivery;
use mesh_observability::metrics::{
    CHAT_ACCEPT_TO_STORE, CHAT_BATCH_SIZE, CHAT_CONSUMER_PENDING, CHAT_DUPLICATES,
    CHAT_REDELIVERIES, CHAT_REJECTED, CHAT_STORED,
};
use mesh_service_kit::pause;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::leases::Leases;
use crate::domain::authorize;
use crate::domain::inbound::{self, Refused, Valid};
use crate::handlers::State;
use crate::store::messages::{self, NewMessage, Outcome};
use crate::store::projection;

/// Pause before retrying a batch whose storage or authorization failed.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Owns `partition` until `stop` is cancelled.
pub async fn own(state: State, leases: Arc<Leases>, partition: u32, stop: CancellationToken) {
    let batch = state.config().batch_size;
    let label = partition.to_string();
    loop {
        if stop.is_cancelled() {
            return;
        }
        let mut feed = match state.bus().open_partition(partition, batch).await {
            Ok(feed) => feed,
            Err(err) => {
                tracing::warn!(partition, error = %err, "cannot open the partition feed");
                if pause(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        let mut since_report = 0usize;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = feed.next_batch(batch) => next,
            };
            match next {
                Ok(Some(deliveries)) => {
                    since_report += deliveries.len();
                    if !process(&state, &deliveries, &stop).await {
                        return;
                    }
                    if since_report >= 1000 {
                        since_report = 0;
                        report_pending(&state, partition, &label).await;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(partition, error = %err, "partition feed failed");
                    break;
                }
            }
        }
        report_pending(&state, partition, &label).await;
        // The feed broke: re-open it only while the lease is still ours, so an owner that lost
        // its lease never takes the consumer back from the new owner.
        if pause(&stop, Duration::from_millis(300)).await || !leases.holds(partition).await {
            tracing::info!(partition, "partition feed closed");
            return;
        }
    }
}

async fn report_pending(state: &State, partition: u32, label: &str) {
    if let Some((pending, ack_pending)) = state.bus().partition_pending(partition).await {
        let gauge = |which| CHAT_CONSUMER_PENDING.with_label_values(&[label, which]);
        gauge("pending").set(i64::try_from(pending).unwrap_or(i64::MAX));
        gauge("ack_pending").set(i64::try_from(ack_pending).unwrap_or(i64::MAX));
    }
}

/// One message of a batch on its way through.
enum Item {
    Ready(Valid),
    Refused {
        inbound: Box<mesh_contracts::chat::Inbound>,
        code: ErrorCode,
    },
    Dropped,
}

/// Handles one batch; false when stopped before it was acknowledged (the next owner redoes it).
async fn process(state: &State, deliveries: &[Delivery], stop: &CancellationToken) -> bool {
    let redelivered = deliveries.iter().filter(|d| d.delivered > 1).count();
    if redelivered > 0 {
        CHAT_REDELIVERIES.inc_by(redelivered as u64);
    }
    let mut items: Vec<Item> = deliveries
        .iter()
        .map(|d| match inbound::check(&d.payload) {
            Ok(valid) => Item::Ready(valid),
            Err(Refused::Message { code, inbound }) => Item::Refused { inbound, code },
            Err(Refused::Unreadable) => {
                tracing::warn!(
                    stream_seq = d.stream_seq,
                    "unreadable ingest message dropped"
                );
                Item::Dropped
            }
        })
        .collect();
    let mut failures = 0;
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
    let outcomes = if new.is_empty() {
        Vec::new()
    } else {
        let members = state.rosters_to_sync(&new).await;
        let outcomes = loop {
            match messages::store_batch(state.pool(), &new, &members).await {
                Ok(outcomes) => break outcomes,
                Err(err) => {
                    if !backoff(stop, deliveries, &err, &mut failures).await {
                        return false;
                    }
                }
            }
        };
        state.rosters_synced(&members).await;
        outcomes
    };
    CHAT_BATCH_SIZE.observe(new.len() as f64);
    let now_ms = i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX);
    for (outcome, index) in outcomes.iter().zip(&positions) {
        let Item::Ready(valid) = &items[*index] else {
            continue;
        };
        deliver(state, valid, outcome, now_ms).await;
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
        && let Err(err) = last.ack_through().await
    {
        // Not fatal: the messages are stored; a redelivery is recognised as a resend.
        tracing::warn!(error = %err, "ack after store failed");
    }
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
    }
}

/// Decides who may post, once per (conversation, sender) of the batch: private pairs the
/// projection clears are looked up in one query; everything else is decided one by one (the
/// projection, then social). An error means social or Postgres could not answer: the batch is
/// retried, never refused for it.
async fn authorize_all(state: &State, items: &mut [Item]) -> Result<(), ServiceError> {
    let now = OffsetDateTime::now_utc();
    let pairs: Vec<(Uuid, Uuid)> = items
        .iter()
        .filter_map(|item| match item {
            Item::Ready(Valid {
                conversation: ConversationId::Private(a, b),
                ..
            }) => Some((*a, *b)),
            _ => None,
        })
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    let cleared: std::collections::HashSet<(Uuid, Uuid)> = if pairs.is_empty() {
        Default::default()
    } else {
        projection::clear_pairs(state.pool(), &pairs)
            .await
            .map_err(mesh_service_kit::db_error)?
            .into_iter()
            .collect()
    };
    let mut decided: HashMap<(ConversationId, Uuid), Result<(), ErrorCode>> = HashMap::new();
    for item in items.iter_mut() {
        let Item::Ready(valid) = item else { continue };
        let key = (valid.conversation, valid.inbound.sender_id);
        let verdict = match (decided.get(&key), key.0) {
            (Some(verdict), _) => *verdict,
            (None, ConversationId::Private(a, b)) if cleared.contains(&(a, b)) => Ok(()),
            (None, _) => {
                let verdict = decide(state, key.0, key.1, now).await?;
                decided.insert(key, verdict);
                verdict
            }
        };
        if let Err(code) = verdict {
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
    let membership = state.membership();
    Ok(match conversation {
        ConversationId::Private(..) => {
            let peer = conversation.peer_of(sender).expect("checked as a party");
            let facts = membership.pair(sender, peer).await?;
            authorize::private(facts, state.config().open_private)
        }
        ConversationId::Group(group) => {
            authorize::group(membership.group_facts(group, sender).await?, now)
        }
    })
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
