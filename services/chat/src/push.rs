//! Fan-out to connected users: each frame is serialized once, then published to every
//! recipient's push subject, or, for a group conversation, once to every edge
//! (`push.many`, naming the recipients), so a message to 500 members is one NATS message.
//!
//! Frames of one conversation always take the same path to a user (a group's by the edges,
//! a private one's by the user's subject), so they reach the user in the order they were
//! pushed; the `stored` ack of a group message goes the group's way for the same reason, and
//! that of a private message travels with the sender's copy of the message.
//!
//! An ingest round's frames are collected ([`RoundPushes`]) and sent when the round has
//! decided every message: a user's frames of the round travel in one NATS message, a group's
//! in one `push.many` per audience, instead of one or two per message.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use mesh_contracts::chat::{ConversationId, ServerFrame, join_frames};
use mesh_nats::Bus;
use mesh_observability::metrics::CHAT_PUSHES;
use uuid::Uuid;

#[derive(Clone)]
pub struct Pusher {
    bus: Bus,
    /// The most bytes of frames one joined push carries ([`JOINED_MAX`], or less when the
    /// server takes smaller messages), known once connected.
    joined_most: usize,
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
        let joined_most = JOINED_MAX.min(bus.max_payload() / 4);
        Self { bus, joined_most }
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
        count(kind, recipients.len());
    }

    /// Sends `frame` to one user.
    pub async fn send_one(&self, user: Uuid, frame: &ServerFrame) {
        self.send(&[user], None, frame).await;
    }
}

/// Frames joined into one push up to this many bytes, and a quarter of the server's largest
/// message at most (a `push.many` adds up to 64 KiB of ids); a longer frame travels alone.
const JOINED_MAX: usize = 64 * 1024;

/// The pushes of one ingest round, sent together by [`RoundPushes::send`].
///
/// Each recipient receives its frames in the order they were added: a private conversation's
/// frames per user (their subject), a group's `stored` acks per sender and its other frames
/// per conversation (both by `push.many`). Acks go out before the groups' frames, so a sender
/// still sees the ack of a message before its own copy of it.
#[derive(Default)]
pub struct RoundPushes {
    users: HashMap<Uuid, Vec<String>>,
    group_acks: HashMap<Uuid, Vec<String>>,
    groups: HashMap<ConversationId, (Arc<[Uuid]>, Vec<String>)>,
}

impl RoundPushes {
    /// A stored message of `conversation`: `ack` for its `sender`, then `message` for its
    /// `audience` (the sender's devices included; none when it could not be resolved).
    pub fn stored(
        &mut self,
        conversation: ConversationId,
        sender: Uuid,
        ack: &ServerFrame,
        audience: Option<&Arc<[Uuid]>>,
        message: &ServerFrame,
    ) {
        let audience = audience.filter(|users| !users.is_empty());
        match Route::of(conversation) {
            Route::EachUser => {
                self.one(sender, ack);
                if let Some(audience) = audience {
                    let json = message.to_json();
                    for user in audience.iter() {
                        self.users.entry(*user).or_default().push(json.clone());
                    }
                    count(label(message), audience.len());
                }
            }
            Route::Edges => {
                self.group_acks
                    .entry(sender)
                    .or_default()
                    .push(ack.to_json());
                count(label(ack), 1);
                if let Some(audience) = audience {
                    let (_, frames) = self
                        .groups
                        .entry(conversation)
                        .or_insert_with(|| (audience.clone(), Vec::new()));
                    frames.push(message.to_json());
                    count(label(message), audience.len());
                }
            }
        }
    }

    /// `frame` for one user, on their own subject.
    pub fn one(&mut self, user: Uuid, frame: &ServerFrame) {
        self.users.entry(user).or_default().push(frame.to_json());
        count(label(frame), 1);
    }

