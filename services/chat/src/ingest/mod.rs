//! Partition ownership: every tick this worker announces itself, computes which partitions it
//! should own among the live workers, renews, releases and acquires leases accordingly, and runs
//! one owner task per held partition. The owners share the worker's store rounds (`rounds`), in
//! independent chains (`chains`, `MESH_CHAT_STORE_CHAINS`): each batch waits for the chain with
//! the fewest messages yet to decide.

mod ahead;
mod audiences;
mod backlog;
mod batch;
mod chains;
mod compaction;
mod leases;
mod partition;
mod rounds;
mod setback;
mod steps;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_nats::KvError;
use mesh_observability::metrics::CHAT_PARTITIONS_OWNED;
use mesh_observability::outage::Outage;
use mesh_observability::{outage_failed, outage_over};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use mesh_contracts::leases::LEASE_GRACE;

use crate::domain::assignment;
use crate::domain::incarnation::Bid;
use crate::state::State;
use chains::Chains;
use leases::Leases;
use partition::Taken;
use rounds::{Pace, Rounds};
use steps::Lot;

/// How long an owner handing its partition over may take to finish its batch (its storing
/// transaction's waits are bounded well below this).
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Held {
    revision: u64,
    /// The home chain of its owner's batches (`Chains::lightest`).
    chain: usize,
    renewed: Instant,
    stop: CancellationToken,
    task: AbortOnDropHandle<()>,
}

impl Held {
    /// Tells the owner to stop and waits for it at most `STOP_GRACE` (then it is aborted).
    async fn stop(mut self) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_GRACE, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!("partition owner did not stop in time");
        }
    }
}

