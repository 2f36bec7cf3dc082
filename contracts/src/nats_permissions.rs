//! Least privilege on NATS: what each role of the mesh may publish and subscribe to, derived
//! from the subjects, streams and buckets in `subject.rs`, and the server configuration that
//! enforces it (`mesh nats-config`).
//!
//! Every name here comes from `Prefix`'s builders, so a renamed subject moves its permission
//! with it; the exhaustive matches below make a new `Service`, `Stream` or `Bucket` fail to
//! compile until someone decides who may use it.

use std::fmt::Write as _;

use crate::rpc::{Rpc, Service};
use crate::subject::{Bucket, Prefix, Stream};
use crate::{social, user};

/// An identity on NATS: one per serving role, and the one `mesh migrate` uses to create
/// streams and buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatsRole {
    Edge,
    User,
    Social,
    Chat,
    Outbox,
    /// Creates and updates streams and buckets; serving roles only bind to them.
    Migrate,
}

impl NatsRole {
    pub const ALL: &'static [NatsRole] = &[
        NatsRole::Edge,
        NatsRole::User,
        NatsRole::Social,
        NatsRole::Chat,
        NatsRole::Outbox,
        NatsRole::Migrate,
    ];

    /// The user name in the generated configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            NatsRole::Edge => "edge",
            NatsRole::User => "user",
            NatsRole::Social => "social",
            NatsRole::Chat => "chat",
            NatsRole::Outbox => "outbox",
            NatsRole::Migrate => "migrate",
        }
    }

    /// The service a worker role answers for.
    pub fn service(self) -> Option<Service> {
        match self {
            NatsRole::User => Some(Service::User),
            NatsRole::Social => Some(Service::Social),
            NatsRole::Chat => Some(Service::Chat),
            NatsRole::Outbox => Some(Service::Outbox),
            NatsRole::Edge | NatsRole::Migrate => None,
        }
    }

    /// `_INBOX.<prefix>.<role>`: where this role's replies arrive; only it may subscribe there.
    pub fn inbox_prefix(self, prefix: &Prefix) -> String {
        format!("_INBOX.{}.{}", prefix.as_str(), self.as_str())
    }

    /// The operations this role calls, as `(service, op)`; `*` for every operation. Workers
    /// name each call, so a worker's identity cannot reach, say, `admin_set_roles`.
    fn calls(self) -> Vec<(Service, &'static str)> {
        fn op<R: Rpc>() -> (Service, &'static str) {
            (R::SERVICE, R::OP)
        }
        match self {
            NatsRole::Edge => Service::ALL.iter().map(|s| (*s, "*")).collect(),
            NatsRole::Social => vec![op::<user::GetUser>()],
            NatsRole::Chat => vec![
                op::<social::CheckFriendship>(),
                op::<social::CheckFriendships>(),
                op::<social::FriendIds>(),
                op::<social::GroupRoster>(),
            ],
            NatsRole::Outbox => vec![op::<crate::rbac::GetAccess>()],
            NatsRole::User | NatsRole::Migrate => Vec::new(),
        }
    }

    /// The services whose events this role watches as they are published, to drop what it
    /// cached (`Bus::event_watch`): a plain subscription on `<p>.evt.<service>.*`, no consumer
    /// on the `EVENTS` stream, whose consumers are chat's alone; opening one echoes a probe
    /// through the role's own inbox (`_INBOX.<p>.<role>.*.probe`).
    pub fn watched_events(self) -> &'static [Service] {
        match self {
            // Roles' permissions and users' grants.
            NatsRole::Edge => &[Service::User],
            // Friend sets, group profiles and members, written on other instances.
            NatsRole::Social => &[Service::Social],
            NatsRole::User | NatsRole::Chat | NatsRole::Outbox | NatsRole::Migrate => &[],
        }
    }
}

impl NatsRole {
    /// The streams this role publishes to or consumes: they must exist before it serves.
    pub fn streams(self) -> Vec<Stream> {
        STREAMS
            .into_iter()
            .filter(|s| {
                let (publishers, consumers) = stream_access(*s);
                publishers.contains(&self) || consumers.contains(&self)
            })
            .collect()
    }

