//! Partition ownership: every tick this worker announces itself, computes which partitions it
//! should own among the live workers, renews, releases and acquires leases accordingly, and runs
//! one owner task per held partition.

mod leases;
mod partition;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mesh_observability::metrics::CHAT_PARTITIONS_OWNED;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::domain::assignment;
use crate::handlers::State;
use leases::Leases;

/// A lease not renewed for this long is treated as lost: the bucket expires it soon after.
const LEASE_GRACE: Duration = Duration::from_secs(4);
/// How long an owner may take to finish its batch when told to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

struct Held {
    revision: u64,
    renewed: Instant,
    stop: CancellationToken,
    task: AbortOnDropHandle<()>,
}

impl Held {
    async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_GRACE, self.task).await.is_err() {
            tracing::warn!("partition owner did not stop in time");
        }
    }
}

/// Owns partitions until `shutdown` is cancelled, then hands them back.
pub async fn run(state: State, shutdown: CancellationToken) {
    let leases = loop {
        match Leases::open(state.bus(), state.worker_id()).await {
            Ok(leases) => break std::sync::Arc::new(leases),
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the lease bucket; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let mut held: HashMap<u32, Held> = HashMap::new();
    let mut tick = tokio::time::interval(state.config().lease_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        rebalance(&state, &leases, &mut held).await;
        CHAT_PARTITIONS_OWNED.set(i64::try_from(held.len()).unwrap_or(i64::MAX));
    }
    for (partition, lease) in held.drain() {
        let revision = lease.revision;
        lease.stop().await;
        leases.release(partition, revision).await;
    }
    leases.leave().await;
    CHAT_PARTITIONS_OWNED.set(0);
}

async fn rebalance(state: &State, leases: &std::sync::Arc<Leases>, held: &mut HashMap<u32, Held>) {
    if let Err(err) = leases.heartbeat().await {
        tracing::warn!(error = %err, "cannot announce this chat worker");
    }
    // Renew first: a lease we cannot renew for too long must stop being used.
    let mut lost = Vec::new();
    for (partition, lease) in held.iter_mut() {
        match leases.renew(*partition, lease.revision).await {
            Ok(Some(revision)) => {
                lease.revision = revision;
                lease.renewed = Instant::now();
            }
            Ok(None) => lost.push(*partition),
            Err(err) => {
                tracing::warn!(partition, error = %err, "cannot renew a partition lease");
                if lease.renewed.elapsed() > LEASE_GRACE {
                    lost.push(*partition);
                }
            }
        }
    }
    for partition in lost {
        if let Some(lease) = held.remove(&partition) {
            tracing::warn!(partition, "partition lease lost");
            lease.stop().await;
        }
    }
    let workers = match leases.live_workers().await {
        Ok(workers) if !workers.is_empty() => workers,
        Ok(_) => vec![state.worker_id()],
        Err(err) => {
            tracing::warn!(error = %err, "cannot list chat workers");
            return;
        }
    };
    let wanted = assignment::wanted(state.worker_id(), state.config().partitions, &workers);
    let unwanted: Vec<u32> = held
        .keys()
        .copied()
        .filter(|p| !wanted.contains(p))
        .collect();
    for partition in unwanted {
        if let Some(lease) = held.remove(&partition) {
            let revision = lease.revision;
            lease.stop().await;
            leases.release(partition, revision).await;
            tracing::info!(partition, "partition handed over");
        }
    }
    for partition in wanted {
        if held.contains_key(&partition) {
            continue;
        }
        match leases.acquire(partition).await {
            Ok(Some(revision)) => {
                let stop = CancellationToken::new();
                let task = AbortOnDropHandle::new(tokio::spawn(partition::own(
                    state.clone(),
                    leases.clone(),
                    partition,
                    stop.clone(),
                )));
                tracing::info!(partition, "partition acquired");
                held.insert(
                    partition,
                    Held {
                        revision,
                        renewed: Instant::now(),
                        stop,
                        task,
                    },
                );
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(partition, error = %err, "cannot acquire a partition"),
        }
    }
}
