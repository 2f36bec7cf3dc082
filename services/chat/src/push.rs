//! Fan-out to connected users: each frame is serialized once, then published to every
//! recipient's push subject, or, for a group conversation, once to every edge
//! (`push.many`, naming the recipients), so a message to 500 members is one NATS message.
//!
//! Frames of one conversation always take the same path to a user (a group's by the edges,
//! a private one's by the user's subject), so they reach the user in the order they were
//! pushed; the `stored` ack of a group message goes the group's way for the same reason, and
//! that of a private message travels with the sender's copy of the message, in one push.

use bytes::Bytes;
use mesh_contracts::chat::{ConversationId, ServerFrame, join_frames};
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

/// How a frame reaches its recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// One publish per recipient, on their own subject.
    EachUser,
    /// One publish naming every recipient, to every edge.
    Edges,
}

impl Route {
    fn of(conversation: ConversationId) -> Self {
        match conversation {
            ConversationId::Group(_) => Route::Edges,
            ConversationId::Private(..) => Route::EachUser,
        }
    }
}

impl Pusher {
    pub fn new(bus: Bus) -> Self {
        Self { bus }
    }

    /// Sends `frame` to every user in `users` (skipping `except`), each on their own subject.
    pub async fn send(&self, users: &[Uuid], except: Option<Uuid>, frame: &ServerFrame) {
        self.publish(users, except, frame, Route::EachUser).await;
    }

    /// Sends a frame of `conversation` to `users` (skipping `except`) by that conversation's
    /// route: a group's through the edges in one message, a private one's per user.
    pub async fn send_in(
        &self,
        conversation: ConversationId,
        users: &[Uuid],
        except: Option<Uuid>,
        frame: &ServerFrame,
    ) {
        self.publish(users, except, frame, Route::of(conversation))
            .await;
    }

    async fn publish(
        &self,
        users: &[Uuid],
        except: Option<Uuid>,
        frame: &ServerFrame,
        route: Route,
    ) {
        let recipients: Vec<Uuid> = users
            .iter()
            .copied()
            .filter(|u| Some(*u) != except)
            .collect();
        if recipients.is_empty() {
            return;
        }
        self.publish_json(&recipients, label(frame), frame.to_json(), route)
            .await;
    }

    /// Publishes the JSON text of a frame of type `kind` to `recipients` by `route`, counted.
    async fn publish_json(
        &self,
        recipients: &[Uuid],
        kind: &'static str,
        json: String,
        route: Route,
    ) {
        match route {
            Route::EachUser => self.bus.push_to(recipients, Bytes::from(json)).await,
            Route::Edges => self.bus.push_many(recipients, json.as_bytes()).await,
        }
        CHAT_PUSHES
            .with_label_values(&[kind])
            .inc_by(recipients.len() as u64);
    }

    /// Sends `frame` to one user.
    pub async fn send_one(&self, user: Uuid, frame: &ServerFrame) {
        self.send(&[user], None, frame).await;
    }

    /// Pushes a stored message of `conversation`: `ack` to its `sender` first, then `message`
    /// to `audience` (the sender's devices included). On a private conversation's route the
    /// sender gets both in one push (two frames, one NATS message instead of two).
    pub async fn send_stored(
        &self,
        conversation: ConversationId,
        sender: Uuid,
        ack: &ServerFrame,
        audience: Option<&[Uuid]>,
        message: &ServerFrame,
    ) {
        let route = Route::of(conversation);
        let audience = audience.unwrap_or_default();
        if route == Route::Edges || !audience.contains(&sender) {
            self.publish(&[sender], None, ack, route).await;
            self.publish(audience, None, message, route).await;
            return;
        }
        let message_json = message.to_json();
        let both = join_frames([ack.to_json().as_str(), message_json.as_str()]);
        self.bus.push(sender, Bytes::from(both)).await;
        CHAT_PUSHES.with_label_values(&[label(ack)]).inc();
        CHAT_PUSHES.with_label_values(&[label(message)]).inc();
        let others: Vec<Uuid> = audience.iter().copied().filter(|u| *u != sender).collect();
        if !others.is_empty() {
            self.publish_json(&others, label(message), message_json, route)
                .await;
        }
    }
}
