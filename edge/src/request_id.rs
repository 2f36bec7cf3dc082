//! The id correlating one request's logs across the mesh: taken from `x-request-id` when the
//! client sends a usable one, generated otherwise, and echoed on the response.

use poem::http::HeaderValue;
use uuid::Uuid;

/// This request's id, stored in the request's data by the middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The header that carries it, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

impl RequestId {
    /// Keeps a client-supplied id only if it is short and plain; otherwise makes a new one.
    pub fn pick(given: Option<&HeaderValue>) -> Self {
        let kept = given
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 64)
            .filter(|v| {
                v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            })
            .map(str::to_owned);
        Self(kept.unwrap_or_else(|| Uuid::now_v7().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        let keep = HeaderValue::from_static("abc-123_x.y");
        assert_eq!(RequestId::pick(Some(&keep)).0, "abc-123_x.y");
        let evil = HeaderValue::from_static("a b<script>");
        assert_ne!(RequestId::pick(Some(&evil)).0, "a b<script>");
        let long = HeaderValue::from_str(&"a".repeat(65)).unwrap();
        assert_eq!(RequestId::pick(Some(&long)).0.len(), 36);
        assert_eq!(RequestId::pick(None).0.len(), 36);
    }
}
