//! The worker's independent chains of store rounds. Each partition taken gets a home chain,
//! the one holding the fewest of the worker's partitions (rendezvous hashing hands a worker
//! partitions at random, so their numbers say nothing of balance). Each batch then goes to
//! the chain with the fewest messages still to decide, its home on a tie: partitions carry
//! unequal traffic (one busy group, a few talkative pairs), and a chain holding more of it
//! than the other would run longer rounds while the other idles. A partition has one batch
//! in flight at a time, so which chain stores it never changes its order.

use std::sync::Arc;

use super::rounds::Rounds;

pub struct Chains<T>(Vec<Arc<Rounds<T>>>);

impl<T: Send + 'static> Chains<T> {
    pub fn new(chains: usize) -> Self {
        Self((0..chains.max(1)).map(|_| Rounds::new()).collect())
    }

    pub fn all(&self) -> &[Arc<Rounds<T>>] {
        &self.0
    }

    /// The home chain of a partition taken now, given the home chains of those held.
    pub fn home(&self, held: impl Iterator<Item = usize>) -> usize {
        least_used(self.0.len(), held)
    }

    /// The chain the next batch of a partition whose home is `home` waits for: the one with
    /// the fewest messages yet to decide, `home` on a tie.
    pub fn lightest(&self, home: usize) -> &Arc<Rounds<T>> {
        let loads: Vec<usize> = self.0.iter().map(|rounds| rounds.load()).collect();
        &self.0[lightest(&loads, home)]
    }

    /// Rounds each chain may run at once, so that together they run at most `rounds`.
    pub fn turns_each(&self, rounds: usize) -> usize {
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

/// The index of the smallest of `loads`: `home` when it is among the smallest (or out of
/// range with no loads), else the first smallest.
fn lightest(loads: &[usize], home: usize) -> usize {
    let Some(least) = loads.iter().min() else {
        return 0;
    };
    if loads.get(home) == Some(least) {
        return home;
    }
    loads.iter().position(|load| load == least).unwrap_or(0)
}

/// `rounds` shared out among `chains`, each getting at least one.
fn turns_each(rounds: usize, chains: usize) -> usize {
    (rounds / chains.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::Semaphore;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::ingest::rounds::Pace;

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
        let first = chains.home(std::iter::empty());
        let second = chains.home([first].into_iter());
        assert_ne!(first, second, "two partitions taken, two chains");
        let (one, other) = (chains.all()[first].clone(), chains.all()[second].clone());
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

    #[test]
    fn a_batch_goes_to_the_chain_with_least_to_decide_and_home_on_a_tie() {
        assert_eq!(lightest(&[0, 0], 1), 1, "idle: the home chain");
        assert_eq!(lightest(&[0, 0], 0), 0);
        assert_eq!(lightest(&[300, 40], 0), 1, "the home chain is busier");
        assert_eq!(lightest(&[40, 300], 1), 0);
        assert_eq!(lightest(&[40, 40, 10], 0), 2);
        assert_eq!(lightest(&[5, 40, 5], 1), 0, "the first of the lightest");
        assert_eq!(lightest(&[7], 3), 0, "a home out of range");
        assert_eq!(lightest(&[], 0), 0);
    }

    /// An owner of a partition whose home is `home`: waits on the lightest chain when it
    /// begins to wait and hands `batch` (`size` messages) to the round that takes it.
    fn owner(
        chains: &Arc<Chains<&'static str>>,
        home: usize,
        batch: &'static str,
        size: usize,
    ) -> tokio::task::JoinHandle<Option<bool>> {
        let rounds = chains.lightest(home).clone();
        tokio::spawn(async move { rounds.wait(size).await?.hand(batch, size).await })
    }

    #[tokio::test]
    async fn a_busy_chain_is_passed_over_and_its_load_counts_waiting_and_running_messages() {
        let chains = Arc::new(Chains::new(2));
        // Chain 0's rounds wait for `hold` before deciding; chain 1's decide at once.
        let hold = Arc::new(Semaphore::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        for (chain, rounds) in chains.all().iter().enumerate() {
            let (hold, seen) = (hold.clone(), seen.clone());
            let process = move |batches: Vec<&'static str>| {
                seen.lock().unwrap().push((chain, batches.clone()));
                let hold = hold.clone();
                async move {
                    if chain == 0 {
                        hold.acquire().await.unwrap().forget();
                    }
                    vec![true; batches.len()]
                }
            };
            let pace = Pace {
                turns: 1,
                most: 1000,
                linger: Duration::ZERO,
            };
            tokio::spawn(rounds.clone().run(pace, process, CancellationToken::new()));
        }
        assert_eq!(chains.all()[0].load(), 0);

        // Idle chains: a batch goes home.
        let big = owner(&chains, 0, "big", 300);
        while chains.all()[0].load() != 300 {
            tokio::task::yield_now().await;
        }
        // Chain 0 holds 300 messages in a running round: a partition at home there is passed
        // over, and its batch is stored while that round still runs.
        let small = owner(&chains, 0, "small", 20);
        let verdict = tokio::time::timeout(Duration::from_secs(10), small)
            .await
            .expect("the batch passed over is stored while the busy round runs");
        assert_eq!(verdict.unwrap(), Some(true));
        assert!(!big.is_finished(), "chain 0's round is still held");
        assert_eq!(chains.all()[0].load(), 300, "its messages still count");
        assert_eq!(
            chains.all()[1].load(),
            0,
            "the round decided counts no more"
        );

        hold.add_permits(1);
        assert_eq!(big.await.unwrap(), Some(true));
        while chains.all()[0].load() != 0 {
            tokio::task::yield_now().await;
        }
        let mut rounds = seen.lock().unwrap().clone();
        rounds.sort();
        assert_eq!(rounds, [(0, vec!["big"]), (1, vec!["small"])]);
    }
}