    /// The buckets this role reads or writes: they must exist before it serves.
    pub fn buckets(self) -> Vec<Bucket> {
        BUCKETS
            .into_iter()
            .filter(|b| {
                let (writers, readers) = bucket_access(*b);
                writers.contains(&self) || readers.contains(&self)
            })
            .collect()
    }
}

/// Who may touch a stream: the roles that publish into it and those that consume it.
pub fn stream_access(stream: Stream) -> (&'static [NatsRole], &'static [NatsRole]) {
    // One role each: a role that may consume a stream may read, ack, change or delete every
    // consumer on it (their names are in the subjects of the JetStream API, not the login).
    let consumers: &'static [NatsRole] = match stream {
        Stream::ChatIn => &[NatsRole::Chat],
        // Chat's durable projection and notifications. Edges and social instances watch the
        // events they drop cached entries for as they are published (`watched_events`).
        Stream::Events => &[NatsRole::Chat],
        Stream::Audit => &[NatsRole::Outbox],
    };
    let publishers: &'static [NatsRole] = match stream {
        Stream::ChatIn | Stream::Audit => &[NatsRole::Edge],
        Stream::Events => &[NatsRole::Outbox],
    };
    (publishers, consumers)
}

/// Who samples the backlog of a stream's consumers (`mesh_consumer_pending`): the outbox role,
/// which relays EVENTS and writes AUDIT.
pub fn stream_observers(stream: Stream) -> &'static [NatsRole] {
    match stream {
        Stream::Events | Stream::Audit => &[NatsRole::Outbox],
        Stream::ChatIn => &[],
    }
}

/// Who may touch a bucket: writers (put, create, update, delete) and readers (get). A writer
/// can read too. Watching a bucket or listing its keys takes a consumer: `bucket_watchers`.
pub fn bucket_access(bucket: Bucket) -> (&'static [NatsRole], &'static [NatsRole]) {
    match bucket {
        Bucket::Revoked => (&[NatsRole::User], &[NatsRole::Edge]),
        Bucket::Presence => (&[NatsRole::Edge], &[NatsRole::Chat]),
        // Edges read who owns each ingest partition (the admins' mesh health).
        Bucket::Leases => (&[NatsRole::Chat], &[NatsRole::Edge]),
        // Edges reserve and store idempotent answers; any edge replays them.
        Bucket::Idempotency => (&[NatsRole::Edge], &[]),
        // The user role counts failed sign-ins, cluster-wide.
        Bucket::LoginFailures => (&[NatsRole::User], &[]),
    }
}

/// Who opens consumers on a bucket's stream (a watch, a listing of its keys): one role at
/// most, since a role that may consume the stream may read, ack or delete every consumer on
/// it. Every watcher reads or writes the bucket.
pub fn bucket_watchers(bucket: Bucket) -> &'static [NatsRole] {
    match bucket {
        // Every edge follows the revoked sessions.
        Bucket::Revoked => &[NatsRole::Edge],
        // Chat workers read presence, and edges write it, key by key.
        Bucket::Presence => &[],
        // Chat workers list the live workers.
        Bucket::Leases => &[NatsRole::Chat],
        // The edge's alone (nobody else touches it); its keys can be listed.
        Bucket::Idempotency => &[NatsRole::Edge],
        // Every user instance follows the failed sign-ins.
        Bucket::LoginFailures => &[NatsRole::User],
    }
}

const STREAMS: [Stream; 3] = Stream::ALL;
const BUCKETS: [Bucket; 5] = Bucket::ALL;

