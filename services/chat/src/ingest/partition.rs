//! The owner of one partition at one epoch: claims the partition (learning how far its stream
//! is stored, and resetting what was recorded of a stream or lease bucket that no longer
//! exists), reads batches in order from right after that and hands each to the worker's
//! store rounds (`rounds`, of the chain `chains` finds lightest then), which take it through
//! the steps in `steps` with the batches of other partitions waiting at the same time
//! (authorize, store in one fenced transaction that also records each batch's last stream
//! sequence, deliver, acknowledge). A batch whose epoch
//! is no longer current is dropped before it stores, pushes or acknowledges anything, its owner
//! stops, and the next owner resumes exactly after what is stored.

use std::sync::Arc;
use std::time::Duration;

use mesh_contracts::leases::LEASE_CALL_TIMEOUT;
use mesh_contracts::{Bucket, Stream};
use mesh_nats::Delivery;
use mesh_observability::metrics::{CHAT_CONSUMER_PENDING, CHAT_PARTITION_RESETS};
use mesh_observability::outage::Outage;
use mesh_observability::{outage_failed, outage_over};
use mesh_service_kit::pause;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::backlog::Backlog;
use super::chains::Chains;
use super::leases::Leases;
use super::setback::RETRY_DELAY;
use super::steps::Lot;
use crate::domain::incarnation::{Bid, Decision, Incarnation, Present, Stale};
use crate::state::State;
use crate::store::partitions::{self, Claim, Claimed, Fence};

/// A partition lease just taken: the partition and what its owner claims it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub partition: u32,
    pub bid: Bid,
}

