//! NATS names: every subject, stream, bucket and durable consumer is built and parsed here,
//! from one prefix.

use uuid::Uuid;

use crate::rpc::Service;

/// The namespace of one mesh deployment on a NATS server (`MESH_PREFIX`). Tests and tenants
/// with different prefixes share a server without seeing each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Prefix(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid prefix {0:?}: use 1-32 of a-z, 0-9, '_' or '-', starting with a letter")]
pub struct InvalidPrefix(pub String);

/// A JetStream stream of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Chat messages accepted by the edge, waiting to be stored.
    ChatIn,
    /// Domain events relayed from the services' outbox tables.
    Events,
    /// Audit records of mutating requests, published by edges.
    Audit,
}

/// A JetStream key-value bucket of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Revoked session ids, kept for the access-token lifetime.
    Revoked,
    /// Stored responses of idempotent requests.
    Idempotency,
    /// Online users, refreshed by heartbeats.
    Presence,
    /// Partition ownership of chat workers.
    Leases,
    /// Recent failed sign-ins per account and per client address.
    LoginFailures,
}

impl Stream {
    /// Every stream of a prefix.
    pub const ALL: [Stream; 3] = [Stream::ChatIn, Stream::Events, Stream::Audit];

    fn suffix(self) -> &'static str {
        match self {
            Stream::ChatIn => "CHAT_IN",
            Stream::Events => "EVENTS",
            Stream::Audit => "AUDIT",
        }
    }
}

impl Bucket {
    /// Every bucket of a prefix.
    pub const ALL: [Bucket; 5] = [
        Bucket::Revoked,
        Bucket::Idempotency,
        Bucket::Presence,
        Bucket::Leases,
        Bucket::LoginFailures,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Bucket::Revoked => "REVOKED",
            Bucket::Idempotency => "IDEMPOTENCY",
            Bucket::Presence => "PRESENCE",
            Bucket::Leases => "LEASES",
            Bucket::LoginFailures => "LOGIN_FAILURES",
        }
    }
}

/// A durable JetStream consumer of the mesh. Consumers live inside a prefixed stream, so
/// their names need no prefix of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consumer {
    /// The feed of one chat ingest partition for its owner at one epoch (`chat-p<n>-e<epoch>`).
    ChatPartition { partition: u32, epoch: u64 },
    /// A partition's consumer as releases before fencing named it (`chat-p<n>`); only deleted.
    UnversionedChatPartition(u32),
    /// The audit log writers, shared by every outbox instance (`audit-writer`).
    AuditWriter,
    /// Chat's projection of social state (`chat-projection`).
    ChatProjection,
    /// Chat's notification pushes (`chat-notifications`).
    ChatNotifications,
}

impl Consumer {
    const CHAT_PARTITION: &'static str = "chat-p";

    /// The consumer's name on its stream.
    pub fn name(self) -> String {
        match self {
            Consumer::ChatPartition { partition, epoch } => {
                format!("{}{partition}-e{epoch}", Self::CHAT_PARTITION)
            }
            Consumer::UnversionedChatPartition(partition) => {
                format!("{}{partition}", Self::CHAT_PARTITION)
            }
            Consumer::AuditWriter => "audit-writer".to_owned(),
            Consumer::ChatProjection => "chat-projection".to_owned(),
            Consumer::ChatNotifications => "chat-notifications".to_owned(),
        }
    }

    /// Reads a consumer name back.
    pub fn parse(name: &str) -> Option<Self> {
        let digits = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        if let Some(rest) = name.strip_prefix(Self::CHAT_PARTITION).filter(|r| {
            let (partition, epoch) = r.split_once("-e").unwrap_or((r, "0"));
            digits(partition) && digits(epoch)
        }) {
            let parsed = match rest.split_once("-e") {
                Some((partition, epoch)) => Consumer::ChatPartition {
                    partition: partition.parse().ok()?,
                    epoch: epoch.parse().ok()?,
                },
                None => Consumer::UnversionedChatPartition(rest.parse().ok()?),
            };
            // Only the canonical spelling (`chat-p1`, not `chat-p01`).
            return Some(parsed).filter(|parsed| parsed.name() == name);
        }
        [
            Consumer::AuditWriter,
            Consumer::ChatProjection,
            Consumer::ChatNotifications,
        ]
        .into_iter()
        .find(|consumer| consumer.name() == name)
    }