    /// Publishes everything collected, in the order of [`RoundPushes::publishes`].
    pub async fn send(self, pusher: &Pusher) {
        for publish in self.publishes(pusher.joined_most) {
            match publish {
                Publish::User(user, payload) => pusher.bus.push(user, Bytes::from(payload)).await,
                Publish::Many(users, payload) => {
                    pusher.bus.push_many(&users, payload.as_bytes()).await
                }
            }
        }
    }

    /// What [`RoundPushes::send`] publishes: each user's frames, then the groups' acks, then
    /// the groups' other frames, joined into as few pushes of at most `most` bytes as they fit.
    fn publishes(&self, most: usize) -> Vec<Publish> {
        let mut out = Vec::new();
        let mut add = |frames: &[String], to: &dyn Fn(String) -> Publish| {
            out.extend(joined(frames, most).into_iter().map(to));
        };
        for (user, frames) in &self.users {
            add(frames, &|p| Publish::User(*user, p));
        }
        for (sender, frames) in &self.group_acks {
            let only: Arc<[Uuid]> = Arc::from([*sender]);
            add(frames, &|p| Publish::Many(only.clone(), p));
        }
        for (audience, frames) in self.groups.values() {
            add(frames, &|p| Publish::Many(audience.clone(), p));
        }
        out
    }
}

/// One NATS message of a round's pushes.
#[derive(Debug, PartialEq, Eq)]
enum Publish {
    /// To one user's subject.
    User(Uuid, String),
    /// To `push.many`, naming these users.
    Many(Arc<[Uuid]>, String),
}

/// Counts `recipients` pushes of a frame of type `kind` (`mesh_chat_pushes_total`).
fn count(kind: &'static str, recipients: usize) {
    CHAT_PUSHES
        .with_label_values(&[kind])
        .inc_by(recipients as u64);
}