/// The subjects one role may publish to and subscribe to.
///
/// No role gets NATS's `allow_responses`: it lets a client publish once to whatever reply
/// subject a message it received names, and a caller could name `$JS.API.STREAM.DELETE.<s>`
/// and have a service's answer delete a stream for it. A service answers only into the inboxes
/// of the roles that may call it (`_INBOX.<p>.<role>.>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Permissions {
    fn publish(&mut self, subject: String) {
        if !self.publish.contains(&subject) {
            self.publish.push(subject);
        }
    }

    fn subscribe(&mut self, subject: String) {
        if !self.subscribe.contains(&subject) {
            self.subscribe.push(subject);
        }
    }

    /// Binds to a stream (info) and runs consumers on it: create, read, delete, fetch, ack.
    fn consume(&mut self, stream: &str) {
        self.publish(format!("$JS.API.STREAM.INFO.{stream}"));
        self.publish(format!("$JS.API.CONSUMER.CREATE.{stream}"));
        for api in ["CREATE", "DURABLE.CREATE", "INFO", "DELETE", "MSG.NEXT"] {
            self.publish(format!("$JS.API.CONSUMER.{api}.{stream}.>"));
        }
        self.publish(format!("$JS.ACK.{stream}.>"));
        self.publish(format!("$JS.FC.{stream}.>"));
    }

    /// Lists a stream's consumers and reads their state (backlog sampling).
    fn observe_consumers(&mut self, stream: &str) {
        self.publish(format!("$JS.API.STREAM.INFO.{stream}"));
        for api in ["LIST", "NAMES"] {
            self.publish(format!("$JS.API.CONSUMER.{api}.{stream}"));
        }
        self.publish(format!("$JS.API.CONSUMER.INFO.{stream}.>"));
    }

    /// Reads a bucket key by key: bind, get (no consumer: a watch is `consume`).
    fn read_bucket(&mut self, kv_stream: &str) {
        self.publish(format!("$JS.API.STREAM.INFO.{kv_stream}"));
        self.publish(format!("$JS.API.DIRECT.GET.{kv_stream}"));
        self.publish(format!("$JS.API.DIRECT.GET.{kv_stream}.>"));
        self.publish(format!("$JS.API.STREAM.MSG.GET.{kv_stream}"));
    }
}

impl Prefix {
    /// What `role` may do on this prefix's subjects, streams and buckets.
    pub fn permissions(&self, role: NatsRole) -> Permissions {
        let mut p = Permissions::default();
        if role == NatsRole::Migrate {
            // Declares and deletes streams, buckets and their consumers, and asks service
            // discovery what runs (the operator's view; serving roles cannot).
            p.publish("$JS.API.>".into());
            p.publish("$SRV.>".into());
            p.subscribe(format!("{}.>", role.inbox_prefix(self)));
            return p;
        }
        p.subscribe(format!("{}.>", role.inbox_prefix(self)));
        if let Some(service) = role.service() {
            // Answers go to the callers' inboxes only: the roles that call the service, the
            // edge (the administrators' mesh health asks `$SRV.STATS`) and `migrate` (the
            // operator's discovery).
            for caller in NatsRole::ALL.iter().copied() {
                let calls = caller.calls().iter().any(|(s, _)| *s == service);
                if calls || matches!(caller, NatsRole::Edge | NatsRole::Migrate) {
                    p.publish(format!("{}.>", caller.inbox_prefix(self)));
                }
            }
            p.subscribe(self.rpc(service, "*"));
            let name = self.service_name(service);
            for verb in ["PING", "INFO", "STATS"] {
                p.subscribe(format!("$SRV.{verb}"));
                p.subscribe(format!("$SRV.{verb}.{name}"));
                p.subscribe(format!("$SRV.{verb}.{name}.*"));
            }
        }
        for (service, op) in role.calls() {
            p.publish(self.rpc(service, op));
        }
        match role {
            NatsRole::Edge => {
                p.subscribe(self.push_user_any());
                p.subscribe(self.push_many());
                // How far each ingest partition is behind (admission of new messages).
                p.subscribe(self.all_chat_backlogs());
                // Answers to resends go straight to the sender's connections.
                p.publish(self.push_user_any());
                // Administrators' mesh health: each service's statistics (`$SRV.STATS`).
                for service in Service::ALL {
                    p.publish(format!("$SRV.STATS.{}", self.service_name(*service)));
                }
            }
            NatsRole::Chat => {
                p.publish(self.push_user_any());
                p.publish(self.push_many());
                p.publish(self.all_chat_backlogs());
                // Compaction: each partition's first unstored message, then a purge of what
                // every partition has stored.
                let ingest = self.stream(Stream::ChatIn);
                p.publish(format!("$JS.API.STREAM.MSG.GET.{ingest}"));
                p.publish(format!("$JS.API.STREAM.PURGE.{ingest}"));
            }
            // The outbox relays events and writes the audit log; it pushes to nobody.
            NatsRole::User | NatsRole::Social | NatsRole::Outbox | NatsRole::Migrate => {}
        }
        for service in role.watched_events() {
            p.subscribe(self.service_events(*service));
        }
        if !role.watched_events().is_empty() {
            // A watch opens once the server echoed a probe into the role's own inbox, which
            // only the role reads (NATS acknowledges no subscription).
            p.publish(format!("{}.*.probe", role.inbox_prefix(self)));
        }
        for stream in STREAMS {
            let (publishers, consumers) = stream_access(stream);
            if publishers.contains(&role) {
                p.publish(self.stream_subjects(stream));
                p.publish(format!("$JS.API.STREAM.INFO.{}", self.stream(stream)));
            }
            if consumers.contains(&role) {
                p.consume(&self.stream(stream));
            }
            if stream_observers(stream).contains(&role) {
                p.observe_consumers(&self.stream(stream));
            }
        }
        for bucket in BUCKETS {
            let (writers, readers) = bucket_access(bucket);
            let kv_stream = self.bucket_stream(bucket);
            if writers.contains(&role) {
                p.publish(format!("$KV.{}.>", self.bucket(bucket)));
            }
            if writers.contains(&role) || readers.contains(&role) {
                p.read_bucket(&kv_stream);
            }
            if bucket_watchers(bucket).contains(&role) {
                p.consume(&kv_stream);
            }
        }
        p
    }

