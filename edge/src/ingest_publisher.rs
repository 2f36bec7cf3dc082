//! The edge's publishing to the chat ingest partitions: the messages the edge accepts for a
//! partition while that partition's previous publish waits for JetStream's ack go out
//! together, as one ingest message of one line each, and each sender hears how its own
//! message fared.
//!
//! A partition has one publish in flight at a time, so its messages reach the stream in the
//! order they were handed over (a connection's messages keep their order). Nothing waits on
//! purpose and no task stands in between: a sender that finds its partition idle publishes
//! its message itself, at once and alone; one that finds a publish in flight queues its
//! message, and when that publish is answered, the first sender queued is told to publish
//! everything queued by then (up to [`MAX_LINES`] and [`MAX_BYTES`]). Under load each round
//! trip to JetStream so carries what queued during the one before, and JetStream stores,
//! acknowledges and delivers one message where it did several.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use mesh_nats::{Bus, ChatLine, JetStreamError};
use mesh_observability::metrics::CHAT_INGEST_PACKED;
use tokio::sync::oneshot;

/// The most messages one ingest message carries.
pub const MAX_LINES: usize = 64;
/// The most payload bytes one ingest message carries (far below NATS's `max_payload`); a
/// message that would go past it waits for the next publish.
pub const MAX_BYTES: usize = 128 * 1024;

/// How a publish fared: true when JetStream recognised the message as a duplicate (only a
/// message published alone carries a message id it can recognise).
type Outcome = Result<bool, String>;

/// What a queued sender is told.
enum Turn {
    /// Its message was published with others (or not: the error).
    Done(Outcome),
    /// The publish before is answered: it publishes what is queued, its own message first.
    Lead,
}

/// A message waiting for its partition's next publish.
struct Queued {
    line: ChatLine,
    /// Where its sender waits; none for the sender that publishes it.
    turn: Option<oneshot::Sender<Turn>>,
}

/// One partition's publishing state.
#[derive(Default)]
struct Partition {
    /// A publish is in flight (and whoever runs it passes the turn on when it ends).
    publishing: bool,
    /// Messages for the next publish, in the order they were handed over.
    waiting: VecDeque<Queued>,
}

/// The edge's publishing state, one per partition.
pub struct IngestPublisher {
    partitions: Vec<Mutex<Partition>>,
}

impl IngestPublisher {
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions: (0..partitions).map(|_| Mutex::default()).collect(),
        }
    }

    /// Publishes `msg_id`'s `payload` to `partition`, with the messages queued beside it, and
    /// waits for JetStream's ack: true when JetStream dropped it as a duplicate.
    pub async fn publish(
        &self,
        bus: &Bus,
        partition: u32,
        msg_id: String,
        payload: Bytes,
    ) -> Result<bool, JetStreamError> {
        let slot = usize::try_from(partition)
            .ok()
            .and_then(|index| self.partitions.get(index))
            .ok_or_else(|| JetStreamError::Publish(format!("no partition {partition}")))?;
        // Taken here, in the sender's span, so the message continues the sender's trace.
        let line = bus.chat_line(partition, msg_id, payload);
        let start = {
            let mut part = lock(slot);
            if part.publishing {
                let (turn, told) = oneshot::channel();
                part.waiting.push_back(Queued {
                    line,
                    turn: Some(turn),
                });
                Start::Queued(told)
            } else {
                part.publishing = true;
                Start::Leading(line)
            }
        };
        let lot = match start {
            Start::Leading(line) => vec![Queued { line, turn: None }],
            Start::Queued(told) => {
                let mut waiting = Waiting {
                    slot,
                    told: Some(told),
                };
                match waiting.turn().await {
                    Some(Turn::Done(outcome)) => return outcome.map_err(JetStreamError::Publish),
                    Some(Turn::Lead) => take_lot(&mut lock(slot)),
                    None => {
                        return Err(JetStreamError::Publish(
                            "the publish carrying it was abandoned".into(),
                        ));
                    }
                }
            }
        };
        // However this ends (answered, failed, or dropped with its connection), the turn
        // passes on, so the partition never stays stuck behind it.
        let _leading = Leading(slot);
        if lot.is_empty() {
            // Cannot happen: a sender told to lead is first in the queue until it takes it.
            return Err(JetStreamError::Publish("its message left the queue".into()));
        }
        publish_lot(bus, partition, lot)
            .await
            .map_err(JetStreamError::Publish)
    }
}

