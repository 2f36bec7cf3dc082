//! The owner of one partition at one epoch: claims the partition (learning how far its stream
//! is stored), reads batches in order from right after that and hands each to the worker's
//! store rounds (`rounds`), which take it through the steps in `steps` with the batches of
//! other partitions waiting at the same time (authorize, store in one fenced transaction that
//! also records each batch's last stream sequence, deliver, acknowledge). A batch whose epoch
//! is no longer current is dropped before it stores, pushes or acknowledges anything, its owner
//! stops, and the next owner resumes exactly after what is stored.

use std::sync::Arc;
use std::time::Duration;

use mesh_nats::Delivery;
use mesh_observability::metrics::CHAT_CONSUMER_PENDING;
use mesh_observability::outage::Outage;
use mesh_observability::{outage_failed, outage_over};
use mesh_service_kit::pause;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::backlog::Backlog;
use super::leases::Leases;
use super::rounds::Rounds;
use super::setback::RETRY_DELAY;
use super::steps::Lot;
use crate::state::State;
use crate::store::partitions::{self, Claimed, Fence, Fenced};

/// Owns `fence.partition` at `fence.epoch` until `stop` is cancelled or a later owner
/// claims it.
pub async fn own(
    state: State,
    leases: Arc<Leases>,
    rounds: Arc<Rounds<Lot>>,
    fence: Fence,
    stop: CancellationToken,
) {
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
                        call = rounds.wait(deliveries.iter().map(messages_in).sum()) => match call {
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
