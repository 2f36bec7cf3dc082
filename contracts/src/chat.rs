//! The chat service's wire types: conversation ids and partitions, the message the edge puts on
//! the ingest stream, the WebSocket/SSE frames, the REST bodies and the chat RPC operations.
//!
//! A frame pushed to `<prefix>.push.user.<id>` is already the JSON text a client receives, so
//! the edge forwards it without decoding it again. One push may carry several frames for the
//! same user, one per line ([`push_frames`]): the sender's `stored` ack and their own message
//! travel as one NATS message.

use std::fmt;

use poem_openapi::{Enum, Object};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ErrorCode;
use crate::rpc;
use crate::rpc::Service;
use crate::social::{FriendRequest, GroupJoinRequest, GroupRole};
use crate::user::Empty;

/// Largest message body, in bytes of UTF-8.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest client message id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Largest page of history or of the conversation list.
pub const MAX_HISTORY_LIMIT: u32 = 200;
/// History page size when a client does not ask for one.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// Most users one presence query may ask about.
pub const MAX_PRESENCE_USERS: usize = 200;

/// Why a message's fields are refused. The edge checks them before it accepts a message, and
/// the chat worker checks them again, since anyone on the bus could have published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeViolation {
    pub code: ErrorCode,
    pub detail: &'static str,
}

impl ShapeViolation {
    const fn new(code: ErrorCode, detail: &'static str) -> Self {
        Self { code, detail }
    }
}

/// The client's message id: 1-64 bytes of `A-Z a-z 0-9 _ . : -`.
pub fn check_client_id(id: &str) -> Result<(), ShapeViolation> {
    let plain = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if (1..=MAX_CLIENT_ID_LEN).contains(&id.len()) && plain {
        Ok(())
    } else {
        Err(ShapeViolation::new(
            ErrorCode::ValidationFailed,
            "client_id must be 1-64 characters of A-Z a-z 0-9 _ . : -",
        ))
    }
}

/// True for characters no stored text may hold: NUL and the other C0/C1 control characters
/// except tab, line feed and carriage return (Postgres refuses NUL in `text`; the rest are
/// invisible and break clients), and the Unicode noncharacters U+FFFE/U+FFFF.
pub fn is_forbidden_char(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// A message body: not empty, at most [`MAX_BODY_BYTES`] of UTF-8, no forbidden characters.
pub fn check_body(body: &str) -> Result<(), ShapeViolation> {
    if body.is_empty() {
        return Err(ShapeViolation::new(
            ErrorCode::ValidationFailed,
            "the message body is empty",
        ));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(ShapeViolation::new(
            ErrorCode::MessageTooLarge,
            "the message body exceeds 16 KiB",
        ));
    }
    if body.chars().any(is_forbidden_char) {
        return Err(ShapeViolation::new(
            ErrorCode::InvalidText,
            "the message body holds a NUL or another control character",
        ));
    }
    Ok(())
}

/// A conversation: `p:<lower user id>:<higher user id>` between two users, or `g:<group id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConversationId {
    Private(Uuid, Uuid),
    Group(Uuid),
}

impl ConversationId {
    /// The private conversation of two users, whichever order they are given in.
    pub fn private(a: Uuid, b: Uuid) -> Self {
        if a <= b {
            Self::Private(a, b)
        } else {
            Self::Private(b, a)
        }
    }

    /// Parses the canonical text form; anything else (including a private id whose users are
    /// out of order or equal) is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        if let Some(rest) = raw.strip_prefix("g:") {
            return Uuid::try_parse(rest).ok().map(Self::Group);
        }
        let rest = raw.strip_prefix("p:")?;
        let (a, b) = rest.split_once(':')?;
        let (a, b) = (Uuid::try_parse(a).ok()?, Uuid::try_parse(b).ok()?);
        // Only the canonical spelling, so one conversation has one id.
        (a < b && format!("p:{a}:{b}") == raw).then_some(Self::Private(a, b))
    }

    /// True when `user` is one of the two users of a private conversation.
    pub fn is_party(&self, user: Uuid) -> bool {
        matches!(self, Self::Private(a, b) if *a == user || *b == user)
    }

    /// The other user of a private conversation.
    pub fn peer_of(&self, user: Uuid) -> Option<Uuid> {
        match *self {
            Self::Private(a, b) if a == user => Some(b),
            Self::Private(a, b) if b == user => Some(a),
            _ => None,
        }
    }

    /// The ingest partition of this conversation among `partitions` (FNV-1a of its text form),
    /// the same on every edge and worker.
    pub fn partition(&self, partitions: u32) -> u32 {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in self.to_string().bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        hash % partitions.max(1)
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Private(a, b) => write!(f, "p:{a}:{b}"),
            Self::Group(g) => write!(f, "g:{g}"),
        }
    }
}