/// How a sender begins: publishing itself, or queued behind the publish in flight.
enum Start {
    Leading(ChatLine),
    Queued(oneshot::Receiver<Turn>),
}

/// A queued sender's wait for its turn.
struct Waiting<'a> {
    slot: &'a Mutex<Partition>,
    told: Option<oneshot::Receiver<Turn>>,
}

impl Waiting<'_> {
    /// What the sender was told; `None` when the publish carrying its message was dropped.
    async fn turn(&mut self) -> Option<Turn> {
        let told = self.told.as_mut()?.await.ok();
        self.told = None;
        told
    }
}

impl Drop for Waiting<'_> {
    /// A sender that stops waiting (its connection closed) after it was told to lead passes
    /// the turn on; its message stays queued and goes with the next publish.
    fn drop(&mut self) {
        if let Some(mut told) = self.told.take()
            && let Ok(Turn::Lead) = told.try_recv()
        {
            pass_on(&mut lock(self.slot));
        }
    }
}

/// Held while a sender publishes for its partition; passes the turn on when dropped.
struct Leading<'a>(&'a Mutex<Partition>);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        pass_on(&mut lock(self.0));
    }
}

fn lock(slot: &Mutex<Partition>) -> MutexGuard<'_, Partition> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The publish in flight ended: the first queued sender still waiting publishes next, or the
/// partition is idle. A queued message whose sender stopped waiting goes with the next
/// publish; one whose sender cannot be told to lead (it is gone) is dropped unpublished, as
/// if it had never been sent (its client, told nothing, sends it again).
fn pass_on(part: &mut Partition) {
    while let Some(front) = part.waiting.front_mut() {
        if let Some(turn) = front.turn.take()
            && turn.send(Turn::Lead).is_ok()
        {
            return;
        }
        part.waiting.pop_front();
    }
    part.publishing = false;
}

/// The lot a sender told to lead publishes: its own message (first in the queue), then what
/// is queued behind it, as far as [`lot_of`] allows.
fn take_lot(part: &mut Partition) -> Vec<Queued> {
    let Some(first) = part.waiting.pop_front() else {
        return Vec::new();
    };
    let (lot, left) = lot_of(first, |q| q.line.size(), || part.waiting.pop_front());
    if let Some(left) = left {
        part.waiting.push_front(left);
    }
    lot
}

/// Publishes `lot` as one ingest message and tells each queued sender of it how it went; the
/// outcome.
async fn publish_lot(bus: &Bus, partition: u32, lot: Vec<Queued>) -> Outcome {
    let (lines, turns): (Vec<ChatLine>, Vec<_>) = lot.into_iter().map(|q| (q.line, q.turn)).unzip();
    CHAT_INGEST_PACKED.observe(lines.len() as f64);
    let outcome = bus
        .publish_chat_lines(partition, &lines)
        .await
        .map_err(|err| err.to_string());
    if let Err(err) = &outcome {
        tracing::warn!(error = %err, partition, messages = lines.len(), "chat ingest publish failed");
    }
    for turn in turns.into_iter().flatten() {
        // A sender that stopped waiting (its connection closed) needs no answer.
        let _ = turn.send(Turn::Done(outcome.clone()));
    }
    outcome
}

