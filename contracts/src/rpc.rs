//! Typed RPC: one type per operation binds its subject, request and reply.

use serde::{Serialize, de::DeserializeOwned};

/// A service of the mesh reachable over NATS request/reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    User,
    Social,
    Chat,
    /// The outbox role: event relay and the audit log.
    Outbox,
}

impl Service {
    pub const ALL: &'static [Service] = &[
        Service::User,
        Service::Social,
        Service::Chat,
        Service::Outbox,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::User => "user",
            Service::Social => "social",
            Service::Chat => "chat",
            Service::Outbox => "outbox",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == name)
    }
}

/// One RPC operation. A request of the wrong type for an operation does not compile.
pub trait Rpc: Send + Sync + 'static {
    /// The service that answers it.
    const SERVICE: Service;
    /// The operation's name, the last token of its subject.
    const OP: &'static str;
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    type Reply: Serialize + DeserializeOwned + Send + Sync + 'static;
}

/// Declares an operation type: `rpc!(Name, Service, "op", Request => Reply);`
#[macro_export]
macro_rules! rpc {
    ($(#[$meta:meta])* $name:ident, $service:expr, $op:literal, $req:ty => $reply:ty) => {
        $(#[$meta])*
        pub struct $name;
        impl $crate::rpc::Rpc for $name {
            const SERVICE: $crate::rpc::Service = $service;
            const OP: &'static str = $op;
            type Request = $req;
            type Reply = $reply;
        }
    };
}