/// What a message body holds; the mesh stores every kind as text.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Enum, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum MessageKind {
    #[default]
    Text,
    /// The body is a URL or a JSON description of an image.
    Image,
    /// The body is a URL or a JSON description of a file.
    File,
    /// Application-defined content, usually JSON.
    Custom,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::File => "file",
            Self::Custom => "custom",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Text, Self::Image, Self::File, Self::Custom]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }
}

/// A message the edge accepted, as it travels on the ingest stream to the partition owner:
/// an ingest message holds one or more, one compact JSON `Inbound` per line
/// ([`join_ingest_lines`], [`ingest_lines`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    pub conversation_id: String,
    pub sender_id: Uuid,
    pub client_id: String,
    pub kind: MessageKind,
    pub body: String,
    /// When the edge published it, in Unix milliseconds (for the accept-to-store metric).
    pub accepted_at_ms: i64,
}

impl Inbound {
    /// The `Nats-Msg-Id` of the ingest publish: sender and client id, so a resend within the
    /// stream's duplicate window is dropped by JetStream itself.
    pub fn msg_id(&self) -> String {
        format!("{}:{}", self.sender_id, self.client_id)
    }
}

/// What a partition's owner reports to the edges after each batch: how many messages of the
/// partition are accepted but not stored yet (those waiting in the stream plus those in the
/// owner's hands). Edges refuse new messages to a partition whose backlog reached their bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatBacklog {
    /// The owner's epoch: a report of an older epoch than one already seen is stale.
    pub epoch: u64,
    pub unstored: u64,
}

/// How often a partition's owner looks at its backlog, and reports it when it changed.
pub const BACKLOG_REPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How long an unchanged backlog goes unreported at most (also while a batch is stuck
/// retrying), well within `BACKLOG_REPORT_STALE`, so the edges always hold a fresh report.
pub const BACKLOG_REPORT_QUIET: std::time::Duration = std::time::Duration::from_millis(500);

/// A backlog report older than this is ignored: its owner is gone, and until the next owner
/// reports, JetStream keeps what is accepted.
pub const BACKLOG_REPORT_STALE: std::time::Duration = std::time::Duration::from_secs(1);

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object, JsonSchema)]
pub struct ChatMessage {
    pub id: Uuid,
    pub conversation_id: String,
    /// Position in the conversation: 1, 2, 3, ... without gaps.
    pub seq: i64,
    pub sender_id: Uuid,
    /// The id the sender's client gave the message.
    pub client_id: String,
    pub kind: MessageKind,
    /// Empty once recalled, or for the reader who deleted it.
    pub body: String,
    pub recalled: bool,
    /// Recalled by a moderator (`messages:moderate`), not by its sender.
    #[serde(default)]
    pub moderated: bool,
    /// The reader deleted this message from their own view (kept as a placeholder so seqs
    /// stay gap-free).
    #[serde(default)]
    pub deleted: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "crate::formats::rfc3339")]
    pub sent_at: OffsetDateTime,
}

/// Where a sent message is: accepted by the edge, stored by the chat worker, or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum AckStatus {
    Accepted,
    Stored,
    Rejected,
}

/// The answer to one `send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object, JsonSchema)]
pub struct SendAck {
    pub client_id: String,
    pub status: AckStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub message_id: Option<Uuid>,
    /// Why a message was rejected: a stable error code such as `not_friends` or `muted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
    /// With `rejected` `overloaded`, and `service_unavailable` for a send held back behind an
    /// `overloaded` one: how long to wait before sending again, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub retry_after_ms: Option<u64>,
}

impl SendAck {
    pub fn accepted(client_id: String, conversation_id: String) -> Self {
        Self {
            client_id,
            status: AckStatus::Accepted,
            conversation_id: Some(conversation_id),
            seq: None,
            message_id: None,
            reason: None,
            retry_after_ms: None,
        }
    }

