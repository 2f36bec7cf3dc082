//! Streams and buckets declared as code and created idempotently at start-up.

use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use mesh_contracts::leases::LEASE_TTL;
use mesh_contracts::{Bucket, Stream};

use crate::bus::{Bus, ConnectError};
use crate::feed::JetStreamError;

/// Lifetimes that depend on configuration.
#[derive(Debug, Clone)]
pub struct TopologySettings {
    /// How long a revoked session id is remembered: the access-token lifetime plus the edges'
    /// leeway for expiry and a margin for clock difference (`mesh_edge::revocation_ttl`),
    /// after which every token of that session is refused anyway.
    pub revoked_ttl: Duration,
    /// How long JetStream itself drops a resent chat message (same `Nats-Msg-Id`); the chat
    /// store recognises resends after that too.
    pub dedup_window: Duration,
    /// Copies of every stream and bucket on the cluster's servers (1 on a single server).
    pub replicas: usize,
    /// Partitions the ingest stream's messages are routed over (recorded on the stream).
    pub chat_partitions: u32,
    /// The most bytes each of what clients make the mesh keep, the AUDIT stream and the
    /// IDEMPOTENCY bucket, holds (`MESH_NATS_KEPT_MAX_BYTES`, 1 GiB by default). JetStream
    /// reserves it on the server's store when the stream is made.
    pub kept_max_bytes: i64,
}

impl TopologySettings {
    /// What a serving role with these settings needs of the topology `mesh migrate` made: what
    /// a migrate with the same settings would have made.
    pub fn needs(&self) -> Needs {
        Needs {
            chat_partitions: self.chat_partitions,
            revocations_kept: self.revoked_ttl,
        }
    }
}

/// What a serving role needs of the topology `mesh migrate` made, beyond its existence: the
/// settings of its own that must agree with those of the migration.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// `MESH_CHAT_PARTITIONS`: the ingest stream must route over as many.
    pub chat_partitions: u32,
    /// How long the `REVOKED` bucket must remember a revocation (when the role uses it):
    /// `mesh_edge::revocation_ttl` of the role's own `MESH_ACCESS_TTL`. A bucket that forgets
    /// sooner lets a revoked token of this role's lifetime be accepted again.
    pub revocations_kept: Duration,
}

/// Whether a role needing revocations kept `needed` may use the bucket `bucket` that keeps
/// them `kept`.
fn check_revocations_kept(
    bucket: &str,
    kept: Duration,
    needed: Duration,
) -> Result<(), ConnectError> {
    if kept.is_zero() || kept >= needed {
        return Ok(());
    }
    Err(ConnectError::Topology(format!(
        "bucket {bucket} forgets a revoked session after {}s, but this role's MESH_ACCESS_TTL \
         needs it kept {}s: a revoked token would be accepted again once its revocation is \
         forgotten. Give every role and `mesh migrate` the same MESH_ACCESS_TTL, and run \
         `mesh migrate` with it",
        kept.as_secs(),
        needed.as_secs()
    )))
}

/// The age `mesh migrate` gives the `REVOKED` bucket: what its settings need, unless the bucket
/// already keeps revocations longer (`kept`; zero keeps them forever). Never shorter: pods of
/// the release before keep issuing and accepting tokens of their lifetime until they are
/// replaced, and their revocations must be remembered that long.
fn revocations_age(kept: Option<Duration>, needed: Duration) -> Duration {
    match kept {
        Some(kept) if kept.is_zero() || kept > needed => kept,
        _ => needed,
    }
}

/// The ingest stream's metadata key recording how many partitions its messages are routed
/// over: a message accepted under one count has no owner under another.
const PARTITIONS_KEY: &str = "mesh_chat_partitions";

