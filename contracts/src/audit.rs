//! The audit log on the wire: the record an edge publishes on `<prefix>.audit` for each
//! mutating request, and the admins' query of the log (`list_audit`, answered by the outbox
//! role).
//!
//! A record never holds a request or response body, a token or a password: only who did what
//! to which resource, and how it ended.

use poem_openapi::Object;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::rpc;
use crate::rpc::Service;

/// `result` of a request that succeeded (any status below 400).
pub const RESULT_OK: &str = "ok";
/// Longest `path` and `target` kept, in bytes.
pub const MAX_AUDIT_PATH_LEN: usize = 200;
/// Longest `action` and `result` kept (and `action` accepted in a query), in bytes.
pub const MAX_AUDIT_ACTION_LEN: usize = 64;
/// Longest `request_id` kept, in bytes.
const MAX_AUDIT_REQUEST_ID_LEN: usize = 128;
/// Longest `method` and `client_ip` kept, in bytes.
const MAX_AUDIT_SHORT_LEN: usize = 64;

/// One mutating request as the edge saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct AuditRecord {
    /// UUIDv7, so records sort by time.
    pub id: Uuid,
    /// When the request was answered.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The signed-in user who made the request, when the route authenticated one.
    pub actor_id: Option<Uuid>,
    /// That user's session (device).
    pub session_id: Option<Uuid>,
    /// The operation id of the route (`send_friend_request`), or `unmatched`.
    pub action: String,
    /// The HTTP method.
    pub method: String,
    /// The route pattern (`/v1/groups/:group_id/members`), or the raw path (at most 200 bytes)
    /// when no route matched.
    pub path: String,
    /// The resource the request named in its path: `name=value` for each path parameter.
    pub target: Option<String>,
    /// The HTTP status of the response.
    pub status: u16,
    /// `ok`, or the problem's error code (`not_found`, `duplicate_request`...).
    pub result: String,
    /// The client's address as the edge saw it.
    pub client_ip: Option<String>,
    /// The request id (`x-request-id`), to find the request's logs and traces.
    pub request_id: String,
}

impl AuditRecord {
    /// The record with every text field bounded and free of NUL characters (which Postgres
    /// text refuses), so any record fits the audit table.
    pub fn bounded(self) -> Self {
        Self {
            action: clip(&self.action, MAX_AUDIT_ACTION_LEN),
            method: clip(&self.method, MAX_AUDIT_SHORT_LEN),
            path: clip(&self.path, MAX_AUDIT_PATH_LEN),
            target: self.target.map(|t| clip(&t, MAX_AUDIT_PATH_LEN)),
            result: clip(&self.result, MAX_AUDIT_ACTION_LEN),
            client_ip: self.client_ip.map(|ip| clip(&ip, MAX_AUDIT_SHORT_LEN)),
            request_id: clip(&self.request_id, MAX_AUDIT_REQUEST_ID_LEN),
            ..self
        }
    }
}

/// `text` without NUL characters, cut to at most `max` bytes at a character boundary.
pub fn clip(text: &str, max: usize) -> String {
    let mut clipped: String = text.chars().filter(|c| *c != '\0').collect();
    let mut end = clipped.len().min(max);
    while !clipped.is_char_boundary(end) {
        end -= 1;
    }
    clipped.truncate(end);
    clipped
}

/// Which records to list, newest first. `from` is inclusive, `to` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAuditRequest {
    /// Only records of this actor.
    pub user_id: Option<Uuid>,
    /// Only records of this action (an operation id).
    pub action: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A page of audit records, newest first; pass `next_cursor` back to read older ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    pub next_cursor: Option<String>,
}

rpc!(
    /// Admin: lists audit records.
    ListAudit, Service::Outbox, "list_audit", ListAuditRequest => AuditPage
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_rfc3339_times() {
        let record = AuditRecord {
            id: Uuid::now_v7(),
            at: time::macros::datetime!(2025-01-02 03:04:05.123 UTC),
            actor_id: Some(Uuid::now_v7()),
            session_id: None,
            action: "send_friend_request".into(),
            method: "POST".into(),
            path: "/v1/friend-requests".into(),
            target: None,
            status: 201,
            result: RESULT_OK.into(),
            client_ip: Some("127.0.0.1".into()),
            request_id: "r-1".into(),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["at"], "2025-01-02T03:04:05.123Z");
        assert_eq!(serde_json::from_value::<AuditRecord>(json).unwrap(), record);
    }

    #[test]
    fn clipping_respects_bounds_characters_and_nul() {
        assert_eq!(clip("/v1/x", 200), "/v1/x");
        assert_eq!(clip(&"a".repeat(500), 200).len(), 200);
        let wide = clip(&"é".repeat(150), 201);
        assert_eq!(wide.len(), 200);
        assert_eq!(clip("a\0b", 10), "ab");
    }

    #[test]
    fn bounded_records_fit_the_table() {
        let record = AuditRecord {
            id: Uuid::now_v7(),
            at: OffsetDateTime::now_utc(),
            actor_id: None,
            session_id: None,
            action: "x".repeat(100),
            method: "POST".into(),
            path: "/".repeat(300),
            target: Some("t\0".into()),
            status: 404,
            result: "not_found".into(),
            client_ip: None,
            request_id: "r".repeat(300),
        }
        .bounded();
        assert_eq!(record.action.len(), MAX_AUDIT_ACTION_LEN);
        assert_eq!(record.path.len(), MAX_AUDIT_PATH_LEN);
        assert_eq!(record.target.as_deref(), Some("t"));
        assert_eq!(record.request_id.len(), MAX_AUDIT_REQUEST_ID_LEN);
    }

    #[test]
    fn an_empty_query_decodes() {
        let query: ListAuditRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(query, ListAuditRequest::default());
    }
}
