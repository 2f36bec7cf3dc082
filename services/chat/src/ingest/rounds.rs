//! The store turns of one chat worker, shared by its partition owners. An owner with a batch
//! waits for a round; a round starts when a turn is free and the oldest waiting batch has
//! lingered long enough (or the waiting batches are large enough), takes the batches of the
//! owners waiting then, oldest first, until they hold enough messages, and takes them through
//! the steps together (one authorization call, one storing transaction). At most `turns` rounds
//! run at once, so while the store is busy the partitions' batches gather into fewer, larger
//! rounds; the linger does the same while it is not, so a trickle of messages is not stored
//! one tiny transaction after another as fast as the CPU allows (every round costs Postgres,
//! NATS and the worker about the same whatever it holds).
//!
//! Generic over what a batch is, so the gathering is tested without NATS or Postgres.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mesh_observability::metrics::CHAT_ROUND_STEP;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A batch handed to a round: the batch, how many messages it holds, where its verdict goes.
type Handed<T> = (T, usize, oneshot::Sender<bool>);

/// How rounds are cut.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Rounds running at once.
    pub turns: usize,
    /// A round stops gathering once it holds this many messages; waiting batches holding this
    /// many start a round without lingering.
    pub most: usize,
    /// How long the oldest waiting batch may wait for others before a free turn takes it.
    pub linger: Duration,
}

/// The owners waiting for a round, in the order they began to wait.
pub struct Rounds<T> {
    waiting: Mutex<Waiting<T>>,
    arrived: Notify,
    /// Messages in the rounds running now (gathered, not yet decided).
    running: Arc<AtomicUsize>,
}

struct Waiting<T> {
    queue: VecDeque<Ticket<T>>,
    /// Messages of the queued batches when their owners began to wait.
    messages: usize,
    /// No round starts any more: owners are answered `None` at once.
    closed: bool,
}

impl<T> Waiting<T> {
    /// Drops the tickets at the front whose owners stopped waiting, so they neither count
    /// towards a round's worth nor set the linger.
    fn forget_gone(&mut self) {
        while let Some(ticket) = self.queue.front()
            && ticket.call.is_closed()
        {
            self.messages = self.messages.saturating_sub(ticket.messages);
            self.queue.pop_front();
        }
    }
}

/// An owner waiting for a round.
struct Ticket<T> {
    call: oneshot::Sender<Call<T>>,
    since: Instant,
    messages: usize,
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
            waiting: Mutex::new(Waiting {
                queue: VecDeque::new(),
                messages: 0,
                closed: false,
            }),
            arrived: Notify::new(),
            running: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Messages this chain has yet to decide: those of the owners waiting (as they were when
    /// each began to wait) and those of the rounds running.
    pub fn load(&self) -> usize {
        self.lock().messages + self.running.load(Ordering::Relaxed)
    }

    /// Waits until a round takes this owner, whose batch holds `messages` so far; `None` when
    /// the rounds stopped first.
    pub async fn wait(&self, messages: usize) -> Option<Call<T>> {
        let (call, called) = oneshot::channel();
        {
            let mut waiting = self.lock();
            if waiting.closed {
                return None;
            }
            waiting.queue.push_back(Ticket {
                call,
                since: Instant::now(),
                messages,
            });
            waiting.messages += messages;
        }
        self.arrived.notify_one();
        called.await.ok()
    }

    /// Runs rounds as `pace` says until `stop`, passing each round's batches to `process`,
    /// which answers one verdict per batch, in order. Then answers every waiting owner, and
    /// every later one, `None` (rounds already started still finish).
    pub async fn run<F, R>(self: Arc<Self>, pace: Pace, process: F, stop: CancellationToken)
    where
        F: Fn(Vec<T>) -> R,
        R: Future<Output = Vec<bool>> + Send + 'static,
    {
        let turns = Arc::new(Semaphore::new(pace.turns.max(1)));
        self.serve(turns, pace, process, stop).await;
    }

    /// `run` with the turns given.
    async fn serve<F, R>(
        &self,
        turns: Arc<Semaphore>,
        pace: Pace,
        process: F,
        stop: CancellationToken,
    ) where
        F: Fn(Vec<T>) -> R,
        R: Future<Output = Vec<bool>> + Send + 'static,
    {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = self.dispatch(turns, pace, process) => {}
        }
        let mut waiting = self.lock();
        waiting.closed = true;
        waiting.queue.clear();
        waiting.messages = 0;
    }

