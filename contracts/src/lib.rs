//! Wire contracts of the mesh: the only crate that defines what crosses NATS or HTTP.
//!
//! Every request, reply, error code and subject name lives here so that the edge and the
//! workers can never disagree about the wire. Services convert these types into their own
//! domain types at the boundary.

pub mod asyncapi;
pub mod audit;
pub mod auth;
pub mod chat;
pub mod client_address;
pub mod error;
pub mod events;
pub mod formats;
pub mod idempotency;
pub mod leases;
pub mod mesh_health;
pub mod moderation;
pub mod nats_permissions;
pub mod page;
pub mod permissions;
pub mod push_many;
pub mod rbac;
pub mod rpc;
pub mod social;
pub mod subject;
pub mod usage;
pub mod user;

pub use error::{ErrorCode, Problem, ServiceError};
pub use rpc::{Rpc, Service};
pub use subject::{Bucket, Consumer, InvalidPrefix, Prefix, Stream, Subject};
