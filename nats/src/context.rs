//! Who is calling and on behalf of whom: the context every RPC carries in its headers.

use async_nats::HeaderMap;
use uuid::Uuid;

use crate::headers;

/// Set by the edge after it verified the caller's token; read by services to authorize.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// Correlates logs across the mesh; echoed to the client as `x-request-id`.
    pub request_id: String,
    /// The authenticated user, if the call is made on behalf of one.
    pub user_id: Option<Uuid>,
    /// The session (device) of that user.
    pub session_id: Option<Uuid>,
    /// The client's address as the edge saw it.
    pub client_ip: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

impl CallContext {
    pub fn new(request_id: impl Into<String>) -> Self {
        Self {
            request_id: request_id.into(),
            ..Self::default()
        }
    }

    /// A context for work the mesh starts itself (no user).
    pub fn internal() -> Self {
        Self::new(Uuid::now_v7().to_string())
    }

    /// The user the call is made for, or `unauthorized` when it carries none.
    pub fn require_user(&self) -> Result<Uuid, mesh_contracts::ServiceError> {
        self.user_id.ok_or_else(|| {
            mesh_contracts::ServiceError::new(
                mesh_contracts::ErrorCode::Unauthorized,
                "this operation needs a signed-in user",
            )
        })
    }

    pub fn with_user(mut self, user_id: Uuid, session_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self.session_id = Some(session_id);
        self
    }

    pub(crate) fn write_headers(&self, map: &mut HeaderMap) {
        map.insert(
            headers::REQUEST_ID,
            headers::sanitize(&self.request_id, 128).as_str(),
        );
        if let Some(user) = self.user_id {
            map.insert(headers::USER_ID, user.to_string().as_str());
        }
        if let Some(session) = self.session_id {
            map.insert(headers::SESSION_ID, session.to_string().as_str());
        }
        if let Some(ip) = &self.client_ip {
            map.insert(headers::CLIENT_IP, headers::sanitize(ip, 64).as_str());
        }
        if let Some(agent) = &self.user_agent {
            map.insert(headers::USER_AGENT, headers::sanitize(agent, 256).as_str());
        }
    }

    pub(crate) fn read_headers(map: Option<&HeaderMap>) -> Self {
        let Some(map) = map else {
            return Self::internal();
        };
        let text = |name: &str| {
            map.get(name)
                .map(|v| v.as_str().to_owned())
                .filter(|v| !v.is_empty())
        };
        let uuid = |name: &str| text(name).and_then(|v| Uuid::parse_str(&v).ok());
        Self {
            request_id: text(headers::REQUEST_ID).unwrap_or_else(|| Uuid::now_v7().to_string()),
            user_id: uuid(headers::USER_ID),
            session_id: uuid(headers::SESSION_ID),
            client_ip: text(headers::CLIENT_IP),
            user_agent: text(headers::USER_AGENT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_round_trips_through_headers() {
        let mut ctx = CallContext::new("req-1").with_user(Uuid::now_v7(), Uuid::now_v7());
        ctx.client_ip = Some("127.0.0.1".into());
        ctx.user_agent = Some("curl/8".into());
        let mut map = HeaderMap::new();
        ctx.write_headers(&mut map);
        assert_eq!(CallContext::read_headers(Some(&map)), ctx);
    }

    #[test]
    fn garbage_ids_are_dropped_and_line_breaks_stripped() {
        let mut map = HeaderMap::new();
        map.insert(headers::USER_ID, "not-a-uuid");
        let ctx = CallContext::read_headers(Some(&map));
        assert_eq!(ctx.user_id, None);
        assert!(!ctx.request_id.is_empty());

        let mut evil = CallContext::new("a\r\nb");
        evil.user_agent = Some("x\ny".into());
        let mut map = HeaderMap::new();
        evil.write_headers(&mut map);
        let back = CallContext::read_headers(Some(&map));
        assert_eq!(back.request_id, "ab");
        assert_eq!(back.user_agent.as_deref(), Some("xy"));
    }
}