/// `frames` in order, joined into payloads of at most `most` bytes each (a longer frame
/// alone).
fn joined(frames: &[String], most: usize) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (at, frame) in frames.iter().enumerate() {
        let grown = size + usize::from(at > start) + frame.len();
        if at > start && grown > most {
            payloads.push(join_frames(frames[start..at].iter().map(String::as_str)));
            start = at;
            size = frame.len();
        } else {
            size = grown;
        }
    }
    if start < frames.len() {
        payloads.push(join_frames(frames[start..].iter().map(String::as_str)));
    }
    payloads
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_contracts::chat::push_frames;

    fn frames_of(payloads: &[String]) -> Vec<String> {
        payloads
            .iter()
            .flat_map(|p| push_frames(p.as_bytes()))
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn frames_are_joined_in_order_up_to_the_limit() {
        let frames: Vec<String> = (0..300).map(|i| format!("{{\"n\":{i:0>1000}}}")).collect();
        let payloads = joined(&frames, JOINED_MAX);
        assert!(payloads.len() > 1, "{} payloads", payloads.len());
        assert!(payloads.iter().all(|p| p.len() <= JOINED_MAX));
        assert_eq!(frames_of(&payloads), frames);
    }

    fn message(conversation: &str, seq: i64, sender: Uuid) -> (ServerFrame, ServerFrame) {
        let stored = mesh_contracts::chat::ChatMessage {
            id: Uuid::now_v7(),
            conversation_id: conversation.to_owned(),
            seq,
            sender_id: sender,
            client_id: format!("c-{seq}"),
            kind: Default::default(),
            body: format!("body {seq}"),
            recalled: false,
            moderated: false,
            deleted: false,
            sent_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        (
            ServerFrame::Ack(mesh_contracts::chat::SendAck::stored(&stored)),
            ServerFrame::Message(stored),
        )
    }

    /// Each recipient's frames as its pushes deliver them, in order.
    fn received(publishes: &[Publish], user: Uuid) -> Vec<String> {
        let mut frames = Vec::new();
        for publish in publishes {
            let payload = match publish {
                Publish::User(to, payload) if *to == user => payload,
                Publish::Many(to, payload) if to.contains(&user) => payload,
                _ => continue,
            };
            frames.extend(frames_of(std::slice::from_ref(payload)));
        }
        frames
    }

    #[test]
    fn a_private_rounds_frames_reach_each_user_in_one_push_and_in_order() {
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let conversation = ConversationId::Private(ann.min(bob), ann.max(bob));
        let both: Arc<[Uuid]> = Arc::from([ann, bob]);
        let mut pushes = RoundPushes::default();
        let mut sent = Vec::new();
        for seq in 1..=3 {
            let (from, to) = if seq == 2 { (bob, ann) } else { (ann, bob) };
            let (ack, msg) = message(&conversation.to_string(), seq, from);
            pushes.stored(conversation, from, &ack, Some(&both), &msg);
            sent.push((from, to, ack.to_json(), msg.to_json()));
        }
        let publishes = pushes.publishes(JOINED_MAX);
        assert_eq!(publishes.len(), 2, "one push per user: {publishes:?}");
        for user in [ann, bob] {
            let expected: Vec<String> = sent
                .iter()
                .flat_map(|(from, _, ack, msg)| {
                    if *from == user {
                        vec![ack.clone(), msg.clone()]
                    } else {
                        vec![msg.clone()]
                    }
                })
                .collect();
            assert_eq!(received(&publishes, user), expected);
        }
    }

    #[test]
    fn a_group_sender_sees_each_ack_before_its_own_message() {
        let (amy, ben) = (Uuid::now_v7(), Uuid::now_v7());
        let group = ConversationId::Group(Uuid::now_v7());
        let members: Arc<[Uuid]> = Arc::from([amy, ben]);
        let mut pushes = RoundPushes::default();
        let mut messages = Vec::new();
        for (seq, from) in [(1, ben), (2, amy), (3, amy)] {
            let (ack, msg) = message(&group.to_string(), seq, from);
            pushes.stored(group, from, &ack, Some(&members), &msg);
            messages.push((ack.to_json(), msg.to_json()));
        }
        let publishes = pushes.publishes(JOINED_MAX);
        assert!(publishes.iter().all(|p| matches!(p, Publish::Many(..))));
        assert_eq!(publishes.len(), 3, "amy's acks, ben's ack, the messages");
        let amy_sees = received(&publishes, amy);
        let at = |frame: &String| amy_sees.iter().position(|f| f == frame).unwrap();
        for (ack, msg) in &messages[1..] {
            assert!(at(ack) < at(msg), "{amy_sees:?}");
        }
        let in_order: Vec<&String> = messages.iter().map(|(_, msg)| msg).collect();
        let amy_messages: Vec<&String> = amy_sees
            .iter()
            .filter(|f| f.contains("\"message\""))
            .collect();
        assert_eq!(amy_messages, in_order);
        let ben_sees = received(&publishes, ben);
        assert_eq!(ben_sees[0], messages[0].0, "ben's ack first");
        assert_eq!(
            &ben_sees[1..],
            &in_order.into_iter().cloned().collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn an_unresolved_audience_gets_nothing_but_the_sender_its_ack() {
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let conversation = ConversationId::Private(ann.min(bob), ann.max(bob));
        let (ack, msg) = message(&conversation.to_string(), 1, ann);
        let mut pushes = RoundPushes::default();
        pushes.stored(conversation, ann, &ack, None, &msg);
        assert_eq!(
            pushes.publishes(JOINED_MAX),
            vec![Publish::User(ann, ack.to_json())]
        );
    }

    #[test]
    fn a_frame_longer_than_the_limit_travels_alone() {
        let long = "x".repeat(JOINED_MAX + 1);
        let frames = vec!["a".to_owned(), long.clone(), "b".to_owned()];
        let payloads = joined(&frames, JOINED_MAX);
        assert_eq!(payloads, vec!["a".to_owned(), long, "b".to_owned()]);
        assert!(joined(&[], JOINED_MAX).is_empty());
        assert_eq!(
            joined(&["one".to_owned()], JOINED_MAX),
            vec!["one".to_owned()]
        );
        // A server that reported no limit yet: every frame alone.
        assert_eq!(joined(&frames, 0).len(), 3);
    }
}