    /// `mesh.push.user.*`: every user's push subject.
    pub fn push_user_any(&self) -> String {
        format!("{}.push.user.*", self.as_str())
    }

    /// The subjects a stream captures.
    pub fn stream_subjects(&self, stream: Stream) -> String {
        match stream {
            Stream::ChatIn => self.all_chat_in(),
            Stream::Events => self.all_events(),
            Stream::Audit => self.audit(),
        }
    }
}

/// The prefixes a generated configuration serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One deployment: every subject, stream and bucket is named exactly.
    Exact(Prefix),
    /// Any prefix (a shared test server where each test picks its own): the prefix token
    /// becomes `*`, and so does every token that holds a stream or bucket name, since NATS
    /// wildcards match whole tokens. Roles still differ in what they reach, but not in which
    /// of several deployments' streams.
    AnyPrefix,
}

/// A placeholder prefix that cannot be a real one's stream token after widening.
const PLACEHOLDER: &str = "zzprefixzz";

impl Scope {
    pub fn permissions(&self, role: NatsRole) -> Permissions {
        match self {
            Scope::Exact(prefix) => prefix.permissions(role),
            Scope::AnyPrefix => {
                let placeholder = Prefix::parse(PLACEHOLDER).expect("valid placeholder");
                let exact = placeholder.permissions(role);
                let widen = |subjects: Vec<String>| {
                    let mut out: Vec<String> = Vec::new();
                    for subject in subjects.iter().map(|s| widen_subject(s)) {
                        if !out.contains(&subject) {
                            out.push(subject);
                        }
                    }
                    out
                };
                Permissions {
                    publish: widen(exact.publish),
                    subscribe: widen(exact.subscribe),
                }
            }
        }
    }
}

