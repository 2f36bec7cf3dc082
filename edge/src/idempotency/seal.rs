//! What the idempotency bucket learns of a keyed request: nothing it can read back. A record
//! holds a keyed digest of the request (so a retry with another body is told apart) and the
//! response sealed with XChaCha20-Poly1305. Both keys derive from the caller's scope, the route
//! and the client's `Idempotency-Key`, none of which the bucket holds (its key is another
//! digest of them), so whoever reads the bucket (an operator, a backup, a NATS user allowed to)
//! sees neither the tokens a sign-in answered nor a digest of the password it was sent, which
//! an unkeyed hash would let them guess offline. Only a retry carrying the same key opens it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use mesh_contracts::idempotency::StoredResponse;
use sha2::{Digest, Sha256};

/// Bytes of an XChaCha20 nonce, stored before the ciphertext.
const NONCE_BYTES: usize = 24;

/// What one keyed operation's record is sealed and fingerprinted with.
pub struct Seal {
    key: [u8; 32],
}

/// Feeds `parts` to `update`, each prefixed with its length, so no two lists of parts feed
/// the same bytes.
fn length_prefixed(parts: &[&[u8]], mut update: impl FnMut(&[u8])) {
    for part in parts {
        update(&(part.len() as u64).to_be_bytes());
        update(part);
    }
}

/// The SHA-256 of `label` and then `parts`, length-prefixed.
fn labelled_digest(label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut hash = Sha256::new();
    length_prefixed(&[label], |bytes| hash.update(bytes));
    length_prefixed(parts, |bytes| hash.update(bytes));
    hash.finalize().into()
}

/// The bucket key of the operation the `parts` name (scope, method, route, client key): a
/// digest under a label of its own, so the bucket never holds what derives the seal, and any
/// key text fits the bucket's key alphabet.
pub fn storage_key(parts: &[&[u8]]) -> String {
    hex::encode(labelled_digest(b"mesh idempotency storage key v1", parts))
}

impl Seal {
    /// The seal of the operation the `parts` name, as for [`storage_key`].
    pub fn of(parts: &[&[u8]]) -> Self {
        Self {
            key: labelled_digest(b"mesh idempotency seal v1", parts),
        }
    }

    /// What makes two requests with one key "the same request": query string and body, keyed.
    pub fn fingerprint(&self, query: &str, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        length_prefixed(&[query.as_bytes(), body], |bytes| mac.update(bytes));
        hex::encode(mac.finalize().into_bytes())
    }

    /// `response` sealed for the record stored under `storage_key` (bound to it, so a sealed
    /// response moved to another key does not open).
    pub fn close(&self, response: &StoredResponse, storage_key: &str) -> String {
        let plain = serde_json::to_vec(response).expect("responses serialize");
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: storage_key.as_bytes(),
                },
            )
            .expect("sealing a response in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD_NO_PAD.encode(out)
    }

    /// The response `close` sealed, or `None` when `sealed` was not sealed by this seal for
    /// `storage_key` (altered, moved, or not a sealed response at all).
    pub fn open(&self, sealed: &str, storage_key: &str) -> Option<StoredResponse> {
        let bytes = STANDARD_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().ok()?;
        let plain = self
            .cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: storage_key.as_bytes(),
                },
            )
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.key).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &str) -> StoredResponse {
        StoredResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    #[test]
    fn a_sealed_response_opens_only_with_its_seal_and_key() {
        let seal = Seal::of(&[b"client:10.0.0.1", b"POST", b"/v1/auth/login", b"k-1"]);
        let other = Seal::of(&[b"client:10.0.0.1", b"POST", b"/v1/auth/login", b"k-2"]);
        let body = r#"{"refresh_token":"rt-secret-value"}"#;
        let sealed = seal.close(&response(body), "slot-a");
        assert!(!sealed.contains("rt-secret-value"));
        assert_eq!(seal.open(&sealed, "slot-a"), Some(response(body)));
        assert_eq!(other.open(&sealed, "slot-a"), None, "another client key");
        assert_eq!(seal.open(&sealed, "slot-b"), None, "moved to another key");
        let mut bytes = STANDARD_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(seal.open(&STANDARD_NO_PAD.encode(bytes), "slot-a"), None);
        assert_eq!(seal.open("not base64!", "slot-a"), None);
        assert_eq!(seal.open("", "slot-a"), None);
        // Random nonces: the same response sealed twice differs.
        assert_ne!(seal.close(&response(body), "slot-a"), sealed);
    }

    #[test]
    fn the_bucket_key_does_not_give_the_seal() {
        let parts: [&[u8]; 4] = [b"user:u", b"POST", b"/v1/groups", b"k"];
        let key = storage_key(&parts);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()) && key.len() == 64);
        assert_ne!(key, hex::encode(Seal::of(&parts).key));
        // Length-prefixed parts: moving a byte from one part to the next changes both.
        let moved: [&[u8]; 4] = [b"user:u", b"POST", b"/v1/group", b"sk"];
        assert_ne!(key, storage_key(&moved));
        assert_ne!(Seal::of(&parts).key, Seal::of(&moved).key);
    }

    #[test]
    fn fingerprints_are_keyed_and_tell_requests_apart() {
        let seal = Seal::of(&[b"user:u", b"POST", b"/v1/groups", b"k"]);
        let body = br#"{"password":"hunter2"}"#;
        let print = seal.fingerprint("", body);
        assert_eq!(print, seal.fingerprint("", body));
        assert_ne!(print, seal.fingerprint("", br#"{"password":"hunter3"}"#));
        assert_ne!(print, seal.fingerprint("a=1", body));
        // Length-prefixed parts: moving a byte from one part to the next changes it.
        assert_ne!(seal.fingerprint("a", b"bc"), seal.fingerprint("ab", b"c"));
        // Not the plain digest of the request, which anyone could compute from a guess.
        let mut plain = Sha256::new();
        length_prefixed(&[b"", body], |bytes| plain.update(bytes));
        assert_ne!(print, hex::encode(plain.finalize()));
        let other = Seal::of(&[b"user:u", b"POST", b"/v1/groups", b"k2"]);
        assert_ne!(print, other.fingerprint("", body));
    }
}