impl Drop for Held {
    /// An owner dropped without `stop` (its lease was lost) is told to stop too, so a round
    /// retrying its batch lets the batch go.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Stops the owners of `handed` together, within one grace, and gives their leases back.
async fn hand_back(leases: &Leases, handed: Vec<(u32, Held)>) {
    for (_, lease) in &handed {
        lease.stop.cancel();
    }
    let stopped = futures::future::join_all(handed.into_iter().map(|(partition, lease)| {
        let revision = lease.revision;
        async move {
            lease.stop().await;
            (partition, revision)
        }
    }))
    .await;
    // Released together: without NATS each release waits out its timeout.
    futures::future::join_all(stopped.into_iter().map(|(partition, revision)| async move {
        leases.release(partition, revision).await;
        tracing::info!(partition, "partition handed over");
    }))
    .await;
}

/// Owns partitions until `shutdown` is cancelled, then hands them back.
pub async fn run(state: State, shutdown: CancellationToken) {
    let leases = loop {
        let Some(opened) = shutdown
            .run_until_cancelled(Leases::open(state.bus(), state.worker_id()))
            .await
        else {
            return;
        };
        match opened {
            Ok(leases) => break Arc::new(leases),
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the lease bucket; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let _compaction = AbortOnDropHandle::new(tokio::spawn(compaction::run(
        state.clone(),
        shutdown.clone(),
    )));
    let chains = Arc::new(Chains::new(state.config().store_chains));
    let _rounds: Vec<_> = chains
        .all()
        .iter()
        .map(|rounds| {
            AbortOnDropHandle::new(tokio::spawn(run_rounds(
                state.clone(),
                rounds.clone(),
                chains.turns_each(state.config().store_concurrency),
                shutdown.clone(),
            )))
        })
        .collect();
    let mut held: HashMap<u32, Held> = HashMap::new();
    let mut roster = Roster::default();
    // The lease bucket's outage, as this loop sees it (NATS away): logged once, not per call.
    let mut outage = Outage::default();
    let mut tick = tokio::time::interval(state.config().lease_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let failures_before = outage.failures();
        let listed = roster.current(&leases, &mut outage);
        let Some(workers) = shutdown.run_until_cancelled(listed).await else {
            break;
        };
        rebalance(
            &state,
            &leases,
            &chains,
            &mut held,
            workers,
            &shutdown,
            &mut outage,
        )
        .await;
        // Over once a whole tick went through: one call answering is not enough (listing,
        // renewing and acquiring can keep failing while announcing works).
        if outage.failures() == failures_before {
            outage_over!(outage, "the lease bucket answers again");
        }
        report_owned(&held);
    }
    // Together: without NATS each waits out its timeout.
    tokio::join!(hand_back(&leases, held.drain().collect()), leases.leave());
    CHAT_PARTITIONS_OWNED.set(0);
}

/// Sets `mesh_chat_partitions_owned` to the partitions `held`.
fn report_owned(held: &HashMap<u32, Held>) {
    CHAT_PARTITIONS_OWNED.set(i64::try_from(held.len()).unwrap_or(i64::MAX));
}

/// How many batches' worth of messages a round gathers at most (`ChatConfig::batch_size` each).
const ROUND_BATCHES: usize = 4;

/// The most frames one ingest round can push to one user with batches of `batch_size`: two per
/// message (a sender's `stored` ack and own copy), all sent when the round is decided. An
/// edge's queue per connection (`MESH_WS_SEND_QUEUE`) holds at least this, or a client that
/// reads its socket is cut off as a slow consumer by one round's burst.
pub fn most_frames_per_round(batch_size: usize) -> usize {
    2 * batch_size.max(1) * ROUND_BATCHES
}

/// Runs one chain's store rounds, at most `turns` at once, until `shutdown`.
async fn run_rounds(
    state: State,
    rounds: Arc<Rounds<Lot>>,
    turns: usize,
    shutdown: CancellationToken,
) {
    let config = state.config();
    let pace = Pace {
        turns,
        most: config.batch_size.max(1) * ROUND_BATCHES,
        linger: config.store_linger,
    };
    let stop = shutdown.clone();
    let process = move |lots| {
        let (state, stop) = (state.clone(), stop.clone());
        async move { steps::process(&state, lots, &stop).await }
    };
    rounds.run(pace, process, shutdown).await;
}

/// The live workers as last listed. Listing reads the whole bucket and can take seconds while
/// NATS fails over, so it runs in the background and a tick uses the latest list it has
/// instead of waiting (a tick must renew its leases every second).
#[derive(Default)]
struct Roster {
    known: Vec<Uuid>,
    listing: Option<tokio::task::JoinHandle<Result<Vec<Uuid>, KvError>>>,
}

impl Roster {
    /// The latest list; waits for one while none was read yet (a worker that just started
    /// should not grab partitions it is not assigned).
    async fn current(&mut self, leases: &Arc<Leases>, outage: &mut Outage) -> Vec<Uuid> {
        let listing = self.listing.get_or_insert_with(|| {
            let leases = leases.clone();
            tokio::spawn(async move { leases.live_workers().await })
        });
        if self.known.is_empty() || listing.is_finished() {
            let listed = listing.await;
            self.listing = None;
            match listed {
                Ok(Ok(workers)) => self.known = workers,
                Ok(Err(err)) => outage_failed!(outage, error = %err, "cannot list chat workers"),
                Err(err) => tracing::warn!(error = %err, "listing chat workers failed"),
            }
        }
        self.known.clone()
    }
}

async fn rebalance(
    state: &State,
    leases: &Arc<Leases>,
    chains: &Arc<Chains<Lot>>,
    held: &mut HashMap<u32, Held>,
    workers: Vec<Uuid>,
    shutdown: &CancellationToken,
    outage: &mut Outage,
) {
    if let Err(err) = leases.heartbeat().await {
        outage_failed!(outage, error = %err, "cannot announce this chat worker");
    }
    // Told to stop meanwhile: straight to the hand-back, without renewing or acquiring.
    if shutdown.is_cancelled() {
        return;
    }
    // Renew first (all at once, each call bounded): a lease we cannot renew for too long must
    // stop being used. An owner that lost its lease is dropped at once: its epoch is fenced
    // out, so it could not store anything anyway.
    let renewals = futures::future::join_all(held.iter().map(|(partition, lease)| async move {
        (*partition, leases.renew(*partition, lease.revision).await)
    }))
    .await;
    let mut lost = Vec::new();
    for (partition, renewed) in renewals {
        let Some(lease) = held.get_mut(&partition) else {
            continue;
        };
        match renewed {
            Ok(Some(revision)) if !lease.task.is_finished() => {
                lease.revision = revision;
                lease.renewed = Instant::now();
            }
            Ok(Some(revision)) => {
                // Its owner stopped by itself (fenced out): give the lease back so that it is
                // taken again under a new epoch.
                tracing::warn!(partition, "partition owner ended; releasing its lease");
                held.remove(&partition);
                leases.release(partition, revision).await;
            }
            Ok(None) => lost.push(partition),
            Err(err) => {
                outage_failed!(outage, partition, error = %err, "cannot renew a partition lease");
                if lease.renewed.elapsed() > LEASE_GRACE {
                    lost.push(partition);
                }
            }
        }
    }
    for partition in lost {
        if held.remove(&partition).is_some() {
            tracing::warn!(partition, "partition lease lost");
        }
    }
    // At once: without NATS the acquisitions below take 750 ms each.
    report_owned(held);
    // This worker announces itself every tick, so it counts even when the latest list was
    // read before its announcement.
    let mut workers = workers;
    if !workers.contains(&state.worker_id()) {
        workers.push(state.worker_id());
    }
    let wanted = assignment::wanted(state.worker_id(), state.config().partitions, &workers);
    let unwanted: Vec<u32> = held
        .keys()
        .copied()
        .filter(|p| !wanted.contains(p))
        .collect();
    let handed: Vec<(u32, Held)> = unwanted
        .into_iter()
        .filter_map(|partition| Some((partition, held.remove(&partition)?)))
        .collect();
    hand_back(leases, handed).await;
    // The lease bucket's incarnation, read before taking any lease (only when one is to be
    // taken): each lease is claimed with the bucket it was taken in.
    let bucket = if wanted.iter().all(|partition| held.contains_key(partition)) {
        None
    } else {
        match leases.bucket_created().await {
            Ok(created) => Some(created),
            Err(err) => {
                outage_failed!(outage, error = %err, "cannot read the lease bucket");
                return;
            }
        }
    };
    for partition in wanted {
        // Without NATS each acquisition waits out its timeout: a worker told to stop stops
        // acquiring at once rather than after all of them.
        if shutdown.is_cancelled() {
            break;
        }
        if held.contains_key(&partition) {
            continue;
        }
        let Some(bucket) = bucket else {
            break;
        };
        match leases.acquire(partition).await {
            Ok(Some(revision)) => {
                let stop = CancellationToken::new();
                let taken = Taken {
                    partition,
                    bid: Bid {
                        epoch: revision,
                        leases: bucket,
                    },
                };
                let chain = chains.home(held.values().map(|h| h.chain));
                let task = AbortOnDropHandle::new(tokio::spawn(partition::own(
                    state.clone(),
                    leases.clone(),
                    chains.clone(),
                    chain,
                    taken,
                    stop.clone(),
                )));
                tracing::info!(partition, "partition acquired");
                held.insert(
                    partition,
                    Held {
                        revision,
                        chain,
                        renewed: Instant::now(),
                        stop,
                        task,
                    },
                );
            }
            Ok(None) => {}
            Err(err) => {
                outage_failed!(outage, partition, error = %err, "cannot acquire a partition");
            }
        }
    }
}
