//! The audit record of every mutating HTTP request (POST, PUT, PATCH, DELETE) an operation
//! serves, built by the middleware once the response is ready and published without waiting, so
//! the audit log never slows or fails a request. A request no operation serves, or one a limit
//! refused, leaves none: such records would cost the mesh storage at no cost to the client.
//!
//! A record says who (the caller the route authenticated), what (the operation id and its route
//! template), on which resource (the path parameters), how it ended (status and problem code),
//! from where (client ip) and which request (request id). It never holds a body, a query
//! string, a header, a token or a password. WebSocket frames (chat `send` included) are not HTTP
//! requests and are not recorded; `POST /v1/messages` is.

use std::sync::Arc;

use bytes::Bytes;
use mesh_contracts::audit::{AuditRecord, RESULT_OK};
use mesh_nats::Bus;
use poem::http::Method;
use poem::{Request, Response};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::caller::{CallerSlot, client_ip};
use crate::operations::Operations;
use crate::problem::problem_code;

/// Publishes this edge's audit records.
pub struct AuditTrail {
    bus: Bus,
    /// The operations whose route templates (`/v1/groups/{group_id}`) records name.
    operations: Operations,
}

/// A mutating request being served, until its record is published.
pub struct Pending {
    trail: Arc<AuditTrail>,
    method: Method,
    raw_path: String,
    client_ip: Option<String>,
    request_id: String,
    /// Filled by `BearerAuth` if the route authenticated the caller.
    caller: CallerSlot,
}

impl AuditTrail {
    pub fn new(bus: Bus, operations: Operations) -> Self {
        Self { bus, operations }
    }

    /// Starts the record of `req` if it mutates: remembers what the record needs from the
    /// request and leaves a slot in it for the authenticated caller.
    pub fn begin(self: &Arc<Self>, req: &mut Request, request_id: &str) -> Option<Pending> {
        if !is_mutating(req.method()) {
            return None;
        }
        let caller = CallerSlot::default();
        req.set_data(caller.clone());
        Some(Pending {
            trail: self.clone(),
            method: req.method().clone(),
            raw_path: req.uri().path().to_owned(),
            client_ip: client_ip(req),
            request_id: request_id.to_owned(),
            caller,
        })
    }
}

impl Pending {
    /// Publishes the record of the request, answered with `response` by operation `action`.
    pub async fn finish(self, response: &mut Response, action: &str) {
        let status = response.status();
        let result = if status.as_u16() < 400 {
            RESULT_OK.to_owned()
        } else {
            problem_code(response)
                .await
                .map_or_else(|| status.as_u16().to_string(), |code| code.to_string())
        };
        let trail = self.trail.clone();
        let record = self.record(action, status.as_u16(), result).bounded();
        let payload = serde_json::to_vec(&record).expect("audit records serialize");
        trail.bus.publish_audit(Bytes::from(payload));
    }

    fn record(self, action: &str, status: u16, result: String) -> AuditRecord {
        let template = self.trail.operations.by_id(action).map(|op| &op.template);
        let caller = self.caller.caller();
        AuditRecord {
            id: Uuid::now_v7(),
            at: OffsetDateTime::now_utc(),
            actor_id: caller.map(|c| c.user_id),
            session_id: caller.map(|c| c.session_id),
            action: action.to_owned(),
            method: self.method.to_string(),
            path: template.map_or_else(|| self.raw_path.clone(), Clone::clone),
            target: template.and_then(|template| target(template, &self.raw_path)),
            status,
            result,
            client_ip: self.client_ip,
            request_id: self.request_id,
        }
    }
}

fn is_mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// `name=value` for each `{name}` segment of `template`, read from the same segment of `path`.
fn target(template: &str, path: &str) -> Option<String> {
    let params: Vec<String> = template
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(pattern, value)| {
            let name = pattern.strip_prefix('{')?.strip_suffix('}')?;
            Some(format!("{name}={value}"))
        })
        .collect();
    (!params.is_empty()).then(|| params.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_the_path_parameters() {
        assert_eq!(
            target(
                "/v1/groups/{group_id}/members/{user_id}",
                "/v1/groups/g1/members/u2"
            ),
            Some("group_id=g1,user_id=u2".into())
        );
        assert_eq!(target("/v1/friend-requests", "/v1/friend-requests"), None);
    }

    #[test]
    fn only_mutating_methods_are_recorded() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_mutating(&method));
        }
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!is_mutating(&method));
        }
    }
}
