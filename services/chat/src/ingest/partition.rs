//! The owner of one partition at one epoch: claims the partition (learning how far its stream
//! is stored), reads batches in order from right after that and takes each through the steps
//! in `steps` (authorize, store in one fenced transaction that also records the batch's last
//! stream sequence, deliver, acknowledge). An owner whose epoch is no longer current stops
//! before it stores, pushes or acknowledges anything, and the next owner resumes exactly after
//! what is stored.

use std::sync::Arc;
use std::time::Duration;

use mesh_observability::metrics::CHAT_CONSUMER_PENDING;
use mesh_service_kit::pause;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::backlog::Backlog;
use super::leases::Leases;
use super::setback::RETRY_DELAY;
use super::steps;
use crate::state::State;
use crate::store::partitions::{self, Claimed, Fence, Fenced};

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
    // The edges admit new messages to the partition by this count.
    let backlog = Backlog::default();
    let _backlog_reporter = AbortOnDropHandle::new(tokio::spawn(backlog.clone().report_until(
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
                Ok(Some(mut deliveries)) => {
                    // Wait for a turn; what arrives meanwhile joins this batch.
                    let _turn = tokio::select! {
                        _ = stop.cancelled() => return,
                        turn = state.store_slots.acquire() => match turn {
                            Ok(turn) => turn,
                            // Never closed; unacknowledged messages go to the next owner.
                            Err(_) => return,
                        },
                    };
                    if let Err(err) = feed.top_up(&mut deliveries, batch) {
                        tracing::warn!(partition, error = %err, "partition feed failed");
                        break;
                    }
                    backlog.taking(&deliveries);
                    let span = mesh_nats::ingest_batch_span(&deliveries);
                    if !steps::process(&state, fence, &deliveries, &stop)
                        .instrument(span)
                        .await
                    {
                        return;
                    }
                    backlog.done(&deliveries);
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
