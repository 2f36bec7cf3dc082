//! The mesh plumbing: the only crate that talks to `async_nats`.
//!
//! It connects to NATS, declares streams and buckets, carries call context and trace context
//! in headers, hosts services on the NATS services API, and makes typed RPC calls.

mod audit;
mod backlog;
mod bucket_follow;
mod bus;
mod connection_log;
mod context;
mod credentials;
mod deadline;
mod events;
pub mod feed;
mod headers;
mod ingest;
mod kv;
mod push;
mod revocation;
mod rpc_client;
mod service_host;
mod topology;
mod trace;

pub use backlog::ConsumerBacklog;
pub use bucket_follow::{BucketEntry, BucketFollower, Followed};
pub use bus::{Bus, CREATION_TIME_KEPT_FROM, ConnectError, MIN_SERVER_VERSION};
pub use context::CallContext;
pub use credentials::{
    NatsCredentials, Secret, ServerUrl, format_role_passwords, parse_role_passwords, redact_urls,
};
pub use deadline::put_deadline;
pub use events::{MAX_DELIVER, OutgoingEvent};
pub use feed::{Beyond, Delivery, Feed, JetStreamError};
pub use ingest::{ChatLine, Compaction};
pub use kv::{KvBucket, KvEntry, KvError};
pub use revocation::{Revocation, Revocations};
pub use rpc_client::{RpcClient, RpcError};
pub use service_host::ServiceHost;
pub use topology::{LOGIN_FAILURE_WINDOW, Needs, PRESENCE_TTL, StreamMark, TopologySettings};
pub use trace::ingest_batch_span;

/// The NATS client's log target. It writes each connection event at `info`, which the bus logs
/// itself once per outage (`connection_log`): the mesh's default log filter keeps it to `warn`.
pub const CLIENT_LOG_TARGET: &str = "async_nats";