    pub fn stored(message: &ChatMessage) -> Self {
        Self {
            client_id: message.client_id.clone(),
            status: AckStatus::Stored,
            conversation_id: Some(message.conversation_id.clone()),
            seq: Some(message.seq),
            message_id: Some(message.id),
            reason: None,
            retry_after_ms: None,
        }
    }

    /// `rejected` `overloaded`, with when to send again.
    pub fn overloaded(client_id: String, conversation_id: String, retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::rejected(client_id, Some(conversation_id), ErrorCode::Overloaded)
        }
    }

    pub fn rejected(client_id: String, conversation_id: Option<String>, reason: ErrorCode) -> Self {
        Self {
            client_id,
            status: AckStatus::Rejected,
            conversation_id,
            seq: None,
            message_id: None,
            reason: Some(reason.as_str().to_owned()),
            retry_after_ms: None,
        }
    }
}

/// Frames a client sends over the WebSocket (`type` names the variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Authenticates a socket opened without a token (it must come first: any other frame
    /// first closes the socket 4401), or replaces the token before it expires.
    Auth { token: String },
    /// Sends a message to a conversation, or to a user (their private conversation).
    Send(SendMessage),
    /// Marks a conversation read up to `seq`.
    Read { conversation_id: String, seq: i64 },
    /// Asks for the messages after `after_seq` (gap fill after a reconnect).
    Sync {
        conversation_id: String,
        after_seq: i64,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Tells the conversation's other members that the caller is typing. At most one per
    /// conversation every 2 s for all of a user's sockets on an edge (extras are dropped); an
    /// id that is no conversation is answered `error` `unknown_conversation`.
    Typing { conversation_id: String },
    Ping {
        #[serde(default)]
        nonce: Option<String>,
    },
}

/// A message to send, by WebSocket or REST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object, JsonSchema)]
pub struct SendMessage {
    /// The client's id for this message (1-64 bytes); resending with the same id never stores
    /// it twice.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub client_id: String,
    /// The conversation (`p:<user>:<user>` or `g:<group id>`); or give `to` instead.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// A user to message privately, instead of `conversation_id`.
    #[serde(default)]
    pub to: Option<Uuid>,
    #[serde(default)]
    #[oai(default)]
    pub kind: MessageKind,
    /// At most 16 KiB of UTF-8.
    pub body: String,
}

/// Frames the server sends over the WebSocket or SSE (`type` names the variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The socket is authenticated.
    Ready {
        user_id: Uuid,
        session_id: Uuid,
    },
    Ack(SendAck),
    Message(ChatMessage),
    /// Someone read a conversation up to `read_seq` (the other side of a private chat, or the
    /// caller on another device).
    Read {
        conversation_id: String,
        user_id: Uuid,
        read_seq: i64,
    },
    Typing {
        conversation_id: String,
        user_id: Uuid,
    },
    Presence(Presence),
    /// A message was recalled by its sender.
    Recall {
        conversation_id: String,
        message_id: Uuid,
        seq: i64,
        /// True when a moderator recalled it.
        #[serde(default)]
        by_moderation: bool,
    },
    /// The answer to a `sync`: up to `limit` messages after `after_seq`, in order.
    Sync {
        conversation_id: String,
        messages: Vec<ChatMessage>,
        has_more: bool,
    },
    /// Something happened that concerns the user: `{"type":"notification","kind":...,"data":{...}}`
    /// (the kinds and their data are [`Notification`]'s variants).
    Notification(Notification),
    Error {
        code: String,
        message: String,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// The session was signed out; the socket closes next.
    SessionRevoked,
}

/// Joins accepted messages (each the compact JSON of an [`Inbound`]) into one ingest payload,
/// one per line, in the order given: the messages an edge accepts for a partition while its
/// previous publish waits for JetStream's ack go out together.
pub fn join_ingest_lines<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    messages.into_iter().collect::<Vec<_>>().join(&b'\n')
}

/// The messages of an ingest payload, in order: each line is one (a payload without a
/// newline is one message). Nothing is skipped, an empty line included, so whatever a line
/// holds is read and, when it is no `Inbound`, set aside on its own.
pub fn ingest_lines(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload.split(|byte| *byte == b'\n')
}

/// Joins frames into one push payload, one per line, in the order given. Compact JSON text
/// never holds a raw newline (one inside a string is escaped), so a line is a frame.
pub fn join_frames<'a>(frames: impl IntoIterator<Item = &'a str>) -> String {
    frames.into_iter().collect::<Vec<_>>().join("\n")
}

