//! Streams and buckets declared as code and created idempotently at start-up.

use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use mesh_contracts::leases::LEASE_TTL;
use mesh_contracts::{Bucket, Stream};

use crate::bus::{Bus, ConnectError};

/// Lifetimes that depend on configuration.
#[derive(Debug, Clone)]
pub struct TopologySettings {
    /// How long a revoked session id is remembered: the access-token lifetime, after which
    /// every token of that session has expired anyway.
    pub revoked_ttl: Duration,
    /// How long JetStream itself drops a resent chat message (same `Nats-Msg-Id`); the chat
    /// store recognises resends after that too.
    pub dedup_window: Duration,
    /// Copies of every stream and bucket on the cluster's servers (1 on a single server).
    pub replicas: usize,
}
/// How long an idempotency record is replayed.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Presence entries vanish after two missed heartbeats.
const PRESENCE_TTL: Duration = Duration::from_secs(60);
/// Failed sign-ins are forgotten this long after the last one (which ends a lock).
pub const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

impl Bus {
    /// Creates (or updates to the declared settings) every stream and bucket of the prefix.
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
            let config = kv::Config {
                bucket: p.bucket(bucket),
                description: description.to_owned(),
                history: 1,
                max_age,
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                ..Default::default()
            };
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
            let config = stream::Config {
                name: p.stream(which),
                subjects: vec![subject],
                storage: stream::StorageType::File,
                duplicate_window: settings.dedup_window,
                max_age,
                num_replicas: settings.replicas,
                ..Default::default()
            };
            self.jetstream
                .create_or_update_stream(config)
                .await
                .map_err(|err| {
                    ConnectError::Topology(format!("stream {}: {err}", p.stream(which)))
                })?;
        }
        Ok(())
    }

    /// Fails unless every stream and bucket named exists: serving roles bind to what
    /// `mesh migrate` created and never create anything themselves.
    pub async fn require_topology(
        &self,
        streams: &[Stream],
        buckets: &[Bucket],
    ) -> Result<(), ConnectError> {
        let p = &self.prefix;
        let missing = |what: String, err: &dyn std::fmt::Display| {
            ConnectError::Topology(format!(
                "{what} is not usable ({err}); run `mesh migrate` to create it"
            ))
        };
        for which in streams {
            let name = p.stream(*which);
            self.jetstream
                .get_stream(&name)
                .await
                .map_err(|err| missing(format!("stream {name}"), &err))?;
        }
        for bucket in buckets {
            let name = p.bucket(*bucket);
            self.jetstream
                .get_key_value(&name)
                .await
                .map_err(|err| missing(format!("bucket {name}"), &err))?;
        }
        Ok(())
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
        for bucket in [
            Bucket::Revoked,
            Bucket::Idempotency,
            Bucket::Presence,
            Bucket::Leases,
            Bucket::LoginFailures,
        ] {
            self.delete_bucket(bucket).await;
        }
        for which in [Stream::ChatIn, Stream::Events, Stream::Audit] {
            let _ = self.jetstream.delete_stream(p.stream(which)).await;
        }
    }
}
