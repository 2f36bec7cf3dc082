//! Partition ownership: every tick this worker announces itself, computes which partitions it
//! should own among the live workers, renews, releases and acquires leases accordingly, and runs
//! one owner task per held partition. The owners share the worker's store rounds (`rounds`), in
//! independent chains (`MESH_CHAT_STORE_CHAINS`): a partition taken joins the chain that holds
//! the fewest of this worker's partitions.

mod ahead;
mod audiences;
mod backlog;
mod batch;
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
use leases::Leases;
use partition::Taken;
use rounds::{Pace, Rounds};
use steps::Lot;

/// How long an owner handing its partition over may take to finish its batch (its storing
/// transaction's waits are bounded well below this).
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Held {
    revision: u64,
    /// The chain of store rounds its owner waits for.
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
    let chains = Chains::new(state.config().store_chains);
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

/// The worker's independent chains of store rounds: each partition taken joins the chain that
/// holds the fewest of the worker's partitions (rendezvous hashing hands a worker partitions
/// at random, so their numbers say nothing of balance), and the worker's rounds are shared out
/// among the chains.
struct Chains<T>(Vec<Arc<Rounds<T>>>);

impl<T: Send + 'static> Chains<T> {
    fn new(chains: usize) -> Self {
        Self((0..chains.max(1)).map(|_| Rounds::new()).collect())
    }

    fn all(&self) -> &[Arc<Rounds<T>>] {
        &self.0
    }

    /// The chain a partition taken now joins, given the chains of those held, and its rounds.
    fn join(&self, held: impl Iterator<Item = usize>) -> (usize, Arc<Rounds<T>>) {
        let chain = least_used(self.0.len(), held);
        (chain, self.0[chain].clone())
    }

    /// Rounds each chain may run at once, so that together they run at most `rounds`.
    fn turns_each(&self, rounds: usize) -> usize {
        turns_each(rounds, self.0.len())
    }
}

/// Of `chains` chains, the one fewest of `held` (the chains of the partitions held) use; the
/// first of those on a tie.
fn least_used(chains: usize, held: impl Iterator<Item = usize>) -> usize {
    let mut used = vec![0usize; chains.max(1)];
    for chain in held {
        if let Some(count) = used.get_mut(chain) {
            *count += 1;
        }
    }
    (0..used.len()).min_by_key(|c| used[*c]).unwrap_or(0)
}

/// `rounds` shared out among `chains`, each getting at least one.
fn turns_each(rounds: usize, chains: usize) -> usize {
    (rounds / chains.max(1)).max(1)
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
    chains: &Chains<Lot>,
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
                let (chain, rounds) = chains.join(held.values().map(|h| h.chain));
                let task = AbortOnDropHandle::new(tokio::spawn(partition::own(
                    state.clone(),
                    leases.clone(),
                    rounds,
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_partition_taken_joins_the_least_used_chain() {
        // Taking six partitions one after another alternates between two chains.
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(least_used(2, held.iter().copied()));
        }
        assert_eq!(held, [0, 1, 0, 1, 0, 1]);
        // Chain 0 lost two partitions (handed over): the next two taken refill it.
        let after_losses = [0, 1, 1, 0, 1];
        assert_eq!(least_used(2, after_losses.into_iter()), 0);
        assert_eq!(least_used(2, [1, 1, 0, 1].into_iter()), 0);
        assert_eq!(least_used(3, [0, 1].into_iter()), 2);
        assert_eq!(least_used(1, [0, 0, 0].into_iter()), 0);
        assert_eq!(
            least_used(0, std::iter::empty()),
            0,
            "no chains counts as one"
        );
    }

    /// Runs `rounds`, recording each round's batches in `seen`: one turn, and a round starts
    /// only once three batches wait (the linger never runs out in a test).
    fn run_recorded(rounds: &Arc<Rounds<&'static str>>, seen: Arc<Mutex<Vec<Vec<&'static str>>>>) {
        let pace = Pace {
            turns: 1,
            most: 3,
            linger: Duration::from_secs(3600),
        };
        let process = move |batches: Vec<&'static str>| {
            seen.lock().unwrap().push(batches.clone());
            async move { vec![true; batches.len()] }
        };
        tokio::spawn(rounds.clone().run(pace, process, CancellationToken::new()));
    }

    #[tokio::test]
    async fn batches_of_two_chains_waiting_together_never_share_a_round() {
        let chains: Chains<&'static str> = Chains::new(2);
        let (first, one) = chains.join(std::iter::empty());
        let (second, other) = chains.join([first].into_iter());
        assert_ne!(first, second, "two partitions taken, two chains");
        let seen = Arc::new(Mutex::new(Vec::new()));
        for rounds in chains.all() {
            run_recorded(rounds, seen.clone());
        }
        // The owners begin to wait in this order (one runtime thread runs them as spawned):
        // rounds taking from one queue, one at a time or two side by side, would gather batches
        // of both chains into one round.
        let order = [
            (&one, "a1"),
            (&one, "a2"),
            (&other, "b1"),
            (&one, "a3"),
            (&other, "b2"),
            (&other, "b3"),
        ];
        let owners: Vec<_> = order
            .into_iter()
            .map(|(rounds, batch)| {
                let rounds = rounds.clone();
                tokio::spawn(async move { rounds.wait(1).await?.hand(batch, 1).await })
            })
            .collect();
        for owner in owners {
            let verdict = tokio::time::timeout(Duration::from_secs(10), owner)
                .await
                .expect("every batch is stored");
            assert_eq!(verdict.unwrap(), Some(true));
        }
        let mut rounds = seen.lock().unwrap().clone();
        rounds.sort();
        assert_eq!(
            rounds,
            [vec!["a1", "a2", "a3"], vec!["b1", "b2", "b3"]],
            "a round per chain"
        );
    }

    #[test]
    fn the_chains_together_run_at_most_the_workers_rounds() {
        assert_eq!(turns_each(4, 2), 2);
        assert_eq!(turns_each(4, 1), 4);
        assert_eq!(turns_each(5, 2), 2, "rounded down, never above the bound");
        assert_eq!(turns_each(1, 2), 1, "each chain runs at least one");
    }
}