    /// The stream the consumer reads.
    pub fn stream(self) -> Stream {
        match self {
            Consumer::ChatPartition { .. } | Consumer::UnversionedChatPartition(_) => {
                Stream::ChatIn
            }
            Consumer::AuditWriter => Stream::Audit,
            Consumer::ChatProjection | Consumer::ChatNotifications => Stream::Events,
        }
    }
}

/// A parsed mesh subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Rpc { service: Service, op: String },
    PushUser(Uuid),
    PushMany,
    ChatIn(u32),
    ChatBacklog(u32),
    Event { service: Service, event: String },
}

impl Prefix {
    pub fn parse(raw: &str) -> Result<Self, InvalidPrefix> {
        let ok = (1..=32).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidPrefix(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `mesh.user.login`: the subject of one RPC operation.
    pub fn rpc(&self, service: Service, op: &str) -> String {
        format!("{}.{}.{}", self.0, service.as_str(), op)
    }

    /// `mesh.user`: the subject group under which a service's endpoints live.
    pub fn rpc_group(&self, service: Service) -> String {
        format!("{}.{}", self.0, service.as_str())
    }

    /// `mesh-user`: the name a service registers for NATS service discovery (`$SRV.PING.<name>`).
    pub fn service_name(&self, service: Service) -> String {
        format!("{}-{}", self.0, service.as_str())
    }

    /// `mesh.push.user.<id>`: where everything for one connected user is pushed.
    pub fn push_user(&self, user: Uuid) -> String {
        format!("{}.push.user.{}", self.0, user)
    }

    /// `mesh.push.many`: pushes to many users at once (`push_many`); every edge listens.
    pub fn push_many(&self) -> String {
        format!("{}.push.many", self.0)
    }

    /// `mesh.chat.in.<partition>`: the chat ingest subject of one partition.
    pub fn chat_in(&self, partition: u32) -> String {
        format!("{}.chat.in.{}", self.0, partition)
    }

    /// The partition of a `chat_in` subject of this prefix; `None` for any other subject.
    pub fn chat_in_partition(&self, subject: &str) -> Option<u32> {
        subject
            .strip_prefix(self.0.as_str())?
            .strip_prefix(".chat.in.")?
            .parse()
            .ok()
    }

    /// `mesh.backlog.chat.<partition>`: where a partition's owner tells the edges how much of
    /// it is accepted but not stored yet.
    pub fn chat_backlog(&self, partition: u32) -> String {
        format!("{}.backlog.chat.{}", self.0, partition)
    }

    /// `mesh.backlog.chat.*`: every partition's backlog reports.
    pub fn all_chat_backlogs(&self) -> String {
        format!("{}.backlog.chat.*", self.0)
    }

    /// `mesh.evt.<service>.<event>`: a domain event.
    pub fn event(&self, service: Service, event: &str) -> String {
        format!("{}.evt.{}.{}", self.0, service.as_str(), event)
    }

    /// `mesh.evt.>`: every domain event.
    pub fn all_events(&self) -> String {
        format!("{}.evt.>", self.0)
    }

    /// `mesh.audit`: where edges publish audit records.
    pub fn audit(&self) -> String {
        format!("{}.audit", self.0)
    }

    /// `mesh.evt.<service>.*`: every event of one service.
    pub fn service_events(&self, service: Service) -> String {
        format!("{}.evt.{}.*", self.0, service.as_str())
    }

    /// `mesh.chat.in.*`: every chat ingest partition.
    pub fn all_chat_in(&self) -> String {
        format!("{}.chat.in.*", self.0)
    }

    /// `MESH_CHAT_IN`: a stream name.
    pub fn stream(&self, stream: Stream) -> String {
        format!("{}_{}", self.upper(), stream.suffix())
    }

    /// `MESH_REVOKED`: a key-value bucket name.
    pub fn bucket(&self, bucket: Bucket) -> String {
        format!("{}_{}", self.upper(), bucket.suffix())
    }

    /// The stream JetStream keeps a bucket in (`KV_<bucket>`).
    pub fn bucket_stream(&self, bucket: Bucket) -> String {
        format!("KV_{}", self.bucket(bucket))
    }

    fn upper(&self) -> String {
        self.0.to_ascii_uppercase().replace('-', "_")
    }

    /// Parses a subject of this prefix; `None` for anything else.
    pub fn parse_subject(&self, subject: &str) -> Option<Subject> {
        let rest = subject.strip_prefix(self.0.as_str())?.strip_prefix('.')?;
        let tokens: Vec<&str> = rest.split('.').collect();
        match tokens.as_slice() {
            ["push", "user", id] => Uuid::parse_str(id).ok().map(Subject::PushUser),
            ["push", "many"] => Some(Subject::PushMany),
            ["chat", "in", partition] => partition.parse().ok().map(Subject::ChatIn),
            ["backlog", "chat", partition] => partition.parse().ok().map(Subject::ChatBacklog),
            ["evt", service, event] if !event.is_empty() => Some(Subject::Event {
                service: Service::parse(service)?,
                event: (*event).to_owned(),
            }),
            [service, op] if !op.is_empty() => Some(Subject::Rpc {
                service: Service::parse(service)?,
                op: (*op).to_owned(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix() -> Prefix {
        Prefix::parse("mesh").unwrap()
    }

    #[test]
    fn prefix_rules() {
        for ok in ["mesh", "t1", "a-b_c", "abcdefghijklmnopqrstuvwxyz012345"] {
            assert!(Prefix::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Mesh",
            "1mesh",
            "me.sh",
            "me*",
            "me>",
            "me sh",
            &"a".repeat(33),
        ] {
            assert!(Prefix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn consumer_names_round_trip() {
        for consumer in [
            Consumer::ChatPartition {
                partition: 0,
                epoch: 1,
            },
            Consumer::ChatPartition {
                partition: 17,
                epoch: 123_456,
            },
            Consumer::UnversionedChatPartition(3),
            Consumer::AuditWriter,
            Consumer::ChatProjection,
            Consumer::ChatNotifications,
        ] {
            assert_eq!(Consumer::parse(&consumer.name()), Some(consumer));
        }
        let owned = Consumer::ChatPartition {
            partition: 3,
            epoch: 9,
        };
        assert_eq!(owned.name(), "chat-p3-e9");
        assert_eq!(Consumer::UnversionedChatPartition(3).name(), "chat-p3");
        for foreign in [
            "chat-p",
            "chat-p-1",
            "chat-p01",
            "chat-px",
            "chat-p3-e",
            "chat-p3-e01",
            "chat-p3-x9",
            "audit",
            "",
        ] {
            assert_eq!(Consumer::parse(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn subjects_round_trip() {
        let p = prefix();
        let user = Uuid::now_v7();
        let cases = [
            (
                p.rpc(Service::User, "login"),
                Subject::Rpc {
                    service: Service::User,
                    op: "login".into(),
                },
            ),
            (p.push_user(user), Subject::PushUser(user)),
            (p.push_many(), Subject::PushMany),
            (p.chat_in(17), Subject::ChatIn(17)),
            (p.chat_backlog(17), Subject::ChatBacklog(17)),
            (
                p.event(Service::Social, "friendship_created"),
                Subject::Event {
                    service: Service::Social,
                    event: "friendship_created".into(),
                },
            ),
        ];
        for (subject, parsed) in cases {
            assert_eq!(p.parse_subject(&subject), Some(parsed), "{subject}");
        }
    }

    #[test]
    fn foreign_and_malformed_subjects_are_rejected() {
        let p = prefix();
        for s in [
            "other.user.login",
            "meshx.user.login",
            "mesh.nope.login",
            "mesh.push.user.not-a-uuid",
            "mesh.chat.in.x",
            "mesh.user",
            "mesh.user.",
            "mesh.a.b.c.d",
        ] {
            assert_eq!(p.parse_subject(s), None, "{s}");
        }
    }

    #[test]
    fn names_derive_from_prefix() {
        let p = Prefix::parse("t-42").unwrap();
        assert_eq!(p.stream(Stream::ChatIn), "T_42_CHAT_IN");
        assert_eq!(p.bucket(Bucket::Revoked), "T_42_REVOKED");
        assert_eq!(p.service_name(Service::User), "t-42-user");
        assert_eq!(p.rpc_group(Service::User), "t-42.user");
        assert_eq!(p.all_events(), "t-42.evt.>");
    }
}