fn widen_subject(subject: &str) -> String {
    let upper = PLACEHOLDER.to_ascii_uppercase();
    subject
        .split('.')
        .map(|token| {
            let holds_prefix = token == PLACEHOLDER
                || token.starts_with(&format!("{PLACEHOLDER}-"))
                || token.starts_with(&format!("{upper}_"))
                || token.starts_with(&format!("KV_{upper}_"));
            if holds_prefix { "*" } else { token }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// One role's login in a generated configuration.
pub struct Login<'a> {
    pub role: NatsRole,
    pub password: &'a str,
}

/// The `authorization { users = [...] }` block of a nats-server configuration: one user per
/// role with its permissions, and no anonymous access.
pub fn server_authorization(scope: &Scope, logins: &[Login<'_>]) -> String {
    let mut out = String::from("authorization {\n  users = [\n");
    for login in logins {
        let permissions = scope.permissions(login.role);
        let _ = writeln!(
            out,
            "    {{\n      user: {}\n      password: {}\n      permissions: {{",
            quote(login.role.as_str()),
            quote(login.password)
        );
        let _ = writeln!(
            out,
            "        publish: {{ allow: {} }}",
            list(&permissions.publish)
        );
        let _ = writeln!(
            out,
            "        subscribe: {{ allow: {} }}",
            list(&permissions.subscribe)
        );
        out.push_str("      }\n    }\n");
    }
    out.push_str("  ]\n}\n");
    out
}

fn list(subjects: &[String]) -> String {
    if subjects.is_empty() {
        // An empty allow list would allow everything; deny everything instead.
        return "[], deny: [\">\"]".to_owned();
    }
    let quoted: Vec<String> = subjects.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::Subject;
    use uuid::Uuid;

    fn prefix() -> Prefix {
        Prefix::parse("mesh").unwrap()
    }

    /// NATS subject matching: `*` one token, `>` the rest.
    fn matches(pattern: &str, subject: &str) -> bool {
        let pattern: Vec<&str> = pattern.split('.').collect();
        let subject: Vec<&str> = subject.split('.').collect();
        for (i, token) in pattern.iter().enumerate() {
            match *token {
                ">" => return subject.len() > i,
                "*" if i < subject.len() => {}
                t if subject.get(i) == Some(&t) => {}
                _ => return false,
            }
        }
        pattern.len() == subject.len()
    }

    fn can_publish(role: NatsRole, subject: &str) -> bool {
        prefix()
            .permissions(role)
            .publish
            .iter()
            .any(|p| matches(p, subject))
    }

    fn can_subscribe(role: NatsRole, subject: &str) -> bool {
        prefix()
            .permissions(role)
            .subscribe
            .iter()
            .any(|p| matches(p, subject))
    }

    fn who_publishes(subject: &str) -> Vec<NatsRole> {
        let serving = NatsRole::ALL.iter().filter(|r| **r != NatsRole::Migrate);
        serving
            .copied()
            .filter(|r| can_publish(*r, subject))
            .collect()
    }

    fn who_subscribes(subject: &str) -> Vec<NatsRole> {
        NatsRole::ALL
            .iter()
            .copied()
            .filter(|r| can_subscribe(*r, subject))
            .collect()
    }

    /// One subject of every kind `Subject` names, parsed back to prove it is that kind.
    fn one_of_each(p: &Prefix) -> Vec<(String, Subject)> {
        let user = Uuid::now_v7();
        let mut out = Vec::new();
        for service in Service::ALL {
            out.push(p.rpc(*service, "op"));
            out.push(p.event(*service, "happened"));
        }
        out.push(p.push_user(user));
        out.push(p.push_many());
        out.push(p.chat_in(3));
        out.push(p.chat_backlog(3));
        out.into_iter()
            .map(|s| {
                let parsed = p.parse_subject(&s).expect("a mesh subject");
                (s, parsed)
            })
            .collect()
    }

    #[test]
    fn every_subject_has_a_publisher_and_a_receiver() {
        let p = prefix();
        for (subject, parsed) in one_of_each(&p) {
            assert!(
                !who_publishes(&subject).is_empty(),
                "nobody publishes {subject}"
            );
            match parsed {
                // Service requests are answered by exactly their worker.
                Subject::Rpc { service, .. } => {
                    let subscribers = who_subscribes(&subject);
                    assert_eq!(subscribers.len(), 1, "{subject}: {subscribers:?}");
                    assert_eq!(subscribers[0].service(), Some(service), "{subject}");
                }
                // Only the chat worker and the edge (resend answers) push to a user.
                Subject::PushUser(_) => {
                    let pushers = vec![NatsRole::Edge, NatsRole::Chat];
                    assert_eq!(who_publishes(&subject), pushers, "{subject}");
                    assert_eq!(who_subscribes(&subject), vec![NatsRole::Edge], "{subject}");
                }
                // Only the chat worker chooses who receives a push to many users.
                Subject::PushMany => {
                    assert_eq!(who_publishes(&subject), vec![NatsRole::Chat], "{subject}");
                    assert_eq!(who_subscribes(&subject), vec![NatsRole::Edge], "{subject}");
                }
                // Only partition owners report backlogs, only edges admit by them.
                Subject::ChatBacklog(_) => {
                    assert_eq!(who_publishes(&subject), vec![NatsRole::Chat], "{subject}");
                    assert_eq!(who_subscribes(&subject), vec![NatsRole::Edge], "{subject}");
                }
                // Ingest is read through chat's consumers, never subscribed to.
                Subject::ChatIn(_) => {
                    assert!(who_subscribes(&subject).is_empty(), "{subject}");
                }
                // Events are read through chat's consumers; the roles that drop cached entries
                // watch their services' events as published, and nobody else.
                Subject::Event { service, .. } => {
                    let watchers = match service {
                        Service::User => vec![NatsRole::Edge],
                        Service::Social => vec![NatsRole::Social],
                        Service::Chat | Service::Outbox => vec![],
                    };
                    assert_eq!(who_subscribes(&subject), watchers, "{subject}");
                }
            }
        }
        assert_eq!(who_publishes(&p.audit()), vec![NatsRole::Edge]);
    }

    #[test]
    fn every_stream_and_bucket_is_assigned() {
        let p = prefix();
        for stream in STREAMS {
            let (publishers, consumers) = stream_access(stream);
            assert!(
                !publishers.is_empty() && !consumers.is_empty(),
                "{stream:?}"
            );
            let api = format!("$JS.API.CONSUMER.CREATE.{}.c", p.stream(stream));
            let allowed: Vec<NatsRole> = who_publishes(&api);
            assert_eq!(allowed, consumers.to_vec(), "{stream:?}");
        }
        for bucket in BUCKETS {
            let put = format!("$KV.{}.key", p.bucket(bucket));
            let (writers, readers) = bucket_access(bucket);
            assert_eq!(who_publishes(&put), writers.to_vec(), "{bucket:?}");
            let kv_stream = p.bucket_stream(bucket);
            let get = format!(
                "$JS.API.DIRECT.GET.{kv_stream}.$KV.{}.key",
                p.bucket(bucket)
            );
            let users: Vec<NatsRole> = NatsRole::ALL
                .iter()
                .copied()
                .filter(|r| writers.contains(r) || readers.contains(r))
                .collect();
            assert_eq!(who_publishes(&get), users, "{bucket:?}");
            let watch = format!("$JS.API.CONSUMER.CREATE.{kv_stream}.c.$KV.>");
            let watchers = bucket_watchers(bucket);
            assert_eq!(who_publishes(&watch), watchers.to_vec(), "{bucket:?}");
            assert!(watchers.iter().all(|w| users.contains(w)), "{bucket:?}");
        }
    }

    /// Every JetStream subject that reads, acks, creates, changes or deletes a consumer.
    fn consumer_subjects(stream: &str, consumer: &str) -> Vec<String> {
        let mut out: Vec<String> = ["CREATE", "DURABLE.CREATE", "INFO", "DELETE", "MSG.NEXT"]
            .iter()
            .map(|api| format!("$JS.API.CONSUMER.{api}.{stream}.{consumer}"))
            .collect();
        out.push(format!("$JS.API.CONSUMER.CREATE.{stream}"));
        out.push(format!(
            "$JS.ACK.{stream}.{consumer}.1.7.1.1700000000000000000.0"
        ));
        out
    }

    #[test]
    fn no_role_reads_acks_or_deletes_another_roles_consumers() {
        let p = prefix();
        // Chat's projection: edges and social instances watch events without a consumer, so
        // their logins cannot pull, ack, rewrite or delete it (a blocked user would keep
        // messaging once the projection missed `UserBlocked`).
        let events = p.stream(Stream::Events);
        let projection = crate::subject::Consumer::ChatProjection.name();
        for subject in consumer_subjects(&events, &projection) {
            // The outbox samples its backlog (reads its state, changes nothing).
            let expected = if subject.contains(".CONSUMER.INFO.") {
                vec![NatsRole::Chat, NatsRole::Outbox]
            } else {
                vec![NatsRole::Chat]
            };
            assert_eq!(who_publishes(&subject), expected, "{subject}");
        }
        for role in [NatsRole::Edge, NatsRole::Social] {
            assert!(
                !can_publish(role, &format!("$JS.ACK.{events}.>")),
                "{role:?}"
            );
            assert!(!can_publish(role, &format!("$JS.API.STREAM.INFO.{events}")));
        }
        assert!(can_publish(NatsRole::Chat, &format!("$JS.ACK.{events}.>")));
        // Every stream and bucket: one role at most runs consumers on it (backlog sampling
        // reads their state, and changes nothing).
        let streams = STREAMS.iter().map(|s| p.stream(*s));
        let kv_streams = BUCKETS.iter().map(|b| p.bucket_stream(*b));
        for stream in streams.chain(kv_streams) {
            for subject in consumer_subjects(&stream, "someone") {
                let allowed = who_publishes(&subject);
                let observed = subject.contains(".CONSUMER.INFO.");
                let most = if observed { 2 } else { 1 };
                assert!(allowed.len() <= most, "{subject}: {allowed:?}");
            }
        }
        // Presence and leases are read key by key across roles, not watched.
        let get = |bucket| {
            format!(
                "$JS.API.DIRECT.GET.{}.$KV.{}.k",
                p.bucket_stream(bucket),
                p.bucket(bucket)
            )
        };
        assert!(can_publish(NatsRole::Chat, &get(Bucket::Presence)));
        assert!(can_publish(NatsRole::Edge, &get(Bucket::Leases)));
        let next = |bucket| format!("$JS.API.CONSUMER.MSG.NEXT.{}.c", p.bucket_stream(bucket));
        assert!(!can_publish(NatsRole::Chat, &next(Bucket::Presence)));
        assert!(!can_publish(NatsRole::Edge, &next(Bucket::Presence)));
        assert!(!can_publish(NatsRole::Edge, &next(Bucket::Leases)));
        assert!(!can_publish(NatsRole::User, &next(Bucket::Revoked)));
    }

    #[test]
    fn the_issues_forbidden_operations_are_not_allowed() {
        let p = prefix();
        // Only the edge reaches service subjects from outside the workers' own calls.
        assert!(!can_publish(
            NatsRole::Chat,
            &p.rpc(Service::User, "admin_set_roles")
        ));
        assert!(!can_publish(
            NatsRole::User,
            &p.rpc(Service::Chat, "history")
        ));
        // A worker answers only its own service.
        assert!(!can_subscribe(
            NatsRole::Social,
            &p.rpc(Service::User, "login")
        ));
        // Nobody but the owner reads replies.
        for role in NatsRole::ALL {
            for other in NatsRole::ALL.iter().filter(|o| *o != role) {
                let inbox = format!("{}.x.1", other.inbox_prefix(&p));
                assert!(!can_subscribe(*role, &inbox), "{role:?} reads {other:?}");
            }
            assert!(!can_subscribe(*role, "_INBOX.abc"), "{role:?}");
        }
        // A service answers into its callers' inboxes, nowhere else: not the JetStream API
        // (no `allow_responses`, which would let a caller pick the reply subject).
        let inbox = |role: NatsRole| format!("{}.r1", role.inbox_prefix(&p));
        for (service, callers) in [
            (
                NatsRole::User,
                vec![
                    NatsRole::Edge,
                    NatsRole::Social,
                    NatsRole::Outbox,
                    NatsRole::Migrate,
                ],
            ),
            (
                NatsRole::Social,
                vec![NatsRole::Edge, NatsRole::Chat, NatsRole::Migrate],
            ),
            (NatsRole::Chat, vec![NatsRole::Edge, NatsRole::Migrate]),
            (NatsRole::Outbox, vec![NatsRole::Edge, NatsRole::Migrate]),
        ] {
            for role in NatsRole::ALL.iter().copied() {
                assert_eq!(
                    can_publish(service, &inbox(role)),
                    callers.contains(&role),
                    "{service:?} answering {role:?}"
                );
            }
            let delete = format!("$JS.API.STREAM.DELETE.{}", p.bucket_stream(Bucket::Revoked));
            assert!(!can_publish(service, &delete), "{service:?}");
        }
        // Only the user role writes REVOKED; only chat consumes ingest; only the edge ingests.
        let revoked = format!("$KV.{}.s1", p.bucket(Bucket::Revoked));
        assert_eq!(who_publishes(&revoked), vec![NatsRole::User]);
        let next = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.chat-p1",
            p.stream(Stream::ChatIn)
        );
        assert_eq!(who_publishes(&next), vec![NatsRole::Chat]);
        assert_eq!(who_publishes(&p.chat_in(1)), vec![NatsRole::Edge]);
        // Streams are created and deleted at migrate time only.
        for api in ["STREAM.CREATE", "STREAM.DELETE", "STREAM.UPDATE"] {
            let subject = format!("$JS.API.{api}.{}", p.stream(Stream::ChatIn));
            assert_eq!(who_publishes(&subject), Vec::<NatsRole>::new(), "{api}");
            assert!(can_publish(NatsRole::Migrate, &subject));
        }
        // Only chat workers purge the ingest stream (what every partition stored), and no
        // stream else.
        let purge = |stream| format!("$JS.API.STREAM.PURGE.{}", p.stream(stream));
        assert_eq!(who_publishes(&purge(Stream::ChatIn)), vec![NatsRole::Chat]);
        for stream in [Stream::Events, Stream::Audit] {
            assert_eq!(who_publishes(&purge(stream)), Vec::<NatsRole>::new());
        }
    }

    #[test]
    fn a_watch_probes_its_own_inbox_only() {
        let p = prefix();
        for role in NatsRole::ALL.iter().copied() {
            let own = format!("{}.abc.probe", role.inbox_prefix(&p));
            let watches = !role.watched_events().is_empty();
            assert_eq!(can_publish(role, &own), watches, "{role:?}");
        }
        // Not a reply into its own inbox, nor a probe into another role's.
        let edge = NatsRole::Edge.inbox_prefix(&p);
        assert!(!can_publish(NatsRole::Edge, &format!("{edge}.abc.1")));
        let social = NatsRole::Social.inbox_prefix(&p);
        assert!(!can_publish(NatsRole::Edge, &format!("{social}.abc.probe")));
        assert!(!can_publish(NatsRole::Social, &format!("{social}.abc.1")));
    }

    #[test]
    fn any_prefix_scope_widens_names_to_whole_tokens() {
        let edge = Scope::AnyPrefix.permissions(NatsRole::Edge);
        assert!(edge.publish.contains(&"*.user.*".to_owned()));
        assert!(edge.publish.contains(&"$KV.*.>".to_owned()));
        assert!(edge.subscribe.contains(&"_INBOX.*.edge.>".to_owned()));
        assert!(!edge.subscribe.iter().any(|s| s.contains(PLACEHOLDER)));
        // The events each role watches, of every prefix, and no others.
        assert!(edge.subscribe.contains(&"*.evt.user.*".to_owned()));
        let social = Scope::AnyPrefix.permissions(NatsRole::Social);
        assert!(social.subscribe.contains(&"*.evt.social.*".to_owned()));
        assert!(!social.subscribe.iter().any(|s| s.contains(".evt.user")));
        assert!(!social.publish.iter().any(|s| s.starts_with("$JS.")));
        let user = Scope::AnyPrefix.permissions(NatsRole::User);
        assert!(user.subscribe.contains(&"$SRV.PING.*".to_owned()));
    }

    #[test]
    fn the_configuration_names_every_role_and_quotes_secrets() {
        let logins: Vec<Login> = NatsRole::ALL
            .iter()
            .map(|role| Login {
                role: *role,
                password: "p\"w",
            })
            .collect();
        let conf = server_authorization(&Scope::Exact(prefix()), &logins);
        for role in NatsRole::ALL {
            assert!(conf.contains(&format!("user: \"{}\"", role.as_str())));
        }
        assert!(conf.contains(r#"password: "p\"w""#));
        assert!(conf.contains("\"mesh.chat.in.*\""));
    }
}
