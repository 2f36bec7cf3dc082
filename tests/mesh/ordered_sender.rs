//! A client that follows the send contract on one WebSocket: it keeps a window of messages
//! unstored, resends a refused message and everything it sent after it, in order (after the
//! `retry_after_ms` asked), and checks that every message was stored once, in send order.

use std::collections::HashMap;

use serde_json::Value;
use tokio::time::{Duration, Instant};

use crate::ws::Ws;

pub struct OrderedSender {
    total: usize,
    window: usize,
    /// The next message to send (moved back to a refused one).
    next: usize,
    /// Each stored message's seq, by its index.
    stored: HashMap<usize, i64>,
    /// Not before then: the wait a refusal asked for.
    resume_at: Instant,
    /// Every message must be stored by then.
    deadline: Instant,
    pub overloaded: usize,
    pub unavailable: usize,
}

impl OrderedSender {
    /// Sends `total` messages, at most `window` unstored, all stored within two minutes.
    pub fn new(total: usize, window: usize) -> Self {
        Self {
            deadline: Instant::now() + Duration::from_secs(120),
            total,
            window,
            next: 0,
            stored: HashMap::new(),
            resume_at: Instant::now(),
            overloaded: 0,
            unavailable: 0,
        }
    }

    fn id(i: usize) -> String {
        format!("m-{i:04}")
    }

    pub fn stored(&self) -> usize {
        self.stored.len()
    }

    /// True once every message is stored; fails the test past the deadline.
    pub fn done(&self) -> bool {
        assert!(
            Instant::now() < self.deadline,
            "only {} of {} stored",
            self.stored.len(),
            self.total
        );
        self.stored.len() == self.total
    }

    fn lowest_unstored(&self) -> usize {
        (0..self.total)
            .find(|i| !self.stored.contains_key(i))
            .unwrap_or(self.total)
    }

    /// Sends what the window allows into `conversation`, once the last refusal's wait is over.
    pub async fn send_more(&mut self, ws: &mut Ws, conversation: &str) {
        if Instant::now() < self.resume_at {
            return;
        }
        let end = self.total.min(self.lowest_unstored() + self.window);
        while self.next < end {
            let i = self.next;
            ws.send_in(conversation, &Self::id(i), &format!("body {i}"))
                .await;
            self.next += 1;
        }
    }

    /// Sends again everything not known to be stored (a resend of a stored message is
    /// answered with its seq).
    pub fn resend_unanswered(&mut self) {
        self.next = self.lowest_unstored();
    }

    /// Takes in one frame; true when it said a message was stored.
    pub fn take(&mut self, frame: &Value) -> bool {
        if frame["type"] != "ack" {
            return false;
        }
        let client_id = frame["client_id"]
            .as_str()
            .expect("an ack names its message");
        let i: usize = client_id[2..].parse().expect("our client id");
        match (frame["status"].as_str(), frame["reason"].as_str()) {
            (Some("stored"), _) => {
                let seq = frame["seq"].as_i64().expect("a stored ack has a seq");
                assert_eq!(
                    *self.stored.entry(i).or_insert(seq),
                    seq,
                    "{i} stored twice"
                );
                true
            }
            (Some("rejected"), Some(reason @ ("overloaded" | "service_unavailable"))) => {
                if reason == "overloaded" {
                    self.overloaded += 1;
                    let wait = frame["retry_after_ms"]
                        .as_u64()
                        .expect("when to send again");
                    assert!(wait > 0, "{frame}");
                } else {
                    self.unavailable += 1;
                }
                if let Some(wait) = frame["retry_after_ms"].as_u64() {
                    self.resume_at = Instant::now() + Duration::from_millis(wait);
                }
                // The contract: resend the refused message, then everything after it, in order.
                self.next = self.next.min(i);
                false
            }
            (Some("accepted"), _) => false,
            _ => panic!("unexpected ack {frame}"),
        }
    }

    /// Every message stored once, gap-free, in send order; the client ids in that order.
    pub fn assert_stored_in_order(&self) -> Vec<String> {
        let seqs: Vec<i64> = (0..self.total).map(|i| self.stored[&i]).collect();
        let first = seqs[0];
        let expected: Vec<i64> = (first..first + self.total as i64).collect();
        assert_eq!(seqs, expected, "stored out of send order or with gaps");
        (0..self.total).map(Self::id).collect()
    }
}