/// The messages one publish carries: `first`, then what `next` has ready, up to [`MAX_LINES`]
/// and [`MAX_BYTES`] (`size` of each, plus a newline between two); a message that would go
/// past the bytes is left for the next publish.
fn lot_of<T>(
    first: T,
    size: impl Fn(&T) -> usize,
    mut next: impl FnMut() -> Option<T>,
) -> (Vec<T>, Option<T>) {
    let mut bytes = size(&first);
    let mut lot = vec![first];
    while lot.len() < MAX_LINES {
        let Some(queued) = next() else { break };
        let with = bytes + 1 + size(&queued);
        if with > MAX_BYTES {
            return (lot, Some(queued));
        }
        bytes = with;
        lot.push(queued);
    }
    (lot, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot(first: usize, ready: &[usize]) -> (Vec<usize>, Option<usize>, usize) {
        let mut ready = ready.iter().copied();
        let (lot, left) = lot_of(first, |size| *size, || ready.next());
        (lot, left, ready.count())
    }

    #[test]
    fn a_publish_takes_what_is_ready_in_order() {
        assert_eq!(
            lot(10, &[]),
            (vec![10], None, 0),
            "alone when nothing waits"
        );
        assert_eq!(lot(10, &[20, 30]), (vec![10, 20, 30], None, 0));
    }

    #[test]
    fn a_publish_stops_at_the_line_limit_and_leaves_the_rest_queued() {
        let ready = vec![1; MAX_LINES + 5];
        let (taken, left, still_queued) = lot(1, &ready);
        assert_eq!(taken.len(), MAX_LINES);
        assert_eq!(left, None);
        assert_eq!(
            still_queued, 6,
            "nothing past the limit is taken from the queue"
        );
    }

    #[test]
    fn a_message_past_the_byte_limit_waits_for_the_next_publish() {
        let half = MAX_BYTES / 2;
        let (taken, left, still_queued) = lot(half, &[half - 1, 5, 7]);
        assert_eq!(
            taken,
            vec![half, half - 1],
            "exactly at the limit with the newline"
        );
        assert_eq!(left, Some(5), "carried to the next publish, not lost");
        assert_eq!(still_queued, 1);
        let (taken, left, _) = lot(MAX_BYTES + 10, &[1]);
        assert_eq!(
            (taken, left),
            (vec![MAX_BYTES + 10], Some(1)),
            "a big one goes alone"
        );
    }

    /// A partition whose queue holds senders `alive` (still waiting) or gone, with the
    /// receivers of those alive.
    fn queue(alive: &[bool]) -> (Partition, Vec<Option<oneshot::Receiver<Turn>>>) {
        let mut part = Partition {
            publishing: true,
            waiting: VecDeque::new(),
        };
        let mut receivers = Vec::new();
        for alive in alive {
            let (turn, told) = oneshot::channel();
            receivers.push(alive.then_some(told));
            part.waiting.push_back(Queued {
                line: ChatLine::new(String::new(), Bytes::new()),
                turn: Some(turn),
            });
        }
        (part, receivers)
    }

    #[test]
    fn a_sender_gone_after_being_told_to_lead_passes_the_turn_on() {
        // The front sender was told to lead (its turn taken), the one behind still waits.
        let (mut part, mut receivers) = queue(&[true, true]);
        let front = part.waiting.front_mut().unwrap().turn.take().unwrap();
        assert!(front.send(Turn::Lead).is_ok());
        let slot = Mutex::new(part);
        let gone = Waiting {
            slot: &slot,
            told: receivers[0].take(),
        };
        drop(gone);
        assert!(
            matches!(receivers[1].as_mut().unwrap().try_recv(), Ok(Turn::Lead)),
            "the next sender leads"
        );
        assert!(lock(&slot).publishing);

        // Gone while merely waiting: nothing passes; its message goes with the next publish.
        let (part, mut receivers) = queue(&[true, true]);
        let slot = Mutex::new(part);
        drop(Waiting {
            slot: &slot,
            told: receivers[0].take(),
        });
        assert!(receivers[1].as_mut().unwrap().try_recv().is_err());
        assert_eq!(lock(&slot).waiting.len(), 2);
    }

    #[test]
    fn the_turn_passes_to_the_first_sender_still_waiting_or_the_partition_goes_idle() {
        let (mut part, mut receivers) = queue(&[false, true, true]);
        pass_on(&mut part);
        assert!(part.publishing);
        assert_eq!(
            part.waiting.len(),
            2,
            "the gone sender's message was dropped"
        );
        assert!(matches!(
            receivers[1].as_mut().unwrap().try_recv(),
            Ok(Turn::Lead)
        ));
        assert!(
            receivers[2].as_mut().unwrap().try_recv().is_err(),
            "told nothing yet"
        );

        let (mut idle, _) = queue(&[]);
        pass_on(&mut idle);
        assert!(!idle.publishing, "nothing queued: idle");
        let (mut gone, _) = queue(&[false, false]);
        pass_on(&mut gone);
        assert!(!gone.publishing && gone.waiting.is_empty());
    }
}
