//! Fan-out to connected users: each frame is serialized once and published to every
//! recipient's push subject.

use bytes::Bytes;
use mesh_contracts::chat::ServerFrame;
use mesh_nats::Bus;
use mesh_observability::metrics::CHAT_PUSHES;
use uuid::Uuid;

#[derive(Clone)]
pub struct Pusher {
    bus: Bus,
}

/// The `type` label of a frame, for metrics.
fn label(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Ready { .. } => "ready",
        ServerFrame::Ack(_) => "ack",
        ServerFrame::Message(_) => "message",
        ServerFrame::Read { .. } => "read",
        ServerFrame::Typing { .. } => "typing",
        ServerFrame::Presence(_) => "presence",
        ServerFrame::Recall { .. } => "recall",
        ServerFrame::Sync { .. } => "sync",
        ServerFrame::Notification { .. } => "notification",
        ServerFrame::Error { .. } => "error",
        ServerFrame::Pong { .. } => "pong",
        ServerFrame::SessionRevoked => "session_revoked",
    }
}

impl Pusher {
    pub fn new(bus: Bus) -> Self {
        Self { bus }
    }

    /// Sends `frame` to every user in `users` (skipping `except`).
    pub async fn send(&self, users: &[Uuid], except: Option<Uuid>, frame: &ServerFrame) {
        let bytes = Bytes::from(frame.to_json());
        let recipients: Vec<Uuid> = users
            .iter()
            .copied()
            .filter(|u| Some(*u) != except)
            .collect();
        self.bus.push_to(&recipients, bytes).await;
        CHAT_PUSHES
            .with_label_values(&[label(frame)])
            .inc_by(recipients.len() as u64);
    }

    /// Sends `frame` to one user.
    pub async fn send_one(&self, user: Uuid, frame: &ServerFrame) {
        self.send(&[user], None, frame).await;
    }
}
