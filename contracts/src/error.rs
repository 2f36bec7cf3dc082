//! Stable error codes shared by every service and the edge, and the RPC error reply.

use poem_openapi::Object;
use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:literal, $title:literal)),+ $(,)?) => {
        /// A stable, machine-readable error code. Clients branch on these strings; never rename one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $(#[serde(rename = $code)] $variant,)+
        }

        impl ErrorCode {
            /// Every code, for documentation and exhaustive tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The wire spelling of the code.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)+ }
            }

            /// Parses the wire spelling back into a code.
            pub fn parse(code: &str) -> Option<Self> {
                match code { $($code => Some(ErrorCode::$variant),)+ _ => None }
            }

            /// The HTTP status the edge answers with for this code.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)+ }
            }

            /// A refusal for now, not for what was asked: sending the same again later may work
            /// (the client contract resends these, in order).
            pub fn is_transient(self) -> bool {
                matches!(self, ErrorCode::ServiceUnavailable | ErrorCode::Overloaded | ErrorCode::Timeout)
            }

            /// A short human title, the same for every occurrence of the code (RFC 9457 `title`).
            pub fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)+ }
            }
        }
    };
}

error_codes! {
    BadRequest => ("bad_request", 400, "The request is malformed"),
    ValidationFailed => ("validation_failed", 400, "A field has an invalid value"),
    Unauthorized => ("unauthorized", 401, "Authentication is required"),
    InvalidToken => ("invalid_token", 401, "The access token is invalid"),
    TokenExpired => ("token_expired", 401, "The access token has expired"),
    SessionRevoked => ("session_revoked", 401, "The session has been revoked"),
    InvalidCredentials => ("invalid_credentials", 401, "Phone or password is wrong"),
    InvalidRefreshToken => ("invalid_refresh_token", 401, "The refresh token is invalid or expired"),
    RefreshTokenReused => ("refresh_token_reused", 401, "The refresh token was already used; the session is revoked"),
    Forbidden => ("forbidden", 403, "The caller may not do this"),
    AccountDisabled => ("account_disabled", 403, "The account is disabled"),
    NotFound => ("not_found", 404, "No such resource"),
    MethodNotAllowed => ("method_not_allowed", 405, "Method not allowed on this resource"),
    Conflict => ("conflict", 409, "The request conflicts with the current state"),
    PhoneTaken => ("phone_taken", 409, "The phone number is already registered"),
    RefreshConflict => ("refresh_conflict", 409, "The refresh token is being rotated by another request"),
    PayloadTooLarge => ("payload_too_large", 413, "The request body is too large"),
    UnsupportedMediaType => ("unsupported_media_type", 415, "The request body must be application/json"),
    RateLimited => ("rate_limited", 429, "Too many requests"),
    Internal => ("internal", 500, "Internal error"),
    ServiceUnavailable => ("service_unavailable", 503, "A backend service is unavailable"),
    Overloaded => ("overloaded", 503, "The mesh is at capacity; send again after a moment"),
    Timeout => ("timeout", 504, "A backend service did not answer in time"),
    AlreadyFriends => ("already_friends", 409, "The users are already friends"),
    Blocked => ("blocked", 403, "A block between the users forbids this"),
    DuplicateRequest => ("duplicate_request", 409, "A pending request already exists"),
    RequestHandled => ("request_handled", 409, "The request was already handled"),
    SelfTarget => ("self_target", 400, "The operation cannot target the caller"),
    NotMember => ("not_member", 403, "The caller is not a member of the group"),
    AlreadyMember => ("already_member", 409, "The user is already a member of the group"),
    GroupFull => ("group_full", 409, "The group has no room for more members"),
    OwnerMustTransfer => ("owner_must_transfer", 409, "The owner must transfer ownership first"),
    InviteOnly => ("invite_only", 403, "The group admits members by invitation only"),
    NotFriends => ("not_friends", 403, "Private messages need a friendship"),
    Muted => ("muted", 403, "The sender is muted in this group"),
    MessageTooLarge => ("message_too_large", 413, "The message is too large"),
    UnknownConversation => ("unknown_conversation", 404, "No such conversation"),
    RecallWindowPassed => ("recall_window_passed", 409, "The message is too old to recall"),
    InvalidText => ("invalid_text", 400, "A text field holds characters that are not allowed"),
    Unstorable => ("unstorable", 422, "The message could not be stored and was set aside"),
    Hidden => ("hidden", 403, "The caller may not see this"),
    InvalidIdempotencyKey => ("invalid_idempotency_key", 400, "The Idempotency-Key header is malformed"),
    IdempotencyInProgress => ("idempotency_in_progress", 409, "A request with this Idempotency-Key is still being processed"),
    IdempotencyKeyMismatch => ("idempotency_key_mismatch", 422, "The Idempotency-Key was used with a different request"),
    HeadersTooLarge => ("headers_too_large", 431, "The request headers are too large"),
    LoginLocked => ("login_locked", 429, "Too many failed sign-ins; try again later"),
    QuotaExceeded => ("quota_exceeded", 429, "A usage limit of the plan is reached"),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error a service answers an RPC with: a stable code and a message safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An internal failure: the message is generic on purpose, the cause goes to the log.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }

    pub fn is_client_error(&self) -> bool {
        self.code.http_status() < 500
    }
}

/// The body of every error answer of the HTTP API: an RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:nats-mesh:error:<code>`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary, the same for every occurrence of `code`.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request, safe to show.
    pub detail: String,
    /// The stable error code to branch on (see `ErrorCode`).
    pub code: String,
}

impl Problem {
    /// The problem document answering `code`, with this request's client-safe `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:nats-mesh:error:{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.http_status(),
            detail: detail.into(),
            code: code.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_wire_spelling() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), *code);
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }

    #[test]
    fn a_problem_names_its_code_status_and_title() {
        let problem = Problem::new(ErrorCode::GroupFull, "no room");
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["type"], "urn:nats-mesh:error:group_full");
        assert_eq!(json["status"], 409);
        assert_eq!(json["code"], "group_full");
        assert_eq!(json["title"], ErrorCode::GroupFull.title());
        assert_eq!(json["detail"], "no room");
    }

    #[test]
    fn codes_map_to_error_statuses_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.http_status()), "{code}");
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
        }
    }
}
