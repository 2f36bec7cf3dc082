//! CORS for browser pages on the origins of `MESH_CORS_ALLOWED_ORIGINS`: preflights are
//! answered here (204, or 403 for an origin not on the list), and answers to allowed origins
//! name the origin and expose the headers a client needs. Other origins get no CORS headers,
//! so browsers keep the answer from the page. Tokens travel in `Authorization`, never in
//! cookies, so credentials are not allowed.

use poem::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use poem::http::{HeaderValue, Method, StatusCode};
use poem::{IntoResponse, Request, Response};

use crate::handshake::origin_allowed;
use crate::problem::ApiError;

/// Methods of the API.
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
/// Request headers a page may send.
const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, x-idempotency-key, \
    x-request-id, traceparent, tracestate";
/// Response headers a page may read.
pub const EXPOSE_HEADERS: &str = "x-request-id, retry-after, ratelimit, ratelimit-policy, \
    idempotent-replayed, x-token-expires-at, x-token-refresh-required, location, traceresponse";
/// How long a browser may cache a preflight, in seconds.
const MAX_AGE: &str = "600";

/// The allowed origins.
pub struct Cors {
    allowed: Vec<String>,
}

impl Cors {
    pub fn new(allowed: Vec<String>) -> Self {
        Self { allowed }
    }

    /// The request's `Origin`, when it is on the list.
    fn allowed_origin<'r>(&self, req: &'r Request) -> Option<&'r HeaderValue> {
        let origin = req.headers().get(ORIGIN)?;
        let text = origin.to_str().ok()?;
        (!self.allowed.is_empty() && origin_allowed(Some(text), &self.allowed)).then_some(origin)
    }

    /// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`), if `req` is
    /// one.
    pub fn preflight(&self, req: &Request) -> Option<Response> {
        let is_preflight = req.method() == Method::OPTIONS
            && req.headers().contains_key(ORIGIN)
            && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if !is_preflight {
            return None;
        }
        let Some(origin) = self.allowed_origin(req) else {
            return Some(
                ApiError::new(
                    mesh_contracts::ErrorCode::Forbidden,
                    "this origin may not call the API",
                )
                .into_response(),
            );
        };
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
        headers.insert(VARY, HeaderValue::from_static("origin"));
        Some(response)
    }

    /// Adds the CORS headers of an allowed origin to the answer of an actual request.
    pub fn decorate(&self, origin: Option<&HeaderValue>, response: &mut Response) {
        let headers = response.headers_mut();
        headers.append(VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = origin {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }

    /// The origin to name in the answer to `req`, read before the request is consumed.
    pub fn origin_of(&self, req: &Request) -> Option<HeaderValue> {
        self.allowed_origin(req).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors::new(vec!["https://app.example".into()])
    }

    fn preflight(origin: &str) -> Request {
        Request::builder()
            .method(Method::OPTIONS)
            .header(ORIGIN, origin)
            .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .finish()
    }

    #[test]
    fn preflights_of_listed_origins_are_allowed() {
        let ok = cors().preflight(&preflight("https://app.example")).unwrap();
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            ok.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        let refused = cors()
            .preflight(&preflight("https://evil.example"))
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let plain = Request::builder().method(Method::OPTIONS).finish();
        assert!(cors().preflight(&plain).is_none());
        // An empty list allows no browser origin.
        let none = Cors::new(vec![]).preflight(&preflight("https://app.example"));
        assert_eq!(none.unwrap().status(), StatusCode::FORBIDDEN);
    }
}
