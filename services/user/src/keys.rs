//! Ed25519 signing keys for access tokens: generation (`mesh keygen`) in PEM form.

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

/// A freshly generated key pair in PEM form.
pub struct KeyPair {
    /// PKCS#8 private key; keep secret.
    pub private_pem: String,
    /// SPKI public key; give to every edge.
    pub public_pem: String,
}

/// Generates a new Ed25519 key pair from the operating system's random source.
pub fn generate() -> anyhow::Result<KeyPair> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let private_pem = key.to_pkcs8_pem(LineEnding::LF)?.to_string();
    let public_pem = key.verifying_key().to_public_key_pem(LineEnding::LF)?;
    Ok(KeyPair {
        private_pem,
        public_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_into_jsonwebtoken() {
        let pair = generate().unwrap();
        assert!(pair.private_pem.contains("PRIVATE KEY"));
        assert!(pair.public_pem.contains("PUBLIC KEY"));
        jsonwebtoken::EncodingKey::from_ed_pem(pair.private_pem.as_bytes()).unwrap();
        jsonwebtoken::DecodingKey::from_ed_pem(pair.public_pem.as_bytes()).unwrap();
        assert_ne!(generate().unwrap().public_pem, pair.public_pem);
    }
}
