//! Access-token verification: EdDSA only, our key id only, issuer/audience/expiry checked.
//! A token that passed is remembered by the SHA-256 digest of its exact text (32 bytes instead
//! of the half kilobyte of text, once per connected user), so its next requests skip the
//! signature check (the most expensive step of a cached read) but not the expiry check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mesh_contracts::ErrorCode;
use mesh_contracts::auth::{AccessClaims, key_id};
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use crate::config::EdgeConfig;

/// The SHA-256 digest of a token's text: what the memory of verified tokens is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// Allowed clock difference between the issuing worker and this edge, in seconds.
const LEEWAY_SECS: u64 = 30;
/// The same, as a duration.
const LEEWAY: Duration = Duration::from_secs(LEEWAY_SECS);
/// Verified tokens remembered at most.
const VERIFIED_CAPACITY: u64 = 50_000;
/// How long a verified token is remembered at most; its expiry is checked on every use.
const VERIFIED_TTL: Duration = Duration::from_secs(300);

pub struct TokenVerifier {
    key: DecodingKey,
    kid: String,
    validation: Validation,
    /// The longest lifetime (`exp - iat`, seconds) this edge grants a token: its
    /// `MESH_ACCESS_TTL`. It remembers a revocation only as long as that allows, so a token
    /// meant to live longer (an issuer set up otherwise, or one from before the setting was
    /// lowered) expires here at `iat` plus this instead of outliving its revocation.
    longest_lifetime: u64,
    /// Whether a token meant to live longer was already logged (once is enough).
    told_lifetime: AtomicBool,
    /// Tokens whose signature and claims were checked, keyed by the digest of their exact
    /// text. Only a token that passed enters, and finding another text with the same SHA-256
    /// digest is out of reach, so a forged one can never be found here.
    verified: Cache<TokenDigest, Arc<AccessClaims>>,
}

impl TokenVerifier {
    pub fn new(config: &EdgeConfig) -> anyhow::Result<Self> {
        Self::with_key(
            &config.jwt_public_key_pem,
            &config.jwt_issuer,
            &config.jwt_audience,
            config.access_ttl,
        )
    }

    /// A verifier of tokens signed by the key of `public_pem` for `issuer` and `audience`,
    /// living at most `access_ttl`.
    fn with_key(
        public_pem: &str,
        issuer: &str,
        audience: &str,
        access_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let key = DecodingKey::from_ed_pem(public_pem.as_bytes()).map_err(|err| {
            anyhow::anyhow!("JWT public key is not an Ed25519 SPKI PEM key: {err}")
        })?;
        // Pinned to EdDSA: a token claiming any other algorithm (HS256, none, ...) is refused.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            key,
            kid: key_id(public_pem),
            validation,
            longest_lifetime: access_ttl.as_secs(),
            told_lifetime: AtomicBool::new(false),
            verified: Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_TTL)
                .build(),
        })
    }

    /// The verified claims, or the error code that says why not.
    pub fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, ErrorCode> {
        self.verify_at(token, SystemTime::now())
    }

    /// `verify`, with a remembered token's expiry judged at `now`.
    fn verify_at(&self, token: &str, now: SystemTime) -> Result<Arc<AccessClaims>, ErrorCode> {
        let digest = TokenDigest::of(token);
        if let Some(claims) = self.verified.get(&digest) {
            return if expired(&claims, now) {
                self.verified.invalidate(&digest);
                Err(ErrorCode::TokenExpired)
            } else {
                Ok(claims)
            };
        }
        let claims = self.check(token)?;
        if expired(&claims, now) {
            return Err(ErrorCode::TokenExpired);
        }
        let claims = Arc::new(claims);
        self.verified.insert(digest, Arc::clone(&claims));
        Ok(claims)
    }

    /// The full check: header, signature and claims; the expiry of the claims returned is at
    /// most `longest_lifetime` after their issue.
    fn check(&self, token: &str) -> Result<AccessClaims, ErrorCode> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| ErrorCode::InvalidToken)?;
        if header.alg != Algorithm::EdDSA || header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(ErrorCode::InvalidToken);
        }
        let mut claims = jsonwebtoken::decode::<AccessClaims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => ErrorCode::TokenExpired,
                _ => ErrorCode::InvalidToken,
            })?;
        let granted = claims.iat.saturating_add(self.longest_lifetime);
        if claims.exp > granted {
            if !self.told_lifetime.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    lifetime_secs = claims.exp.saturating_sub(claims.iat),
                    access_ttl_secs = self.longest_lifetime,
                    "access tokens meant to live longer than this edge's MESH_ACCESS_TTL expire \
                     here after it (their revocation would be forgotten first); give the user \
                     role and the edges the same MESH_ACCESS_TTL"
                );
            }
            claims.exp = granted;
        }
        Ok(claims)
    }

    /// The instant after which `verify` refuses the token of `claims` (its expiry plus the
    /// allowed clock difference), so long-lived connections end when a request would fail.
    pub fn valid_until(&self, claims: &AccessClaims) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(claims.exp.saturating_add(LEEWAY_SECS))
    }
}