/// The frames of a push payload, in order (a payload of one frame is that frame); empty lines
/// carry nothing and are skipped.
pub fn push_frames(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload
        .split(|byte| *byte == b'\n')
        .filter(|frame| !frame.is_empty())
}

impl ServerFrame {
    /// The frame's JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("frames always serialize")
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code: code.as_str().to_owned(),
            message: message.into(),
        }
    }
}

/// What a `notification` frame tells a user, as `"kind"` and `"data"` next to the frame's
/// `"type"`. Group notifications name the group by `group_id`; requests are the whole
/// request as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Notification {
    /// To the addressee of a new friend request.
    FriendRequestReceived { request: FriendRequest },
    /// To the sender, when the addressee accepted.
    FriendRequestAccepted { request: FriendRequest },
    /// To the sender, when the addressee rejected.
    FriendRequestRejected { request: FriendRequest },
    /// To the other user, when `user_id` ended the friendship (removed or blocked them).
    Unfriended { user_id: Uuid },
    /// To a user invited into a group (see [`GroupInvitation`]).
    GroupInvitation(GroupInvitation),
    /// To a group's owner and admins: someone asks to join or was invited, awaiting their
    /// decision.
    JoinRequestReceived { request: GroupJoinRequest },
    /// To the user who asked to join, when an owner or admin approved.
    JoinRequestApproved { request: GroupJoinRequest },
    /// To the user who asked to join, when an owner or admin rejected.
    JoinRequestRejected { request: GroupJoinRequest },
    /// To the member removed from a group.
    Kicked { group_id: Uuid },
    /// To every member of a dissolved group.
    GroupDissolved { group_id: Uuid },
    /// To the member whose role the owner changed.
    RoleChanged { group_id: Uuid, role: GroupRole },
    /// To the member muted, with the end of the mute.
    Muted {
        group_id: Uuid,
        #[serde(with = "time::serde::rfc3339")]
        #[schemars(schema_with = "crate::formats::rfc3339")]
        muted_until: OffsetDateTime,
    },
    /// To the member whose mute was lifted.
    Unmuted { group_id: Uuid },
    /// To the sender of a message a moderator recalled.
    MessageModerated {
        conversation_id: String,
        message_id: Uuid,
    },
    /// To the old and the new owner of a group.
    OwnershipTransferred {
        group_id: Uuid,
        from: Uuid,
        to: Uuid,
    },
}

/// The data of a `group_invitation`: a pending invitation (`{"request":{...}}`, approved by the
/// group's owner or an admin) or, where the inviter may admit, the group joined
/// (`{"group_id":...,"invited_by":...,"joined":true}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GroupInvitation {
    Pending {
        request: GroupJoinRequest,
    },
    Joined {
        group_id: Uuid,
        invited_by: Uuid,
        /// Always true.
        joined: bool,
    },
}

/// Whether a user is online, and when they were last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object, JsonSchema)]
pub struct Presence {
    pub user_id: Uuid,
    pub online: bool,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(schema_with = "crate::formats::rfc3339_or_null")]
    pub last_seen: Option<OffsetDateTime>,
}

// ---- REST and RPC bodies -------------------------------------------------------------------

/// One conversation as the caller sees it.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct Conversation {
    pub id: String,
    /// The other user, for a private conversation.
    #[serde(default)]
    pub peer_id: Option<Uuid>,
    /// The group, for a group conversation.
    #[serde(default)]
    pub group_id: Option<Uuid>,
    pub last_seq: i64,
    pub read_seq: i64,
    /// `last_seq - read_seq`.
    pub unread: i64,
    #[serde(default)]
    pub last_message: Option<ChatMessage>,
    pub muted: bool,
    pub pinned: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListConversationsRequest {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only conversations changed after this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
}

/// A page of conversations, most recently changed first.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct ConversationPage {
    pub items: Vec<Conversation>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub conversation_id: String,
    /// Messages with a seq greater than this, oldest first.
    pub after_seq: Option<i64>,
    /// Messages with a seq lower than this, newest first (the default: the latest messages).
    pub before_seq: Option<i64>,
    pub limit: Option<u32>,
}