/// Owns `taken.partition` at the epoch of `taken.bid` until `stop` is cancelled or a later
/// owner claims it; each batch waits for the lightest of `chains` (`home` on a tie).
pub async fn own(
    state: State,
    leases: Arc<Leases>,
    chains: Arc<Chains<Lot>>,
    home: usize,
    taken: Taken,
    stop: CancellationToken,
) {
    let batch = state.config().batch_size;
    let Some(Claimed {
        fence,
        mut stored_through,
        previous_epoch,
        ..
    }) = claim(&state, taken, &stop).await
    else {
        return;
    };
    let Fence {
        partition, epoch, ..
    } = fence;
    // The backlog gauge is refreshed on its own clock, so a stalled partition shows as a
    // growing backlog even while no batch completes.
    let _reporter = AbortOnDropHandle::new(tokio::spawn(report_pending_every(
        state.clone(),
        fence,
        stop.clone(),
    )));
    // The edges admit new messages to the partition by this count.
    let backlog = Backlog::default();
    let _backlog_reporter = AbortOnDropHandle::new(tokio::spawn(backlog.clone().report_until(
        state.clone(),
        fence,
        stop.clone(),
    )));
    let mut outage = Outage::default();
    loop {
        // Without NATS, opening waits out its timeout: told to stop, stop now.
        let Some(opened) = stop
            .run_until_cancelled(state.bus().open_partition(
                partition,
                epoch,
                previous_epoch,
                stored_through,
                batch,
            ))
            .await
        else {
            return;
        };
        let mut feed = match opened {
            Ok(feed) => feed,
            Err(err) => {
                outage_failed!(outage, partition, error = %err, "cannot open the partition feed");
                if pause(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        // The consumer was made on the stream there is now. Still the one claimed in, it was
        // then too (a stream made again never turns back into the old one); another one's
        // sequences are not those `stored_through` counts, so this owner ends and the
        // partition is claimed again under a new epoch, which resets its position.
        match bounded(state.bus().stream_mark(Stream::ChatIn)).await {
            Ok(mark) if mark.created == fence.incarnation.stream => {}
            Ok(mark) => {
                tracing::warn!(
                    partition,
                    claimed_stream_created = %rfc3339(fence.incarnation.stream),
                    stream_created = %rfc3339(mark.created),
                    "the ingest stream was made anew under this owner; the partition is claimed again"
                );
                return;
            }
            Err(err) => {
                outage_failed!(outage, partition, error = %err, "cannot check the ingest stream");
                drop(feed);
                if pause(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        }
        outage_over!(outage, partition, "partition feed open again");
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = feed.next_weighed_batch(batch, messages_in) => next,
            };
            match next {
                Ok(Some(mut deliveries)) => {
                    // Wait for a round; what arrives meanwhile joins this batch.
                    let call = tokio::select! {
                        _ = stop.cancelled() => return,
                        call = chains.lightest(home).wait(deliveries.iter().map(messages_in).sum()) => match call {
                            Some(call) => call,
                            // The rounds stopped: the worker is shutting down.
                            None => return,
                        },
                    };
                    let size = match feed.top_up_weighed(&mut deliveries, batch, messages_in) {
                        Ok(size) => size,
                        Err(err) => {
                            outage_failed!(outage, partition, error = %err, "partition feed failed");
                            break;
                        }
                    };
                    let held = deliveries.len();
                    backlog.taking(held, size, feed.beyond(messages_in));
                    let Some(through) = deliveries.last().map(|d| d.stream_seq) else {
                        continue;
                    };
                    let lot = Lot {
                        fence,
                        deliveries,
                        stop: stop.clone(),
                    };
                    // Told to stop meanwhile, the owner still waits for the round (the lease
                    // loop waits a bounded grace for it), so a batch being stored is also
                    // pushed and acknowledged before the partition is handed over.
                    if call.hand(lot, size).await != Some(true) {
                        return;
                    }
                    backlog.done(held, size, feed.beyond(messages_in));
                    stored_through = through;
                }
                Ok(None) => break,
                Err(err) => {
                    outage_failed!(outage, partition, error = %err, "partition feed failed");
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

/// The chat messages an ingest message holds (one per line): what a batch's size counts.
fn messages_in(delivery: &Delivery) -> usize {
    mesh_contracts::chat::ingest_lines(&delivery.payload).count()
}

/// `call`, failing after [`LEASE_CALL_TIMEOUT`] (what JetStream is read with while a claim
/// holds its row lock, and a check between feeds).
async fn bounded<T, E: std::fmt::Display>(
    call: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(LEASE_CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(anyhow::anyhow!("{err}")),
        Err(_) => Err(anyhow::anyhow!(
            "JetStream gave no answer within {LEASE_CALL_TIMEOUT:?}"
        )),
    }
}

/// The ingest stream and the lease bucket as JetStream has them now.
async fn present(state: &State) -> anyhow::Result<Present> {
    let bus = state.bus();
    let (stream, leases) = tokio::join!(
        bounded(bus.stream_mark(Stream::ChatIn)),
        bounded(bus.bucket_mark(Bucket::Leases)),
    );
    let (stream, leases) = (stream?, leases?);
    Ok(Present {
        incarnation: Incarnation {
            stream: stream.created,
            leases: leases.created,
        },
        stream_last: stream.last_sequence,
        leases_last: leases.last_sequence,
    })
}

/// Claims the partition for the lease `taken`; the claim (its fence and how far its stream is
/// stored), or `None` when stopped first or the claim took nothing (a later owner claimed it
/// already, or the lease's bucket is gone).
async fn claim(state: &State, taken: Taken, stop: &CancellationToken) -> Option<Claimed> {
    let Taken { partition, bid } = taken;
    loop {
        match partitions::claim(state.pool(), partition, bid, || present(state)).await {
            Ok(Claim::Current(claimed)) => {
                if let Decision::Reset { keep_position } = claimed.decision {
                    report_reset(&claimed, keep_position);
                }
                tracing::info!(
                    partition,
                    epoch = bid.epoch,
                    stored_through = claimed.stored_through,
                    decision = ?claimed.decision,
                    "partition claimed"
                );
                return Some(claimed);
            }
            Ok(Claim::Stale(Stale::LaterOwner)) => {
                tracing::warn!(partition, "partition claimed by a later owner");
                return None;
            }
            Ok(Claim::Stale(Stale::LeaseGone)) => {
                tracing::warn!(
                    partition,
                    epoch = bid.epoch,
                    "partition lease taken in a lease bucket that no longer exists; taking it again"
                );
                return None;
            }
            Err(err) => {
                tracing::warn!(partition, error = %err, "cannot claim the partition; retrying");
                if pause(stop, RETRY_DELAY).await {
                    return None;
                }
            }
        }
    }
}

/// Logs (one warning) and counts a claim that found its partition's record referring to a
/// stream or bucket that no longer exists.
fn report_reset(claimed: &Claimed, keep_position: bool) {
    CHAT_PARTITION_RESETS.inc();
    let current = claimed.fence.incarnation;
    let was = claimed.recorded.incarnation;
    let shown = |at: Option<OffsetDateTime>| at.map_or_else(|| "unknown".to_owned(), rfc3339);
    tracing::warn!(
        partition = claimed.fence.partition,
        recorded_stream_created = %shown(was.map(|w| w.stream)),
        recorded_leases_created = %shown(was.map(|w| w.leases)),
        stream_created = %rfc3339(current.stream),
        leases_created = %rfc3339(current.leases),
        recorded_epoch = claimed.recorded.epoch,
        recorded_stream_seq = claimed.recorded.stream_seq,
        epoch = claimed.fence.epoch,
        stored_through = claimed.stored_through,
        position_kept = keep_position,
        "partition state recorded for an ingest stream or lease bucket that no longer exists \
         (JetStream lost its store, or they were made again): reset to the current ones"
    );
}

/// `at` as RFC 3339 (how JetStream reports a stream's creation time).
fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
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