/// How long a session's revocation must be remembered (the `REVOKED` bucket's age and each
/// edge's copy) so that it outlives every token it covers: a token revoked the moment it was
/// issued is accepted for `access_ttl` plus the leeway, and once more the leeway when this
/// edge's clock runs behind the issuing worker's by as much as the leeway allows.
pub fn revocation_ttl(access_ttl: Duration) -> Duration {
    access_ttl + LEEWAY + LEEWAY
}

/// Whether `claims` are past their expiry plus the allowed clock difference at `now` (the
/// rule `jsonwebtoken` applies to a token it decodes).
fn expired(claims: &AccessClaims, now: SystemTime) -> bool {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    claims.exp.saturating_add(LEEWAY_SECS) < now
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use jsonwebtoken::{EncodingKey, Header};
    use uuid::Uuid;

    use super::*;

    struct Keys {
        private_pem: String,
        public_pem: String,
    }

    fn new_keys() -> Keys {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Keys {
            private_pem: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            public_pem: key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        }
    }

    /// The access-token lifetime of the test verifiers.
    const ACCESS_TTL: Duration = Duration::from_secs(900);

    fn verifier(keys: &Keys) -> TokenVerifier {
        TokenVerifier::with_key(&keys.public_pem, "iss", "aud", ACCESS_TTL).unwrap()
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(keys: &Keys, exp: u64) -> String {
        sign_issued(keys, now_secs(), exp)
    }

    /// A token issued at `iat`, expiring at `exp`.
    fn sign_issued(keys: &Keys, iat: u64, exp: u64) -> String {
        let claims = AccessClaims {
            sub: Uuid::now_v7(),
            sid: Uuid::now_v7(),
            jti: Uuid::now_v7(),
            roles: vec!["user".into()],
            iss: "iss".into(),
            aud: "aud".into(),
            iat,
            exp,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key_id(&keys.public_pem));
        let key = EncodingKey::from_ed_pem(keys.private_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    #[test]
    fn a_remembered_token_gives_the_same_claims_until_it_expires() {
        let keys = new_keys();
        let verifier = verifier(&keys);
        let exp = now_secs() + 600;
        let token = sign(&keys, exp);
        let first = verifier.verify(&token).unwrap();
        let again = verifier.verify(&token).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second use is served from memory"
        );
        assert_eq!(again.exp, exp);

        // Past its expiry (plus leeway) the remembered token is refused and forgotten.
        let later = UNIX_EPOCH + Duration::from_secs(exp + LEEWAY_SECS + 1);
        assert_eq!(
            verifier.verify_at(&token, later),
            Err(ErrorCode::TokenExpired)
        );
        assert!(verifier.verified.get(&TokenDigest::of(&token)).is_none());
    }

    #[test]
    fn a_changed_copy_of_a_remembered_token_is_checked_in_full() {
        let keys = new_keys();
        let verifier = verifier(&keys);
        let token = sign(&keys, now_secs() + 600);
        verifier.verify(&token).unwrap();
        // Same header and claims, a different signature.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let forged = format!("{signed}.{flipped}{}", &signature[1..]);
        assert_eq!(verifier.verify(&forged), Err(ErrorCode::InvalidToken));
        // A token of another key with the same kid is refused too.
        let other = new_keys();
        let foreign = sign(
            &Keys {
                private_pem: other.private_pem,
                public_pem: keys.public_pem.clone(),
            },
            now_secs() + 600,
        );
        assert_eq!(verifier.verify(&foreign), Err(ErrorCode::InvalidToken));
    }

    #[test]
    fn a_token_meant_to_live_longer_than_the_access_ttl_expires_after_it() {
        let keys = new_keys();
        let verifier = verifier(&keys);
        let iat = now_secs();
        let ttl = ACCESS_TTL.as_secs();
        let longest = sign_issued(&keys, iat, iat + ttl);
        assert_eq!(
            verifier.verify(&longest).unwrap().exp,
            iat + ttl,
            "exactly the TTL"
        );
        // Issued by a user role with a longer MESH_ACCESS_TTL: the edges would forget its
        // revocation while it is still valid, so it expires here after the edge's TTL.
        let longer = sign_issued(&keys, iat, iat + 10 * ttl);
        let claims = verifier
            .verify(&longer)
            .expect("valid within the edge's TTL");
        assert_eq!(claims.exp, iat + ttl);
        assert_eq!(
            verifier.valid_until(&claims),
            UNIX_EPOCH + Duration::from_secs(iat + ttl + LEEWAY_SECS)
        );
        let later = UNIX_EPOCH + Duration::from_secs(iat + ttl + LEEWAY_SECS + 1);
        assert_eq!(
            verifier.verify_at(&longer, later),
            Err(ErrorCode::TokenExpired),
            "remembered, then past the edge's TTL"
        );
        // Seen first once the edge's TTL is over: expired at once, and not remembered.
        let fresh = TokenVerifier::with_key(&keys.public_pem, "iss", "aud", ACCESS_TTL).unwrap();
        assert_eq!(
            fresh.verify_at(&longer, later),
            Err(ErrorCode::TokenExpired)
        );
        assert!(fresh.verified.get(&TokenDigest::of(&longer)).is_none());
    }

    #[test]
    fn refused_tokens_are_not_remembered() {
        let keys = new_keys();
        let verifier = verifier(&keys);
        let expired_token = sign(&keys, now_secs() - LEEWAY_SECS - 60);
        assert_eq!(
            verifier.verify(&expired_token),
            Err(ErrorCode::TokenExpired)
        );
        assert!(
            verifier
                .verified
                .get(&TokenDigest::of(&expired_token))
                .is_none()
        );
    }

    /// A token issued at `iat` and revoked at once, its edge's clock behind the issuer's by
    /// the whole leeway: its revocation is still remembered when the edge last accepts it.
    #[test]
    fn a_revocation_outlives_every_token_it_covers() {
        for access_ttl in [1, 60, 900, 86_400] {
            let iat = 1_000_000;
            let exp = iat + access_ttl;
            let revoked_until = iat + revocation_ttl(Duration::from_secs(access_ttl)).as_secs();
            // The edge's clock reads `LEEWAY_SECS` less than the real time: the last real second
            // it accepts the token is its last accepted reading plus that difference.
            let last_accepted = exp + LEEWAY_SECS + LEEWAY_SECS;
            assert!(
                revoked_until >= last_accepted,
                "access TTL {access_ttl}s: revocation gone at {revoked_until}, token accepted until {last_accepted}"
            );
            let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
            let claims = claims_between(iat, exp);
            assert!(!expired(&claims, at(last_accepted - LEEWAY_SECS)));
            assert!(expired(&claims, at(revoked_until - LEEWAY_SECS + 1)));
        }
    }

    /// Claims of a token valid from `iat` to `exp` (seconds), everything else empty.
    fn claims_between(iat: u64, exp: u64) -> AccessClaims {
        AccessClaims {
            sub: Uuid::nil(),
            sid: Uuid::nil(),
            jti: Uuid::nil(),
            roles: Vec::new(),
            iss: String::new(),
            aud: String::new(),
            iat,
            exp,
        }
    }

    #[test]
    fn expiry_allows_the_leeway_and_not_a_second_more() {
        let claims = |exp| claims_between(0, exp);
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert!(!expired(&claims(1_000), at(1_000 + LEEWAY_SECS)));
        assert!(expired(&claims(1_000), at(1_000 + LEEWAY_SECS + 1)));
        assert!(!expired(&claims(1_000), at(0)));
    }
}