/// Whether a mesh configured for `configured` partitions may use the ingest stream `stream`
/// whose metadata records `recorded` (none: set up before the count was recorded).
fn check_partitions(
    stream: &str,
    recorded: Option<&String>,
    configured: u32,
) -> Result<(), ConnectError> {
    match recorded {
        Some(recorded) if *recorded != configured.to_string() => {
            Err(ConnectError::Topology(format!(
                "stream {stream} routes chat messages over {recorded} partitions, but \
                 MESH_CHAT_PARTITIONS is {configured}: messages accepted under one count have no \
                 owner under the other. Set MESH_CHAT_PARTITIONS={recorded}, or stop the edges, \
                 let the chat workers store everything and delete the stream before changing it"
            )))
        }
        _ => Ok(()),
    }
}
/// A stream (or a bucket's stream) as JetStream reports it at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMark {
    /// When the stream was created, to the microsecond (as Postgres keeps time). The server
    /// sets it when the stream is made and keeps it with the stream (restarts, leader
    /// changes and `mesh migrate` leave it; migrate updates only a stream that differs from
    /// what it declares, see `ensure_topology`), so it tells a stream apart from one of the
    /// same name deleted and made again, or made anew by a JetStream that lost its store.
    pub created: time::OffsetDateTime,
    /// The last sequence the stream assigned (of a bucket: its newest revision); never goes
    /// back while the stream exists, purges included.
    pub last_sequence: u64,
}

impl StreamMark {
    pub(crate) fn of(info: &async_nats::jetstream::stream::Info) -> Self {
        Self {
            created: to_micros(info.created),
            last_sequence: info.state.last_sequence,
        }
    }
}

/// `at` without its nanoseconds below the microsecond.
fn to_micros(at: time::OffsetDateTime) -> time::OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

/// How long an idempotency record is replayed.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
// What clients make the mesh keep is bounded in bytes too (`TopologySettings::kept_max_bytes`):
// full, the idempotency bucket refuses new records and the edges serve keyed requests
// unprotected (`mesh_idempotency_total{outcome="fail_open"}`) until records age out; the AUDIT
// stream drops its oldest records (the outbox writer stores them within a second).
/// How long a user's presence entry outlives its last refresh (the bucket's max age); start-up
/// refuses a heartbeat (the refresh pace) that does not fit twice into it.
pub const PRESENCE_TTL: Duration = Duration::from_secs(60);
/// Failed sign-ins are forgotten this long after the last one (which ends a lock).
pub const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

impl Bus {
    /// Creates (or updates to the declared settings) every stream and bucket of the prefix. One
    /// already as declared is left untouched: an update rewrites a stream's stored
    /// configuration, and nats-server before 2.14.6 (its issue 8470) then writes as its
    /// creation time the time the server last started, so after the next restart the stream
    /// reads as made anew and every chat partition re-reads all the ingest stream holds
    /// (`StreamMark`). `mesh migrate` runs at every deploy; a restart follows many.
    pub async fn ensure_topology(&self, settings: &TopologySettings) -> Result<(), ConnectError> {
        let p = &self.prefix;
        let buckets = [
            (Bucket::Revoked, settings.revoked_ttl, "revoked session ids"),
            (
                Bucket::Idempotency,
                IDEMPOTENCY_TTL,
                "stored responses of idempotent requests",
            ),
            (Bucket::Presence, PRESENCE_TTL, "online users"),
            (Bucket::Leases, LEASE_TTL, "chat partition leases"),
            (
                Bucket::LoginFailures,
                LOGIN_FAILURE_WINDOW,
                "recent failed sign-ins",
            ),
        ];
        for (bucket, max_age, description) in buckets {
            let max_age = if bucket == Bucket::Revoked {
                revocations_age(self.revocations_kept().await?, max_age)
            } else {
                max_age
            };
            let max_bytes = if bucket == Bucket::Idempotency {
                settings.kept_max_bytes
            } else {
                -1
            };
            let config = kv::Config {
                bucket: p.bucket(bucket),
                description: description.to_owned(),
                history: 1,
                max_age,
                max_bytes,
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                ..Default::default()
            };
            if self
                .current_config(&p.bucket_stream(bucket))
                .await
                .is_some_and(|current| bucket_as_wanted(&current, &config))
            {
                continue;
            }
            self.jetstream
                .create_or_update_key_value(config)
                .await
                .map_err(|err| {
                    ConnectError::Topology(format!("bucket {}: {err}", p.bucket(bucket)))
                })?;
        }
        let streams = [
            (
                Stream::ChatIn,
                p.all_chat_in(),
                Duration::from_secs(7 * 24 * 3600),
            ),
            (
                Stream::Events,
                p.all_events(),
                Duration::from_secs(7 * 24 * 3600),
            ),
            (Stream::Audit, p.audit(), Duration::from_secs(7 * 24 * 3600)),
        ];
        for (which, subject, max_age) in streams {
            let name = p.stream(which);
            let current = self.current_config(&name).await;
            let mut metadata = std::collections::HashMap::new();
            if which == Stream::ChatIn {
                // Before the ingest stream is updated: one that records another partition
                // count fails migrate (one that does not exist yet, or records none, passes).
                if let Some(current) = &current {
                    check_partitions(
                        &name,
                        current.metadata.get(PARTITIONS_KEY),
                        settings.chat_partitions,
                    )?;
                }
                metadata.insert(
                    PARTITIONS_KEY.to_owned(),
                    settings.chat_partitions.to_string(),
                );
            }
            let config = stream::Config {
                name,
                subjects: vec![subject],
                storage: stream::StorageType::File,
                duplicate_window: settings.dedup_window,
                max_age,
                max_bytes: if which == Stream::Audit {
                    settings.kept_max_bytes
                } else {
                    -1
                },
                num_replicas: settings.replicas,
                metadata,
                ..Default::default()
            };
            if current.is_some_and(|current| stream_as_wanted(&current, &config)) {
                continue;
            }
            self.jetstream
                .create_or_update_stream(config)
                .await
                .map_err(|err| {
                    ConnectError::Topology(format!("stream {}: {err}", p.stream(which)))
                })?;
        }
        Ok(())
    }