/// A page of history.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct MessagePage {
    pub items: Vec<ChatMessage>,
    /// True when more messages lie further in the same direction.
    pub has_more: bool,
    /// The conversation's latest seq.
    pub last_seq: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarkReadRequest {
    pub conversation_id: String,
    pub seq: i64,
}

/// `POST /v1/conversations/{id}/read`.
#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct MarkReadBody {
    /// Read up to and including this seq; a lower value than the current one changes nothing.
    #[oai(validator(minimum(value = "0")))]
    pub seq: i64,
}

/// The caller's read position in a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct ReadState {
    pub conversation_id: String,
    pub read_seq: i64,
    pub last_seq: i64,
    pub unread: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRef {
    pub conversation_id: String,
    pub message_id: Uuid,
}

/// Finds the caller's own message by the client id they gave it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindMessageRequest {
    pub conversation_id: String,
    pub client_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoundMessage {
    pub message: Option<ChatMessage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversationRef {
    pub conversation_id: String,
}

/// Changes to the caller's own settings of a conversation; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Object)]
pub struct SettingsBody {
    /// No unread badge pushes for this conversation.
    pub muted: Option<bool>,
    /// Listed first.
    pub pinned: Option<bool>,
    /// Hidden from the list until a new message arrives.
    pub hidden: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateSettingsRequest {
    pub conversation_id: String,
    pub settings: SettingsBody,
}

/// The caller's settings of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct ConversationSettings {
    pub conversation_id: String,
    pub muted: bool,
    pub pinned: bool,
    pub hidden: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceRequest {
    pub user_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Object)]
pub struct PresenceList {
    pub items: Vec<Presence>,
}

/// Sent by the edge when a user's first connection opens or last connection closes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceChange {
    pub online: bool,
}

// ---- operations ----------------------------------------------------------------------------

