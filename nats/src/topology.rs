//! Streams and buckets declared as code and created idempotently at start-up.

use std::time::Duration;

use async_nats::jetstream::{kv, stream};
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
}
/// How long an idempotency record is replayed.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Presence entries vanish after two missed heartbeats.
const PRESENCE_TTL: Duration = Duration::from_secs(60);
/// Failed sign-ins are forgotten this long after the last one (which ends a lock).
pub const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// A partition lease expires unless renewed.
const LEASE_TTL: Duration = Duration::from_secs(6);

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
