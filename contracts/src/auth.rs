//! Access-token claims and key ids: what the user service signs and the edge verifies.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The claims of an access token (a JWT signed with EdDSA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: Uuid,
    /// The session id; revoking it invalidates every token of the session.
    pub sid: Uuid,
    /// A unique id of this token.
    pub jti: Uuid,
    /// Role names at issue time.
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// The claims of a device token: proof that this device once signed in to account `sub`,
/// which lets it sign in while the account is locked by failed attempts from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceClaims {
    /// The user id.
    pub sub: Uuid,
    /// Always `device`.
    pub typ: String,
    pub iss: String,
    /// The access-token audience with `:device` appended, so it never passes as an access token.
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// The `kid` of an Ed25519 public key in PEM form: the first 16 hex digits of the SHA-256 of
/// its text with surrounding white space removed. Signer and verifier both derive it.
pub fn key_id(public_key_pem: &str) -> String {
    let digest = Sha256::digest(public_key_pem.trim().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_ignores_surrounding_whitespace_and_differs_per_key() {
        let a = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----";
        let b = "-----BEGIN PUBLIC KEY-----\nBBBB\n-----END PUBLIC KEY-----";
        assert_eq!(key_id(a), key_id(&format!("\n{a}\n")));
        assert_ne!(key_id(a), key_id(b));
        assert_eq!(key_id(a).len(), 16);
    }
}