    /// Starts rounds as turns free up (until the turns are closed).
    async fn dispatch<F, R>(&self, turns: Arc<Semaphore>, pace: Pace, process: F)
    where
        F: Fn(Vec<T>) -> R,
        R: Future<Output = Vec<bool>> + Send + 'static,
    {
        while let Ok(turn) = turns.clone().acquire_owned().await {
            self.ripe(pace).await;
            let (gathered, messages) = self.gather(pace.most).await;
            let running = Running::count(&self.running, messages);
            let (batches, verdicts): (Vec<T>, Vec<oneshot::Sender<bool>>) =
                gathered.into_iter().unzip();
            let round = process(batches);
            tokio::spawn(async move {
                let decided = round.await;
                for (verdict, decided) in verdicts.into_iter().zip(decided) {
                    let _ = verdict.send(decided);
                }
                drop((running, turn));
            });
        }
    }

    /// Returns once an owner waits and either the oldest has waited `pace.linger` or the
    /// waiting batches hold `pace.most` messages.
    async fn ripe(&self, pace: Pace) {
        loop {
            let now = Instant::now();
            let due = {
                let mut waiting = self.lock();
                waiting.forget_gone();
                match waiting.queue.front() {
                    None => None,
                    Some(_) if waiting.messages >= pace.most => Some(now),
                    Some(oldest) => Some(oldest.since + pace.linger),
                }
            };
            match due {
                Some(due) if due <= now => return,
                Some(due) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => return,
                        _ = self.arrived.notified() => {}
                    }
                }
                None => self.arrived.notified().await,
            }
        }
    }

    /// The batches of the owners waiting now, oldest first, until they hold `most` messages,
    /// and how many messages they hold; owners that stopped waiting are skipped. Waits for one
    /// when none is left.
    async fn gather(&self, most: usize) -> (Vec<(T, oneshot::Sender<bool>)>, usize) {
        let mut gathered = Vec::new();
        let mut messages = 0;
        loop {
            let next = {
                let mut waiting = self.lock();
                let next = waiting.queue.pop_front();
                if let Some(ticket) = &next {
                    waiting.messages = waiting.messages.saturating_sub(ticket.messages);
                }
                next
            };
            let Some(ticket) = next else {
                if !gathered.is_empty() {
                    return (gathered, messages);
                }
                self.arrived.notified().await;
                continue;
            };
            let (take, taken) = oneshot::channel();
            if ticket.call.send(Call { take }).is_err() {
                continue;
            }
            let Ok((batch, size, verdict)) = taken.await else {
                continue;
            };
            CHAT_ROUND_STEP
                .with_label_values(&["wait"])
                .observe(ticket.since.elapsed().as_secs_f64());
            gathered.push((batch, verdict));
            messages += size;
            if messages >= most {
                return (gathered, messages);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting<T>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running round's messages, counted in its chain's load until dropped (decided, or its
/// task unwound).
struct Running {
    count: Arc<AtomicUsize>,
    messages: usize,
}

impl Running {
    fn count(count: &Arc<AtomicUsize>, messages: usize) -> Self {
        count.fetch_add(messages, Ordering::Relaxed);
        Self {
            count: count.clone(),
            messages,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.count.fetch_sub(self.messages, Ordering::Relaxed);
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
        tokio::spawn(async move { rounds.wait(size).await?.hand(batch, size).await })
    }

    /// Yields until `rounds` has `count` owners waiting.
    async fn until_waiting(rounds: &Rounds<&'static str>, count: usize) {
        while rounds.lock().queue.len() != count {
            tokio::task::yield_now().await;
        }
    }

    /// One turn, no linger.
    fn pace(most: usize) -> Pace {
        Pace {
            turns: 1,
            most,
            linger: Duration::ZERO,
        }
    }

    /// Rounds whose processing records each round's batches and waits for `release` before
    /// answering every batch `true`.
    fn start(
        rounds: &Arc<Rounds<&'static str>>,
        pace: Pace,
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
        tokio::spawn(rounds.clone().run(pace, process, stop.clone()));
        (seen, stop)
    }

    #[tokio::test]
    async fn batches_waiting_while_the_turn_is_busy_share_the_next_round() {
        let rounds = Rounds::new();
        let release = Arc::new(Semaphore::new(0));
        let (seen, stop) = start(&rounds, pace(1000), release.clone());
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
        let (seen, stop) = start(&rounds, pace(5), release.clone());
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
        let (seen, stop) = start(&rounds, pace(1000), release);
        assert_eq!(kept.await.unwrap(), Some(true));
        assert_eq!(*seen.lock().unwrap(), vec![vec!["kept"]]);
        stop.cancel();
    }

    /// When each round started and what it held.
    type Started = Arc<Mutex<Vec<(Instant, Vec<&'static str>)>>>;

    /// Rounds over one free turn that record when each started and what it held.
    fn start_timed(
        rounds: &Arc<Rounds<&'static str>>,
        linger: Duration,
    ) -> (Started, CancellationToken) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let record = seen.clone();
        let process = move |batches: Vec<&'static str>| {
            record
                .lock()
                .unwrap()
                .push((Instant::now(), batches.clone()));
            async move { vec![true; batches.len()] }
        };
        let pace = Pace {
            turns: 1,
            most: 100,
            linger,
        };
        tokio::spawn(rounds.clone().run(pace, process, stop.clone()));
        (seen, stop)
    }

    /// The one round recorded in `seen`: how long after `began` it started, and what it held.
    fn only_round(seen: &Started, began: Instant) -> (Duration, Vec<&'static str>) {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one round");
        (seen[0].0 - began, seen[0].1.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_turn_lets_the_oldest_batch_linger_for_others() {
        let rounds = Rounds::new();
        let linger = Duration::from_millis(10);
        let (seen, stop) = start_timed(&rounds, linger);
        let began = Instant::now();
        let first = owner(&rounds, "a", 1);
        tokio::time::sleep(linger / 2).await;
        assert!(
            seen.lock().unwrap().is_empty(),
            "no round before the linger"
        );
        let second = owner(&rounds, "b", 1);
        assert_eq!(first.await.unwrap(), Some(true));
        assert_eq!(second.await.unwrap(), Some(true));
        let (after, batches) = only_round(&seen, began);
        assert_eq!(after, linger, "counted from the oldest batch");
        assert_eq!(batches, vec!["a", "b"]);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_batch_is_taken_once_it_lingered() {
        let rounds = Rounds::new();
        let linger = Duration::from_millis(10);
        let (seen, stop) = start_timed(&rounds, linger);
        let began = Instant::now();
        assert_eq!(owner(&rounds, "a", 1).await.unwrap(), Some(true));
        let (after, batches) = only_round(&seen, began);
        assert_eq!(after, linger);
        assert_eq!(batches, vec!["a"]);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_batches_holding_the_most_messages_do_not_linger() {
        let rounds = Rounds::new();
        let release = Arc::new(Semaphore::new(1));
        let pace = Pace {
            turns: 1,
            most: 4,
            linger: Duration::from_secs(3600),
        };
        let (seen, stop) = start(&rounds, pace, release);
        let started = Instant::now();
        let waiting = [owner(&rounds, "a", 2), owner(&rounds, "b", 2)];
        for owner in waiting {
            assert_eq!(owner.await.unwrap(), Some(true));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(*seen.lock().unwrap(), vec![vec!["a", "b"]]);
        stop.cancel();
    }

    #[tokio::test]
    async fn stopped_rounds_answer_waiting_and_later_owners_none() {
        let rounds: Arc<Rounds<&'static str>> = Rounds::new();
        let stop = CancellationToken::new();
        let turns = Arc::new(Semaphore::new(0));
        let process = |batches: Vec<&'static str>| async move { vec![true; batches.len()] };
        // No turn is ever free, so the owner waits until the rounds stop.
        let serving = rounds.clone();
        let stopping = stop.clone();
        let running =
            tokio::spawn(async move { serving.serve(turns, pace(1000), process, stopping).await });
        let waiting = owner(&rounds, "a", 1);
        until_waiting(&rounds, 1).await;
        stop.cancel();
        running.await.unwrap();
        assert_eq!(waiting.await.unwrap(), None);
        assert_eq!(owner(&rounds, "b", 1).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_round_that_ends_without_verdicts_answers_none() {
        let rounds: Arc<Rounds<&'static str>> = Rounds::new();
        let stop = CancellationToken::new();
        let process = |_batches: Vec<&'static str>| async { Vec::new() };
        tokio::spawn(rounds.clone().run(pace(1000), process, stop.clone()));
        assert_eq!(owner(&rounds, "a", 1).await.unwrap(), None);
        stop.cancel();
    }
}
