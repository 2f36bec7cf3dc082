//! The one place where failures become HTTP responses: RFC 9457 problem+json documents with
//! a stable `code`. Internal details never reach the client; 5xx causes are logged here.

use mesh_contracts::{ErrorCode, Problem, ServiceError};
use mesh_nats::RpcError;
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::ApiResponse;
use poem_openapi::payload::Json;

/// Every error response of the API.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request was refused; `code` says why.
    #[oai(status_range = "4XX", content_type = "application/problem+json")]
    Client(StatusCode, Json<Problem>),
    /// The mesh could not serve the request; retrying may help for 503 and 504.
    #[oai(status_range = "5XX", content_type = "application/problem+json")]
    Server(StatusCode, Json<Problem>),
}

pub type ApiResult<T> = Result<Json<T>, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let problem = Problem::new(code, detail);
        if status.is_server_error() {
            ApiError::Server(status, Json(problem))
        } else {
            ApiError::Client(status, Json(problem))
        }
    }

    pub fn code(&self) -> &str {
        match self {
            ApiError::Client(_, p) | ApiError::Server(_, p) => &p.0.code,
        }
    }

    /// The client-safe explanation.
    pub fn detail(&self) -> &str {
        match self {
            ApiError::Client(_, p) | ApiError::Server(_, p) => &p.0.detail,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        // Services put only client-safe text in their messages; internal ones are generic.
        ApiError::new(err.code, err.message)
    }
}

impl From<RpcError> for ApiError {
    fn from(err: RpcError) -> Self {
        match err {
            RpcError::Service(err) => err.into(),
            RpcError::Unavailable(why) => {
                tracing::warn!(reason = %why, "backend unavailable");
                ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    "a backend service is unavailable; try again",
                )
            }
            RpcError::Timeout(after) => {
                tracing::warn!(after = ?after, "backend timed out");
                ApiError::new(
                    ErrorCode::Timeout,
                    "a backend service did not answer in time",
                )
            }
            RpcError::Transport(why) => {
                tracing::error!(reason = %why, "cannot reach backend");
                ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    "a backend service is unreachable; try again",
                )
            }
            RpcError::Decode(why) => {
                tracing::error!(reason = %why, "cannot decode backend reply");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

/// Turns any error that escaped a handler (routing, extraction, body parsing) into a problem.
pub fn from_poem_error(err: poem::Error) -> Response {
    if err.is_from_response() {
        // Already a response we built (an `ApiError`).
        return err.into_response();
    }
    if is_failed_upgrade(&err) {
        // poem answers a handshake it cannot upgrade 500 when the connection offers no upgrade
        // (HTTP/1.0, HTTP/2): the client's fault, like any other malformed handshake.
        return ApiError::new(
            ErrorCode::BadRequest,
            "not a WebSocket handshake: send an HTTP/1.1 GET with `Connection: Upgrade`, \
             `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and `Sec-WebSocket-Key`",
        )
        .into_response();
    }
    let status = err.status();
    let code = match status {
        StatusCode::BAD_REQUEST if is_validation_failure(&err) => ErrorCode::ValidationFailed,
        StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::ServiceUnavailable,
        s if s.is_client_error() => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    };
    let detail = if status.is_client_error() {
        // poem's own messages describe the request's fault (bad JSON, missing header...).
        err.to_string()
    } else {
        tracing::error!(error = %err, "unhandled error");
        "internal error".to_owned()
    };
    ApiError::new(code, detail).into_response()
}

/// The `code` of a problem response, read back from its (small, in-memory) body, which is put
/// back untouched. `None` for any other response.
pub async fn problem_code(response: &mut Response) -> Option<ErrorCode> {
    #[derive(serde::Deserialize)]
    struct Coded {
        code: String,
    }
    let is_problem = response
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if !is_problem {
        return None;
    }
    let body = response.take_body().into_bytes().await.ok()?;
    let coded = serde_json::from_slice::<Coded>(&body).ok();
    response.set_body(body);
    ErrorCode::parse(&coded?.code)
}

/// A WebSocket handshake that could not be upgraded (malformed, or on a connection that
/// cannot switch protocols).
fn is_failed_upgrade(err: &poem::Error) -> bool {
    use poem::error::{UpgradeError, WebSocketError};
    err.is::<WebSocketError>() || err.is::<UpgradeError>()
}

/// A well-formed request whose field or parameter broke a declared constraint, as opposed to
/// one that could not be parsed at all.
fn is_validation_failure(err: &poem::Error) -> bool {
    use poem_openapi::error::{ParseParamError, ParsePathError, ParseRequestPayloadError};
    err.is::<ParseParamError>()
        || err.is::<ParsePathError>()
        || err
            .downcast_ref::<ParseRequestPayloadError>()
            .is_some_and(|e| e.to_string().contains("verification failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_rpc_failures_do_not_leak_details() {
        let err: ApiError = RpcError::Decode("secret table users.accounts".into()).into();
        let ApiError::Server(status, problem) = err else {
            panic!("expected a server error")
        };
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!problem.0.detail.contains("secret"));
        assert_eq!(problem.0.code, "internal");
    }

    #[tokio::test]
    async fn problem_codes_are_read_back_and_the_body_kept() {
        let mut response = ApiError::new(ErrorCode::NotFound, "no such user").into_response();
        assert_eq!(problem_code(&mut response).await, Some(ErrorCode::NotFound));
        let body = response.into_body().into_string().await.unwrap();
        assert!(body.contains("no such user"), "{body}");
        let mut plain = Response::builder().body("not found");
        assert_eq!(problem_code(&mut plain).await, None);
    }

    #[tokio::test]
    async fn failed_websocket_upgrades_are_bad_requests() {
        use poem::error::{UpgradeError, WebSocketError};
        for err in [
            poem::Error::from(WebSocketError::UpgradeError(UpgradeError::NoUpgrade)),
            poem::Error::from(UpgradeError::NoUpgrade),
            poem::Error::from(WebSocketError::InvalidProtocol),
        ] {
            let mut response = from_poem_error(err);
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            assert_eq!(
                problem_code(&mut response).await,
                Some(ErrorCode::BadRequest)
            );
        }
    }

    #[test]
    fn rpc_failures_map_to_their_statuses() {
        let unavailable: ApiError = RpcError::Unavailable("no responders".into()).into();
        assert_eq!(unavailable.code(), "service_unavailable");
        let timeout: ApiError = RpcError::Timeout(std::time::Duration::from_secs(1)).into();
        assert_eq!(timeout.code(), "timeout");
        let refused: ApiError =
            RpcError::Service(ServiceError::new(ErrorCode::PhoneTaken, "taken")).into();
        assert!(matches!(refused, ApiError::Client(s, _) if s == StatusCode::CONFLICT));
    }
}