    /// The configuration of the stream `name` as the server holds it; `None` when it does not
    /// exist or cannot be read (then it is created or updated as if it differed).
    async fn current_config(&self, name: &str) -> Option<stream::Config> {
        let stream = self.jetstream.get_stream(name).await.ok()?;
        Some(stream.cached_info().config.clone())
    }

    /// How long the existing `REVOKED` bucket keeps revocations, `None` when there is no
    /// bucket yet. Any other failure fails migrate: taking it for "no bucket" would shorten
    /// the age of one that exists.
    async fn revocations_kept(&self) -> Result<Option<Duration>, ConnectError> {
        use async_nats::jetstream::ErrorCode;
        use async_nats::jetstream::context::GetStreamErrorKind;

        let name = self.prefix.bucket_stream(Bucket::Revoked);
        match self.jetstream.get_stream(&name).await {
            Ok(stream) => Ok(Some(stream.cached_info().config.max_age)),
            Err(err)
                if matches!(err.kind(), GetStreamErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(err) => Err(ConnectError::Topology(format!(
                "stream {name}: cannot read how long it keeps revocations: {err}"
            ))),
        }
    }

    /// Fails unless every stream and bucket named exists and meets `needs`: the ingest stream
    /// (when named) routes over `needs.chat_partitions` partitions, and the `REVOKED` bucket
    /// (when named) keeps revocations `needs.revocations_kept`. Serving roles bind to what
    /// `mesh migrate` created and never create anything themselves.
    pub async fn require_topology(
        &self,
        streams: &[Stream],
        buckets: &[Bucket],
        needs: Needs,
    ) -> Result<(), ConnectError> {
        let p = &self.prefix;
        let missing = |what: String, err: &dyn std::fmt::Display| {
            ConnectError::Topology(format!(
                "{what} is not usable ({err}); run `mesh migrate` to create it"
            ))
        };
        for which in streams {
            let name = p.stream(*which);
            let stream = self
                .jetstream
                .get_stream(&name)
                .await
                .map_err(|err| missing(format!("stream {name}"), &err))?;
            if *which == Stream::ChatIn {
                let recorded = stream.cached_info().config.metadata.get(PARTITIONS_KEY);
                check_partitions(&name, recorded, needs.chat_partitions)?;
            }
        }
        for bucket in buckets {
            let name = p.bucket(*bucket);
            let store = self
                .jetstream
                .get_key_value(&name)
                .await
                .map_err(|err| missing(format!("bucket {name}"), &err))?;
            if *bucket == Bucket::Revoked {
                let status = store
                    .status()
                    .await
                    .map_err(|err| missing(format!("bucket {name}"), &err))?;
                check_revocations_kept(&name, status.max_age(), needs.revocations_kept)?;
            }
        }
        Ok(())
    }

    /// The stream `stream` as it is now: when it was created and its last sequence.
    pub async fn stream_mark(&self, stream: Stream) -> Result<StreamMark, JetStreamError> {
        self.mark_of(self.prefix.stream(stream)).await
    }

    /// Like `stream_mark`, for a bucket's stream (its last sequence is its newest revision).
    pub async fn bucket_mark(&self, bucket: Bucket) -> Result<StreamMark, JetStreamError> {
        self.mark_of(self.prefix.bucket_stream(bucket)).await
    }

    async fn mark_of(&self, name: String) -> Result<StreamMark, JetStreamError> {
        // Binding to a stream asks the server for its info: what is cached is current.
        match self.jetstream.get_stream(&name).await {
            Ok(stream) => Ok(StreamMark::of(stream.cached_info())),
            Err(err) => Err(JetStreamError::Stream {
                stream: name,
                reason: err.to_string(),
            }),
        }
    }

    /// The server leading a stream's replicas and how many of its followers are current, or
    /// `None` while it has no leader (or on a single server without clustering).
    pub async fn stream_leader(&self, stream: Stream) -> Option<(String, usize)> {
        self.leader_of(&self.prefix.stream(stream)).await
    }

    /// Like `stream_leader`, for a bucket.
    pub async fn bucket_leader(&self, bucket: Bucket) -> Option<(String, usize)> {
        self.leader_of(&self.prefix.bucket_stream(bucket)).await
    }

    async fn leader_of(&self, stream: &str) -> Option<(String, usize)> {
        let mut stream = self.jetstream.get_stream(stream).await.ok()?;
        let cluster = stream.info().await.ok()?.cluster.clone()?;
        let current = cluster.replicas.iter().filter(|r| r.current).count();
        Some((cluster.leader?, current))
    }

    /// Deletes one bucket of the prefix (tests of a missing bucket, teardown).
    pub async fn delete_bucket(&self, bucket: Bucket) {
        let _ = self
            .jetstream
            .delete_key_value(self.prefix.bucket(bucket))
            .await;
    }

    /// Deletes every stream and bucket of the prefix (test teardown).
    pub async fn delete_topology(&self) {
        let p = &self.prefix;
        for bucket in Bucket::ALL {
            self.delete_bucket(bucket).await;
        }
        for which in Stream::ALL {
            let _ = self.jetstream.delete_stream(p.stream(which)).await;
        }
    }
}

/// Whether the stream configuration `current` already has everything `wanted` declares:
/// subjects, storage, limits, replicas, duplicate window and the metadata the mesh writes
/// (the server adds keys of its own, which do not count).
fn stream_as_wanted(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects == wanted.subjects
        && current.storage == wanted.storage
        && current.duplicate_window == wanted.duplicate_window
        && current.max_age == wanted.max_age
        && current.max_bytes == wanted.max_bytes
        && current.num_replicas == wanted.num_replicas
        && wanted
            .metadata
            .iter()
            .all(|(key, value)| current.metadata.get(key) == Some(value))
}

/// Whether the stream configuration `current` of a bucket already has everything `wanted`
/// declares: its description, history, age, size, storage and replicas.
fn bucket_as_wanted(current: &stream::Config, wanted: &kv::Config) -> bool {
    current.description.as_deref() == Some(wanted.description.as_str())
        && current.max_messages_per_subject == wanted.history
        && current.max_age == wanted.max_age
        && current.max_bytes == wanted.max_bytes
        && current.storage == wanted.storage
        && current.num_replicas == wanted.num_replicas
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_nats::jetstream::{kv, stream};

    use super::{
        bucket_as_wanted, check_partitions, check_revocations_kept, revocations_age,
        stream_as_wanted, to_micros,
    };

    /// A change to a stream's configuration, named.
    type Change = (&'static str, fn(&mut stream::Config));

    #[test]
    fn a_creation_time_is_kept_to_the_microsecond() {
        let at = time::macros::datetime!(2026-12-07 00:10:20.123456789 UTC);
        assert_eq!(
            to_micros(at),
            time::macros::datetime!(2026-12-07 00:10:20.123456 UTC)
        );
        assert_eq!(to_micros(to_micros(at)), to_micros(at), "idempotent");
    }

    #[test]
    fn migrate_never_shortens_how_long_revocations_are_kept() {
        let hour = Duration::from_secs(3600);
        assert_eq!(revocations_age(None, hour), hour, "a new bucket");
        assert_eq!(revocations_age(Some(hour / 2), hour), hour, "lengthened");
        assert_eq!(
            revocations_age(Some(hour * 2), hour),
            hour * 2,
            "kept longer"
        );
        assert_eq!(
            revocations_age(Some(Duration::ZERO), hour),
            Duration::ZERO,
            "forever"
        );
    }

    #[test]
    fn a_revoked_bucket_is_usable_only_if_it_outlives_the_roles_tokens() {
        let hour = Duration::from_secs(3600);
        assert!(check_revocations_kept("P_REVOKED", hour, hour).is_ok());
        assert!(check_revocations_kept("P_REVOKED", hour * 2, hour).is_ok());
        assert!(
            check_revocations_kept("P_REVOKED", Duration::ZERO, hour).is_ok(),
            "a bucket that never forgets"
        );
        let refused = check_revocations_kept("P_REVOKED", hour, hour * 2)
            .expect_err("forgets sooner than the tokens expire")
            .to_string();
        assert!(
            refused.contains("3600s")
                && refused.contains("7200s")
                && refused.contains("MESH_ACCESS_TTL"),
            "{refused}"
        );
    }

    #[test]
    fn a_stream_is_usable_only_with_the_partition_count_it_records() {
        let sixteen = "16".to_owned();
        assert!(check_partitions("P_CHAT_IN", Some(&sixteen), 16).is_ok());
        assert!(
            check_partitions("P_CHAT_IN", None, 8).is_ok(),
            "recorded by nothing yet"
        );
        let refused = check_partitions("P_CHAT_IN", Some(&sixteen), 8)
            .expect_err("another count")
            .to_string();
        assert!(refused.contains("MESH_CHAT_PARTITIONS=16"), "{refused}");
    }

    /// An ingest stream as `mesh migrate` declares it.
    fn declared_stream() -> stream::Config {
        stream::Config {
            name: "P_CHAT_IN".to_owned(),
            subjects: vec!["p.chat.in.*".to_owned()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(5),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: -1,
            num_replicas: 1,
            metadata: [("mesh_chat_partitions".to_owned(), "16".to_owned())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_stream_already_as_declared_is_left_and_any_declared_difference_is_updated() {
        let wanted = declared_stream();
        // As the server reports it: its own metadata and settings the mesh does not declare.
        let mut current = wanted.clone();
        current
            .metadata
            .insert("_nats.req.level".to_owned(), "0".to_owned());
        current.max_consumers = -1;
        assert!(stream_as_wanted(&current, &wanted));

        let changes: [Change; 7] = [
            ("subjects", |c| c.subjects = vec!["q.chat.in.*".to_owned()]),
            ("storage", |c| c.storage = stream::StorageType::Memory),
            ("duplicate window", |c| {
                c.duplicate_window = Duration::from_secs(120)
            }),
            ("age", |c| c.max_age = Duration::from_secs(3600)),
            ("size", |c| c.max_bytes = 1 << 30),
            ("replicas", |c| c.num_replicas = 3),
            ("partitions", |c| {
                c.metadata
                    .insert("mesh_chat_partitions".to_owned(), "8".to_owned());
            }),
        ];
        for (what, change) in changes {
            let mut differs = current.clone();
            change(&mut differs);
            assert!(!stream_as_wanted(&differs, &wanted), "{what} differs");
        }
        let mut unrecorded = current.clone();
        unrecorded.metadata.clear();
        assert!(
            !stream_as_wanted(&unrecorded, &wanted),
            "no partition count recorded"
        );
    }

    #[test]
    fn a_bucket_already_as_declared_is_left_and_any_declared_difference_is_updated() {
        let wanted = kv::Config {
            bucket: "P_LEASES".to_owned(),
            description: "chat partition leases".to_owned(),
            history: 1,
            max_age: Duration::from_secs(10),
            max_bytes: -1,
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        };
        let current = stream::Config {
            name: "KV_P_LEASES".to_owned(),
            description: Some("chat partition leases".to_owned()),
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(10),
            max_bytes: -1,
            storage: stream::StorageType::File,
            num_replicas: 1,
            allow_rollup: true,
            ..Default::default()
        };
        assert!(bucket_as_wanted(&current, &wanted));

        let changes: [Change; 6] = [
            ("description", |c| c.description = None),
            ("history", |c| c.max_messages_per_subject = 5),
            ("age", |c| c.max_age = Duration::from_secs(60)),
            ("size", |c| c.max_bytes = 1 << 20),
            ("storage", |c| c.storage = stream::StorageType::Memory),
            ("replicas", |c| c.num_replicas = 3),
        ];
        for (what, change) in changes {
            let mut differs = current.clone();
            change(&mut differs);
            assert!(!bucket_as_wanted(&differs, &wanted), "{what} differs");
        }
    }
}
