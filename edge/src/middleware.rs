//! Around every request: a request id, the client's address, a tracing span and access-log
//! line (`request_trace`), the body-size limit, idempotency keys, problem+json for anything
//! that failed, the HTTP metrics (401s without a token count as `missing_token` auth
//! failures), and the audit record of mutating requests an operation serves.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mesh_contracts::ErrorCode;
use mesh_observability::metrics::{AUTH_FAILURES, HTTP_DURATION, HTTP_REQUESTS};
use poem::PathPattern;
use poem::error::ReadBodyError;
use poem::http::header::RETRY_AFTER;
use poem::http::{HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use tracing::Instrument;

use crate::SharedState;
use crate::audit::AuditTrail;
use crate::caller::Identified;
use crate::client_ip::{ClientIp, TrustedProxies};
use crate::cors::Cors;
use crate::idempotency::{Admission, Idempotency, Scope};
use crate::operations::{Operation, Operations};
use crate::problem::{ApiError, from_poem_error, problem_code};
use crate::rate_limit::RouteClass;
use crate::request_id::{REQUEST_ID_HEADER, RequestId};
use crate::request_trace::RequestTrace;
use crate::strict_json::BodySchemas;

/// What the middleware needs, built once per edge.
pub struct Layers {
    pub max_body: usize,
    pub audit: Arc<AuditTrail>,
    pub idempotency: Idempotency,
    pub proxies: TrustedProxies,
    pub cors: Cors,
    pub body_schemas: BodySchemas,
    /// The API's operations: only requests one serves are audited or keep idempotency records.
    pub operations: Operations,
    pub max_header_bytes: usize,
    pub token_refresh_hint: Duration,
    pub state: SharedState,
}

/// When the caller's access token expires.
const TOKEN_EXPIRES_AT: &str = "x-token-expires-at";
/// Set when the access token is about to expire.
const TOKEN_REFRESH_REQUIRED: &str = "x-token-refresh-required";

/// Routes outside the OpenAPI service, kept as metric labels; anything else is `unmatched`.
fn static_route(path: &str) -> &'static str {
    match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/openapi.json" => "openapi",
        "/v1/ws" => "websocket",
        "/v1/events" => "events",
        p if p.starts_with("/docs") => "docs",
        _ => "unmatched",
    }
}

