//! Why a realtime connection ended: its WebSocket close code, the close frame's reason text
//! and the `reason` label of the disconnect counter.

use mesh_contracts::asyncapi::CloseCode;
use mesh_observability::metrics::{RT_CONNECTIONS, RT_DISCONNECTS};

use super::Transport;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The client closed the connection (or it dropped).
    ClientClosed = 1,
    /// Nothing was received for the idle timeout.
    IdleTimeout,
    /// The client did not read its frames fast enough; its queue overflowed.
    SlowConsumer,
    /// The session was signed out.
    SessionRevoked,
    /// The access token expired without a refreshing `auth` frame.
    TokenExpired,
    /// The client sent a frame over the size limit.
    FrameTooLarge,
    /// The edge is shutting down.
    Shutdown,
    /// No valid token arrived in time.
    Unauthenticated,
    /// A refreshing `auth` frame carried another user's token.
    UserMismatch,
    /// The connection failed (socket error, push subscription lost).
    Error,
    /// The client kept sending frames over its rate limit.
    Flooding,
    /// The user or address already holds as many connections as allowed.
    TooManyConnections,
}

impl CloseReason {
    const ALL: [CloseReason; 12] = [
        CloseReason::ClientClosed,
        CloseReason::IdleTimeout,
        CloseReason::SlowConsumer,
        CloseReason::SessionRevoked,
        CloseReason::TokenExpired,
        CloseReason::FrameTooLarge,
        CloseReason::Shutdown,
        CloseReason::Unauthenticated,
        CloseReason::UserMismatch,
        CloseReason::Error,
        CloseReason::Flooding,
        CloseReason::TooManyConnections,
    ];

    /// The WebSocket close code: standard codes where one fits, 4xxx for the mesh's own.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::ClientClosed => 1000,
            CloseReason::Shutdown => 1001,
            CloseReason::FrameTooLarge => 1009,
            CloseReason::Error => 1011,
            CloseReason::IdleTimeout => 4000,
            CloseReason::SessionRevoked => 4001,
            CloseReason::TokenExpired => 4002,
            CloseReason::SlowConsumer => 4008,
            CloseReason::Unauthenticated => 4401,
            CloseReason::UserMismatch => 4403,
            CloseReason::Flooding => 4029,
            CloseReason::TooManyConnections => 4030,
        }
    }

    /// The close frame's reason text and the metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::SessionRevoked => "session_revoked",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Unauthenticated => "unauthenticated",
            CloseReason::UserMismatch => "user_mismatch",
            CloseReason::Error => "error",
            CloseReason::Flooding => "rate_limited",
            CloseReason::TooManyConnections => "too_many_connections",
        }
    }

    /// What the close code means to a client, as the AsyncAPI document says it.
    pub fn description(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "the client closed the connection",
            CloseReason::IdleTimeout => "nothing was received for the idle timeout; reconnect",
            CloseReason::SlowConsumer => {
                "the client read too slowly and its queue overflowed; reconnect and sync"
            }
            CloseReason::SessionRevoked => "the session was signed out; log in again",
            CloseReason::TokenExpired => {
                "the access token expired without a refreshing `auth` frame; refresh and reconnect"
            }
            CloseReason::FrameTooLarge => "a client frame was over the size limit",
            CloseReason::Shutdown => "the edge is shutting down; reconnect to another",
            CloseReason::Unauthenticated => {
                "no valid token arrived in time, or a frame other than `auth` came first"
            }
            CloseReason::UserMismatch => "a refreshing `auth` frame carried another user's token",
            CloseReason::Error => "the server failed; reconnect",
            CloseReason::Flooding => {
                "the client kept sending frames over its budget after `error` frames; slow down"
            }
            CloseReason::TooManyConnections => {
                "the user or address already holds the most connections allowed"
            }
        }
    }

    /// Every close code the server uses, for the AsyncAPI document.
    pub fn documented() -> Vec<CloseCode> {
        Self::ALL
            .into_iter()
            .map(|reason| CloseCode {
                code: reason.code(),
                reason: reason.label(),
                description: reason.description(),
            })
            .collect()
    }

    pub(super) fn from_u8(raw: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| *reason as u8 == raw)
    }
}

/// Counts a connection while it is open and its end by reason: created when the connection
/// starts, told its reason when known, counted on drop (no reason: the client went away).
pub struct ConnectionGauge {
    transport: Transport,
    reason: Option<CloseReason>,
}

impl ConnectionGauge {
    pub fn open(transport: Transport) -> Self {
        RT_CONNECTIONS.with_label_values(&[transport.label()]).inc();
        Self {
            transport,
            reason: None,
        }
    }

    pub fn closed(&mut self, reason: CloseReason) {
        self.reason = Some(reason);
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        let transport = self.transport.label();
        let reason = self.reason.unwrap_or(CloseReason::ClientClosed).label();
        RT_CONNECTIONS.with_label_values(&[transport]).dec();
        RT_DISCONNECTS.with_label_values(&[transport, reason]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_have_distinct_codes() {
        let mut codes = std::collections::HashSet::new();
        for reason in CloseReason::ALL {
            assert_eq!(CloseReason::from_u8(reason as u8), Some(reason));
            assert!(codes.insert(reason.code()), "{reason:?}");
            assert!(
                reason.label().len() <= 123,
                "close reasons fit a close frame"
            );
        }
        assert_eq!(CloseReason::from_u8(0), None);
        assert_eq!(CloseReason::SlowConsumer.code(), 4008);
        assert_eq!(CloseReason::SessionRevoked.code(), 4001);
    }
}
