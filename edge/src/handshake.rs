//! What a request must show before it is served: an allowed `Origin` (WebSocket, CORS) and
//! an access token, from the `Authorization` header, the WebSocket subprotocol list
//! (`bearer, <token>`, for browsers) or the `access_token` query parameter (for EventSource).

use poem::http::HeaderMap;
use poem::http::header::{AUTHORIZATION, HOST, ORIGIN};

/// The subprotocol a browser names, followed by its token, to authenticate a WebSocket.
pub const BEARER_PROTOCOL: &str = "bearer";

/// True when a browser request with these headers may open a WebSocket or event stream: its
/// `Origin` passes [`origin_allowed`], or it is the edge's own origin (a page the edge served,
/// such as the console: `Origin`'s host and port equal `Host`). A page elsewhere cannot pass
/// the second test, since its browser sends its own origin with our `Host`.
pub fn request_origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    // An `Origin` that is not text cannot be on the list.
    let origin = headers.get(ORIGIN).map(|v| v.to_str().unwrap_or(""));
    origin_allowed(origin, allowed) || same_origin(origin, headers.get(HOST))
}

/// `Origin` (`scheme://host[:port]`) names the host and port of the `Host` header.
fn same_origin(origin: Option<&str>, host: Option<&poem::http::HeaderValue>) -> bool {
    let (Some(origin), Some(host)) = (origin, host.and_then(|h| h.to_str().ok())) else {
        return false;
    };
    let authority = origin.trim().trim_end_matches('/');
    let authority = authority
        .strip_prefix("http://")
        .or_else(|| authority.strip_prefix("https://"));
    authority.is_some_and(|a| !a.is_empty() && a.eq_ignore_ascii_case(host.trim()))
}

/// True when a request from `origin` may open a WebSocket: no `Origin` (not a browser), an
/// allowlist containing `*`, or an origin on the list (compared case-insensitively).
pub fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim().trim_end_matches('/');
    allowed.iter().any(|entry| {
        let entry = entry.trim();
        entry == "*" || entry.trim_end_matches('/').eq_ignore_ascii_case(origin)
    })
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The token of `Sec-WebSocket-Protocol: bearer, <token>`: the entry after `bearer`.
pub fn subprotocol_token(protocols: &str) -> Option<&str> {
    let mut entries = protocols.split(',').map(str::trim);
    entries.find(|entry| *entry == BEARER_PROTOCOL)?;
    entries
        .next()
        .filter(|token| !token.is_empty() && *token != BEARER_PROTOCOL)
}

/// The `access_token` query parameter. Access tokens are JWTs, whose characters never need
/// percent-encoding, so the value is taken as it is (an encoded one fails verification).
pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    #[test]
    fn origins_are_checked_against_the_allowlist() {
        let allowed = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed(None, &allowed));
        assert!(origin_allowed(Some("https://app.example.com"), &allowed));
        assert!(origin_allowed(Some("HTTPS://App.Example.com/"), &allowed));
        assert!(!origin_allowed(Some("https://evil.example.com"), &allowed));
        assert!(!origin_allowed(Some("http://app.example.com"), &allowed));
        assert!(!origin_allowed(Some("https://app.example.com"), &[]));
        assert!(origin_allowed(Some("https://any.where"), &["*".to_owned()]));
    }

    #[test]
    fn the_edges_own_pages_may_connect() {
        let headers = |origin: &'static str, host: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(ORIGIN, HeaderValue::from_static(origin));
            h.insert(HOST, HeaderValue::from_static(host));
            h
        };
        let none: &[String] = &[];
        assert!(request_origin_allowed(
            &headers("http://127.0.0.1:8080", "127.0.0.1:8080"),
            none
        ));
        assert!(request_origin_allowed(
            &headers("https://Chat.example.com", "chat.example.com"),
            none
        ));
        assert!(!request_origin_allowed(
            &headers("https://evil.example", "chat.example.com"),
            none
        ));
        assert!(!request_origin_allowed(
            &headers("http://127.0.0.1:9999", "127.0.0.1:8080"),
            none
        ));
        assert!(!request_origin_allowed(&headers("null", "null"), none));
        assert!(request_origin_allowed(&HeaderMap::new(), none));
    }

    #[test]
    fn bearer_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a.b.c"));
        assert_eq!(bearer_token(&headers), Some("a.b.c"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer   a.b.c "));
        assert_eq!(bearer_token(&headers), Some("a.b.c"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic dXNlcg=="));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn tokens_in_the_subprotocol_list() {
        assert_eq!(subprotocol_token("bearer, a.b.c"), Some("a.b.c"));
        assert_eq!(subprotocol_token("chat.v1,bearer,a.b.c"), Some("a.b.c"));
        assert_eq!(subprotocol_token("a.b.c, bearer"), None);
        assert_eq!(subprotocol_token("bearer"), None);
        assert_eq!(subprotocol_token("bearer, bearer"), None);
        assert_eq!(subprotocol_token("bearer, "), None);
        assert_eq!(subprotocol_token("chat.v1"), None);
        assert_eq!(subprotocol_token("Bearer, a.b.c"), None);
    }

    #[test]
    fn tokens_in_the_query() {
        assert_eq!(query_token(Some("access_token=a.b.c")), Some("a.b.c"));
        assert_eq!(
            query_token(Some("x=1&access_token=a.b.c&y=2")),
            Some("a.b.c")
        );
        assert_eq!(query_token(Some("my_access_token=a.b.c")), None);
        assert_eq!(query_token(Some("access_token=")), None);
        assert_eq!(query_token(None), None);
    }
}
