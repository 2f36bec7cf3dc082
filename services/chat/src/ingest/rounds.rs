//! The store turns of one chat worker, shared by its partition owners. An owner with a batch
//! waits for a round; a round starts when a turn is free and takes the batches of the owners
//! waiting then, oldest first, until they hold enough messages, and takes them through the steps
//! together (one authorization call, one storing transaction). At most `turns` rounds run at
//! once, so while the store is busy the partitions' batches gather into fewer, larger rounds
//! instead of one small transaction each contending for the CPU; an idle worker still stores a
//! lone batch at once.
//!
//! Generic over what a batch is, so the gathering is tested without NATS or Postgres.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

/// A batch handed to a round: the batch, how many messages it holds, where its verdict goes.
type Handed<T> = (T, usize, oneshot::Sender<bool>);

/// The owners waiting for a round, in the order they began to wait.
pub struct Rounds<T> {
    waiting: Mutex<VecDeque<oneshot::Sender<Call<T>>>>,
    arrived: Notify,
}

/// A round taking one waiting owner: the owner tops its batch up and hands it over.
pub struct Call<T> {
    take: oneshot::Sender<Handed<T>>,
}

impl<T> Call<T> {
    /// Hands `batch` (`messages` long) to the round; its verdict: true when it was stored (or
    /// refused) and acknowledged. `None` when the round ended without one (it panicked).
    pub async fn hand(self, batch: T, messages: usize) -> Option<bool> {
        let (verdict, answered) = oneshot::channel();
        self.take.send((batch, messages, verdict)).ok()?;
        answered.await.ok()
    }
}