rpc!(
    /// The caller's conversations, most recently changed first.
    ListConversations, Service::Chat, "list_conversations", ListConversationsRequest => ConversationPage
);
rpc!(
    /// Messages of a conversation the caller belongs to, by seq range.
    History, Service::Chat, "history", HistoryRequest => MessagePage
);
rpc!(
    /// The caller's message with this client id, once stored (answers a resend that JetStream
    /// dropped as a duplicate).
    FindMessage, Service::Chat, "find_message", FindMessageRequest => FoundMessage
);
rpc!(
    /// Moves the caller's read position forward and tells the other side.
    MarkRead, Service::Chat, "mark_read", MarkReadRequest => ReadState
);
rpc!(
    /// The sender takes a message back within the recall window.
    Recall, Service::Chat, "recall", MessageRef => Empty
);
rpc!(
    /// Hides one message from the caller's own history.
    DeleteForMe, Service::Chat, "delete_for_me", MessageRef => Empty
);
rpc!(
    /// Changes the caller's settings of a conversation.
    UpdateSettings, Service::Chat, "update_settings", UpdateSettingsRequest => ConversationSettings
);
rpc!(
    /// Pushes a typing indicator to the conversation's other members.
    Typing, Service::Chat, "typing", ConversationRef => Empty
);
rpc!(
    /// The edge reports a user going online or offline; friends are told.
    PresenceChanged, Service::Chat, "presence_changed", PresenceChange => Empty
);
rpc!(
    /// Online state and last-seen time of users.
    GetPresence, Service::Chat, "get_presence", PresenceRequest => PresenceList
);
rpc!(
    /// Answers when the service and its database are usable.
    Health, Service::Chat, "health", Empty => Empty
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_frames_come_apart_as_they_were_even_with_newlines_in_bodies() {
        let typing = ServerFrame::Typing {
            conversation_id: "g:x".into(),
            user_id: Uuid::now_v7(),
        };
        let error = ServerFrame::error(ErrorCode::Internal, "two\nlines");
        let (a, b) = (typing.to_json(), error.to_json());
        let joined = join_frames([a.as_str(), b.as_str()]);
        let parts: Vec<&[u8]> = push_frames(joined.as_bytes()).collect();
        assert_eq!(parts, vec![a.as_bytes(), b.as_bytes()]);
        assert_eq!(
            push_frames(a.as_bytes()).collect::<Vec<_>>(),
            vec![a.as_bytes()]
        );
        assert_eq!(push_frames(b"").count(), 0);
    }

    #[test]
    fn private_ids_are_canonical() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let id = ConversationId::private(b, a);
        assert_eq!(id, ConversationId::private(a, b));
        let text = id.to_string();
        assert_eq!(ConversationId::parse(&text), Some(id));
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        assert_eq!(ConversationId::parse(&format!("p:{hi}:{lo}")), None);
        assert_eq!(ConversationId::parse(&format!("p:{a}:{a}")), None);
        assert_eq!(
            ConversationId::parse(&format!("p:{}:{}", lo.simple(), hi.simple())),
            None
        );
        assert!(id.is_party(a) && id.is_party(b) && !id.is_party(Uuid::now_v7()));
        assert_eq!(id.peer_of(a), Some(b));
    }

    #[test]
    fn group_ids_and_garbage() {
        let g = Uuid::now_v7();
        assert_eq!(
            ConversationId::parse(&format!("g:{g}")),
            Some(ConversationId::Group(g))
        );
        for bad in ["", "g:", "x:1", "p:1:2", "g:not-a-uuid", "p:"] {
            assert_eq!(ConversationId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        let id = ConversationId::Group(Uuid::from_u128(42));
        let p = id.partition(16);
        assert!(p < 16);
        assert_eq!(p, id.partition(16));
        let mut seen = std::collections::HashSet::new();
        for i in 0..200u128 {
            seen.insert(ConversationId::Group(Uuid::from_u128(i)).partition(8));
        }
        assert_eq!(seen.len(), 8, "conversations spread over every partition");
        assert_eq!(id.partition(0), 0);
    }

    #[test]
    fn bodies_refuse_control_characters_but_keep_whitespace_and_unicode() {
        assert_eq!(check_body("line one\n\tline two\r\n héllo 👋"), Ok(()));
        for bad in [
            "nul\u{0}inside",
            "bell\u{7}",
            "esc\u{1b}[2J",
            "c1\u{85}",
            "\u{FFFF}",
        ] {
            assert_eq!(
                check_body(bad).unwrap_err().code,
                ErrorCode::InvalidText,
                "{bad:?}"
            );
        }
        assert_eq!(
            check_body("").unwrap_err().code,
            ErrorCode::ValidationFailed
        );
        let over = "x".repeat(MAX_BODY_BYTES + 1);
        assert_eq!(
            check_body(&over).unwrap_err().code,
            ErrorCode::MessageTooLarge
        );
        assert_eq!(check_body(&over[1..]), Ok(()));
    }

    #[test]
    fn client_ids_are_short_and_plain() {
        assert_eq!(check_client_id("m-1:a_b.c"), Ok(()));
        for bad in [
            "",
            "has space",
            "nul\u{0}",
            &"x".repeat(MAX_CLIENT_ID_LEN + 1),
        ] {
            assert!(check_client_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ingest_lines_give_back_each_joined_message_in_order() {
        let one: &[u8] = br#"{"a":"x\ny"}"#;
        let messages: [&[u8]; 3] = [one, b"{}", b"not json"];
        let payload = join_ingest_lines(messages);
        assert_eq!(ingest_lines(&payload).collect::<Vec<_>>(), messages);
        assert_eq!(
            ingest_lines(one).collect::<Vec<_>>(),
            [one],
            "one message alone"
        );
        assert_eq!(
            ingest_lines(b"").count(),
            1,
            "an empty payload is one (unreadable) line"
        );
        assert_eq!(ingest_lines(b"{}\n").collect::<Vec<_>>(), [&b"{}"[..], b""]);
    }

    #[test]
    fn frames_carry_their_type() {
        let frame: ClientFrame = serde_json::from_str(
            r#"{"type":"send","client_id":"c1","to":"00000000-0000-0000-0000-000000000001","body":"hi"}"#,
        )
        .unwrap();
        let ClientFrame::Send(send) = frame else {
            panic!("not a send")
        };
        assert_eq!(send.kind, MessageKind::Text);
        let ack =
            ServerFrame::Ack(SendAck::rejected("c1".into(), None, ErrorCode::NotFriends)).to_json();
        let value: serde_json::Value = serde_json::from_str(&ack).unwrap();
        assert_eq!(value["type"], "ack");
        assert_eq!(value["status"], "rejected");
        assert_eq!(value["reason"], "not_friends");
        assert_eq!(
            ServerFrame::SessionRevoked.to_json(),
            r#"{"type":"session_revoked"}"#
        );
    }

    fn notification_samples() -> Vec<Notification> {
        use crate::social::{FriendRequestStatus, JoinRequestStatus};
        let (a, b, g) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(9));
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let friend = FriendRequest {
            id: Uuid::from_u128(5),
            from_user_id: a,
            to_user_id: b,
            message: None,
            status: FriendRequestStatus::Pending,
            created_at: at,
            handled_at: None,
        };
        let join = GroupJoinRequest {
            id: Uuid::from_u128(6),
            group_id: g,
            user_id: b,
            inviter_id: None,
            message: Some("let me in".into()),
            status: JoinRequestStatus::Pending,
            created_at: at,
            handled_at: None,
            handled_by: None,
        };
        use Notification as N;
        vec![
            N::FriendRequestReceived {
                request: friend.clone(),
            },
            N::FriendRequestAccepted {
                request: friend.clone(),
            },
            N::FriendRequestRejected { request: friend },
            N::Unfriended { user_id: a },
            N::GroupInvitation(GroupInvitation::Pending {
                request: join.clone(),
            }),
            N::GroupInvitation(GroupInvitation::Joined {
                group_id: g,
                invited_by: a,
                joined: true,
            }),
            N::JoinRequestReceived {
                request: join.clone(),
            },
            N::JoinRequestApproved {
                request: join.clone(),
            },
            N::JoinRequestRejected { request: join },
            N::Kicked { group_id: g },
            N::GroupDissolved { group_id: g },
            N::RoleChanged {
                group_id: g,
                role: GroupRole::Admin,
            },
            N::Muted {
                group_id: g,
                muted_until: at,
            },
            N::Unmuted { group_id: g },
            N::OwnershipTransferred {
                group_id: g,
                from: a,
                to: b,
            },
            N::MessageModerated {
                conversation_id: "p:a:b".into(),
                message_id: a,
            },
        ]
    }

    /// The kind of each notification; a new kind fails to compile here until it has a sample.
    fn kind(notification: &Notification) -> &'static str {
        use Notification as N;
        match notification {
            N::FriendRequestReceived { .. } => "friend_request_received",
            N::FriendRequestAccepted { .. } => "friend_request_accepted",
            N::FriendRequestRejected { .. } => "friend_request_rejected",
            N::Unfriended { .. } => "unfriended",
            N::GroupInvitation(_) => "group_invitation",
            N::JoinRequestReceived { .. } => "join_request_received",
            N::JoinRequestApproved { .. } => "join_request_approved",
            N::JoinRequestRejected { .. } => "join_request_rejected",
            N::Kicked { .. } => "kicked",
            N::GroupDissolved { .. } => "group_dissolved",
            N::RoleChanged { .. } => "role_changed",
            N::Muted { .. } => "muted",
            N::Unmuted { .. } => "unmuted",
            N::OwnershipTransferred { .. } => "ownership_transferred",
            N::MessageModerated { .. } => "message_moderated",
        }
    }

    #[test]
    fn every_notification_round_trips_as_type_kind_and_data() {
        let samples = notification_samples();
        let kinds: std::collections::HashSet<_> = samples.iter().map(kind).collect();
        assert_eq!(kinds.len(), 15, "one sample of every kind");
        for notification in samples {
            let frame = ServerFrame::Notification(notification.clone());
            let json: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
            let keys: Vec<&str> = json
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(keys.len(), 3, "{json}");
            assert_eq!(json["type"], "notification");
            assert_eq!(json["kind"], kind(&notification));
            assert!(json["data"].is_object(), "{json}");
            let back: ServerFrame = serde_json::from_value(json).unwrap();
            assert_eq!(back, frame);
        }
    }

    #[test]
    fn notification_data_keeps_the_shapes_clients_read() {
        let g = Uuid::from_u128(9);
        let joined =
            ServerFrame::Notification(Notification::GroupInvitation(GroupInvitation::Joined {
                group_id: g,
                invited_by: g,
                joined: true,
            }));
        let json: serde_json::Value = serde_json::from_str(&joined.to_json()).unwrap();
        assert_eq!(json["data"]["group_id"], g.to_string());
        assert_eq!(json["data"]["joined"], true);
        let kicked = ServerFrame::Notification(Notification::Kicked { group_id: g });
        assert_eq!(
            kicked.to_json(),
            format!(r#"{{"type":"notification","kind":"kicked","data":{{"group_id":"{g}"}}}}"#)
        );
    }
}