pub async fn observe<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    layers: Arc<Layers>,
) -> poem::Result<Response> {
    let started = Instant::now();
    let request_id = RequestId::pick(req.headers().get(REQUEST_ID_HEADER));
    req.set_data(request_id.clone());
    let request_id = request_id.0;
    if let Some(ip) = layers.proxies.resolve(&req) {
        req.set_data(ClientIp(ip));
    }
    let operation = layers
        .operations
        .find(req.method().as_str(), req.uri().path());
    let http_method = req.method().clone();
    let method = http_method.to_string();
    let path_route = static_route(req.uri().path());
    let trace = RequestTrace::open(&req, &request_id);
    let span = trace.span.clone();
    let had_token = carries_token(&req);

    let path = req.uri().path().to_owned();
    let origin = layers.cors.origin_of(&req);
    let identified = bearer_user(&layers.state, &req);
    let user = identified.as_ref().map(|i| i.verified.caller.user_id);
    let valid_until = identified.as_ref().map(|i| i.verified.valid_until);
    if let Some(identified) = identified {
        req.set_data(identified);
    }
    let ip = crate::caller::client_ip(&req).unwrap_or_default();
    let limited = RouteClass::of(req.method(), &path).map(|class| {
        let user = user.map(|u| u.to_string());
        layers.state.limits.check_http(class, &ip, user.as_deref())
    });
    // What no operation serves, and what a limit refused, writes no audit record: neither
    // costs the client more than a token of its budget.
    let audited = match (operation, &limited) {
        (Some(_), Some(verdict)) if !verdict.taken.allowed => None,
        (Some(_), _) => layers.audit.begin(&mut req, &request_id),
        (None, _) => None,
    };
    let admission = if let Some(preflight) = layers.cors.preflight(&req) {
        Admission::Answer(Box::new(preflight))
    } else if header_bytes(&req) > layers.max_header_bytes {
        let refused = ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "the request headers exceed {} bytes",
                layers.max_header_bytes
            ),
        );
        Admission::Answer(Box::new(refused.into_response()))
    } else if let Some(refused) = limited.filter(|v| !v.taken.allowed) {
        Admission::Answer(Box::new(refused.refusal()))
    } else {
        match limit_body(&mut req, layers.max_body).await {
            Err(refused) => Admission::Answer(Box::new(refused.into_response())),
            Ok(()) => match coerced_field(&layers.body_schemas, operation, &mut req).await {
                Some(field) => {
                    let refused = ApiError::new(
                        ErrorCode::ValidationFailed,
                        format!("{field}: must be a JSON string"),
                    );
                    Admission::Answer(Box::new(refused.into_response()))
                }
                // A key on a request no operation serves holds nothing: it is answered 404 or
                // 405 every time, and keeping that answer would only cost storage.
                None if operation.is_none() => Admission::Pass,
                None => {
                    let scope = user.map_or(Scope::Client(ip.clone()), Scope::User);
                    layers.idempotency.admit(&mut req, &scope).await
                }
            },
        }
    };
    let (mut response, route) = match admission {
        Admission::Answer(answer) => (*answer, path_route),
        Admission::Pass => serve(&ep, req, &span, path_route).await,
        Admission::Reserved(reservation) => {
            let (mut response, route) = serve(&ep, req, &span, path_route).await;
            reservation.finish(&mut response).await;
            (response, route)
        }
    };
    if let Some(verdict) = limited {
        verdict.write_headers(&mut response);
    }
    if let Some(valid_until) = valid_until {
        token_hints(valid_until, layers.token_refresh_hint, &mut response);
    }
    layers.cors.decorate(origin.as_ref(), &mut response);
    crate::security_headers::apply(&path, &mut response);
    // Every 429 and 503 says when to come back, whichever limit or outage answered it.
    if matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) && !response.headers().contains_key(RETRY_AFTER)
    {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    if let Some(audited) = audited {
        // Answered before its operation ran (headers or body too large, a coerced field): the
        // record still names the operation.
        let action = match operation {
            Some(op) if route == path_route => op.id.as_str(),
            _ => route,
        };
        audited.finish(&mut response, action).await;
    }
    let status = response.status();
    if status.is_server_error() {
        tracing::error!(parent: &span, status = status.as_u16(), "request failed");
    }
    if status == StatusCode::UNAUTHORIZED
        && !had_token
        && problem_code(&mut response).await == Some(ErrorCode::Unauthorized)
    {
        AUTH_FAILURES.with_label_values(&["missing_token"]).inc();
    }
    trace.close(&http_method, &mut response, &ip, started.elapsed());
    HTTP_REQUESTS
        .with_label_values(&[route, &method, status.as_str()])
        .inc();
    HTTP_DURATION
        .with_label_values(&[route, &method])
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

/// Calls the routes; every error becomes a problem response. Also names the route served.
async fn serve<E: Endpoint>(
    ep: &E,
    req: Request,
    span: &tracing::Span,
    path_route: &'static str,
) -> (Response, &'static str) {
    match ep.call(req).instrument(span.clone()).await {
        Ok(out) => {
            let out = out.into_response();
            let route = out.data::<OperationId>().map_or(path_route, |id| id.0);
            (out, route)
        }
        Err(err) => {
            let route = err.data::<OperationId>().map_or(path_route, |id| id.0);
            let pattern = err.data::<PathPattern>().cloned();
            let _guard = span.enter();
            let mut response = from_poem_error(err);
            if let Some(pattern) = pattern {
                response.set_data(pattern);
            }
            (response, route)
        }
    }
}

/// The caller of a valid bearer token: whose limits and idempotency keys a request uses (the
/// client address stands in for anonymous requests). Routes authenticate again themselves.
fn bearer_user(state: &SharedState, req: &Request) -> Option<Identified> {
    let token = crate::handshake::bearer_token(req.headers())?;
    let verified = crate::caller::identify(state, token).ok()?;
    Some(Identified {
        token: token.to_owned(),
        verified,
    })
}

/// Whether `req` presents an access token, in any of the places the edge reads one.
fn carries_token(req: &Request) -> bool {
    crate::handshake::bearer_token(req.headers()).is_some()
        || crate::handshake::query_token(req.uri().query()).is_some()
}

/// A number or boolean where the operation's schema wants a string (the body is read from
/// memory and put back).
async fn coerced_field(
    schemas: &BodySchemas,
    operation: Option<&Operation>,
    req: &mut Request,
) -> Option<String> {
    let operation = operation?;
    let is_json = req
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !is_json {
        return None;
    }
    let body = req.take_body().into_bytes().await.unwrap_or_default();
    let found = schemas.coerced_field(&operation.id, &body);
    req.set_body(body);
    found
}

/// The size of the request's headers as sent: names, values and their separators.
fn header_bytes(req: &Request) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// `X-Token-Expires-At` (RFC 3339) on answers to authenticated requests, and
/// `X-Token-Refresh-Required: true` when less than `hint` is left.
fn token_hints(valid_until: SystemTime, hint: Duration, response: &mut Response) {
    let expires = time::OffsetDateTime::from(valid_until);
    if let Ok(text) = expires.format(&time::format_description::well_known::Rfc3339)
        && let Ok(value) = HeaderValue::from_str(&text)
    {
        response.headers_mut().insert(TOKEN_EXPIRES_AT, value);
    }
    let left = valid_until
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    if left < hint {
        response
            .headers_mut()
            .insert(TOKEN_REFRESH_REQUIRED, HeaderValue::from_static("true"));
    }
}

/// Reads the body up to `max` bytes, so no handler ever sees (or buffers) more.
async fn limit_body(req: &mut Request, max: usize) -> Result<(), ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body exceeds {max} bytes"),
        )
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    match req.take_body().into_bytes_limit(max).await {
        Ok(bytes) => {
            req.set_body(bytes);
            Ok(())
        }
        Err(ReadBodyError::PayloadTooLarge) => Err(too_large()),
        Err(_) => Err(ApiError::new(
            ErrorCode::BadRequest,
            "the body could not be read",
        )),
    }
}