impl<T: Send + 'static> Rounds<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
        })
    }

    /// Waits until a round takes this owner; `None` when the rounds stopped first.
    pub async fn wait(&self) -> Option<Call<T>> {
        let (call, called) = oneshot::channel();
        self.queue().push_back(call);
        self.arrived.notify_one();
        called.await.ok()
    }

    /// Runs rounds until `stop`: at most `turns` at once, each gathering waiting owners'
    /// batches until they hold `most` messages and passing them to `process`, which answers one
    /// verdict per batch, in order.
    pub async fn run<F, R>(
        self: Arc<Self>,
        turns: usize,
        most: usize,
        process: F,
        stop: CancellationToken,
    ) where
        F: Fn(Vec<T>) -> R,
        R: Future<Output = Vec<bool>> + Send + 'static,
    {
        let turns = Arc::new(Semaphore::new(turns.max(1)));
        loop {
            let turn = tokio::select! {
                _ = stop.cancelled() => return,
                turn = turns.clone().acquire_owned() => match turn {
                    Ok(turn) => turn,
                    Err(_) => return,
                },
            };
            let gathered = tokio::select! {
                _ = stop.cancelled() => return,
                gathered = self.gather(most) => gathered,
            };
            let (batches, verdicts): (Vec<T>, Vec<oneshot::Sender<bool>>) =
                gathered.into_iter().unzip();
            let round = process(batches);
            tokio::spawn(async move {
                let decided = round.await;
                for (verdict, decided) in verdicts.into_iter().zip(decided) {
                    let _ = verdict.send(decided);
                }
                drop(turn);
            });
        }
    }

    /// The batches of the owners waiting now (at least one: waits for the first), oldest
    /// first, until they hold `most` messages; owners that stopped waiting are skipped.
    async fn gather(&self, most: usize) -> Vec<(T, oneshot::Sender<bool>)> {
        let mut gathered = Vec::new();
        let mut messages = 0;
        loop {
            let next = self.queue().pop_front();
            let Some(call) = next else {
                if !gathered.is_empty() {
                    return gathered;
                }
                self.arrived.notified().await;
                continue;
            };
            let (take, taken) = oneshot::channel();
            if call.send(Call { take }).is_err() {
                continue;
            }
            let Ok((batch, size, verdict)) = taken.await else {
                continue;
            };
            gathered.push((batch, verdict));
            messages += size;
            if messages >= most {
                return gathered;
            }
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<oneshot::Sender<Call<T>>>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts an owner that waits for a round and hands `batch` (`size` messages).
    fn owner(
        rounds: &Arc<Rounds<&'static str>>,
        batch: &'static str,
        size: usize,
    ) -> tokio::task::JoinHandle<Option<bool>> {
        let rounds = rounds.clone();
        tokio::spawn(async move { rounds.wait().await?.hand(batch, size).await })
    }

    /// Yields until `rounds` has `count` owners waiting.
    async fn until_waiting(rounds: &Rounds<&'static str>, count: usize) {
        while rounds.queue().len() != count {
            tokio::task::yield_now().await;
        }
    }

    /// Rounds over one turn whose processing records each round's batches and waits for
    /// `release` before answering every batch `true`.
    fn start(
        rounds: &Arc<Rounds<&'static str>>,
        most: usize,
        release: Arc<Semaphore>,
    ) -> (Arc<Mutex<Vec<Vec<&'static str>>>>, CancellationToken) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let record = seen.clone();
        let process = move |batches: Vec<&'static str>| {
            record.lock().unwrap().push(batches.clone());
            let release = release.clone();
            async move {
                release.acquire().await.unwrap().forget();
                vec![true; batches.len()]
            }
        };
        tokio::spawn(rounds.clone().run(1, most, process, stop.clone()));
        (seen, stop)
    }

    #[tokio::test]
    async fn batches_waiting_while_the_turn_is_busy_share_the_next_round() {
        let rounds = Rounds::new();
        let release = Arc::new(Semaphore::new(0));
        let (seen, stop) = start(&rounds, 1000, release.clone());
        let first = owner(&rounds, "a", 3);
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let others = [
            owner(&rounds, "b", 2),
            owner(&rounds, "c", 5),
            owner(&rounds, "d", 1),
        ];
        until_waiting(&rounds, 3).await;
        release.add_permits(2);
        assert_eq!(first.await.unwrap(), Some(true));
        for other in others {
            assert_eq!(other.await.unwrap(), Some(true));
        }
        assert_eq!(*seen.lock().unwrap(), vec![vec!["a"], vec!["b", "c", "d"]]);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_round_stops_gathering_at_the_most_messages() {
        let rounds = Rounds::new();
        let release = Arc::new(Semaphore::new(0));
        let waiting = [
            owner(&rounds, "a", 3),
            owner(&rounds, "b", 3),
            owner(&rounds, "c", 3),
        ];
        until_waiting(&rounds, 3).await;
        let (seen, stop) = start(&rounds, 5, release.clone());
        release.add_permits(2);
        for owner in waiting {
            assert_eq!(owner.await.unwrap(), Some(true));
        }
        assert_eq!(*seen.lock().unwrap(), vec![vec!["a", "b"], vec!["c"]]);
        stop.cancel();
    }

    #[tokio::test]
    async fn an_owner_that_stopped_waiting_is_skipped() {
        let rounds = Rounds::new();
        let release = Arc::new(Semaphore::new(1));
        let gone = owner(&rounds, "gone", 1);
        until_waiting(&rounds, 1).await;
        gone.abort();
        let _ = gone.await;
        let kept = owner(&rounds, "kept", 1);
        until_waiting(&rounds, 2).await;
        let (seen, stop) = start(&rounds, 1000, release);
        assert_eq!(kept.await.unwrap(), Some(true));
        assert_eq!(*seen.lock().unwrap(), vec![vec!["kept"]]);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_round_that_ends_without_verdicts_answers_none() {
        let rounds: Arc<Rounds<&'static str>> = Rounds::new();
        let stop = CancellationToken::new();
        let process = |_batches: Vec<&'static str>| async { Vec::new() };
        tokio::spawn(rounds.clone().run(1, 1000, process, stop.clone()));
        assert_eq!(owner(&rounds, "a", 1).await.unwrap(), None);
        stop.cancel();
    }
}
