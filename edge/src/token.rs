//! Access-token verification: EdDSA only, our key id only, issuer/audience/expiry checked.

use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mesh_contracts::ErrorCode;
use mesh_contracts::auth::{AccessClaims, key_id};

use crate::config::EdgeConfig;

/// Allowed clock difference between the issuing worker and this edge, in seconds.
const LEEWAY_SECS: u64 = 30;

pub struct TokenVerifier {
    key: DecodingKey,
    kid: String,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(config: &EdgeConfig) -> anyhow::Result<Self> {
        let key =
            DecodingKey::from_ed_pem(config.jwt_public_key_pem.as_bytes()).map_err(|err| {
                anyhow::anyhow!("JWT public key is not an Ed25519 SPKI PEM key: {err}")
            })?;
        // Pinned to EdDSA: a token claiming any other algorithm (HS256, none, ...) is refused.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            key,
            kid: key_id(&config.jwt_public_key_pem),
            validation,
        })
    }

    /// The verified claims, or the error code that says why not.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, ErrorCode> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| ErrorCode::InvalidToken)?;
        if header.alg != Algorithm::EdDSA || header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(ErrorCode::InvalidToken);
        }
        jsonwebtoken::decode::<AccessClaims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => ErrorCode::TokenExpired,
                _ => ErrorCode::InvalidToken,
            })
    }

    /// The instant after which `verify` refuses the token of `claims` (its expiry plus the
    /// allowed clock difference), so long-lived connections end when a request would fail.
    pub fn valid_until(&self, claims: &AccessClaims) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(claims.exp.saturating_add(LEEWAY_SECS))
    }
}
