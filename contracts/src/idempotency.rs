//! What edges store in the idempotency bucket under a request's key: a reservation while the
//! first request runs, then its response, replayed to retries on any edge. Neither holds the
//! request or the response in the clear: the fingerprint is keyed and the response sealed, both
//! with a key derived from what only a retry carries (the edge's `idempotency/seal.rs`).

use serde::{Deserialize, Serialize};

/// One entry of the `<P>_IDEMPOTENCY` bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IdempotencyRecord {
    /// The first request is being served; a retry gets 409 until `lease_until_ms`, after which
    /// the reservation counts as abandoned (its edge crashed) and may be taken over.
    InFlight {
        /// HMAC-SHA256 of the query string and body (hex), keyed with the operation's seal.
        fingerprint: String,
        lease_until_ms: i64,
    },
    /// The first response (status < 500), replayed until `expires_at_ms`.
    Done {
        fingerprint: String,
        expires_at_ms: i64,
        /// The `StoredResponse` as JSON, sealed with XChaCha20-Poly1305 under the operation's
        /// seal and bound to the bucket key: base64 (no padding) of the 24-byte nonce, then
        /// the ciphertext.
        sealed: String,
    },
}

/// A response as replayed: its status, the headers that matter and the body (stored sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    /// (name, value) pairs, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, as sent (JSON documents are UTF-8).
    pub body: String,
}

impl IdempotencyRecord {
    pub fn fingerprint(&self) -> &str {
        match self {
            IdempotencyRecord::InFlight { fingerprint, .. }
            | IdempotencyRecord::Done { fingerprint, .. } => fingerprint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let done = IdempotencyRecord::Done {
            fingerprint: "f".into(),
            expires_at_ms: 7,
            sealed: "c2VhbGVk".into(),
        };
        let json = serde_json::to_vec(&done).unwrap();
        assert_eq!(
            serde_json::from_slice::<IdempotencyRecord>(&json).unwrap(),
            done
        );
        let response = StoredResponse {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: "{}".into(),
        };
        let json = serde_json::to_vec(&response).unwrap();
        assert_eq!(
            serde_json::from_slice::<StoredResponse>(&json).unwrap(),
            response
        );
        let flight: IdempotencyRecord =
            serde_json::from_str(r#"{"state":"in_flight","fingerprint":"g","lease_until_ms":3}"#)
                .unwrap();
        assert_eq!(flight.fingerprint(), "g");
    }
}
