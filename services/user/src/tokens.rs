//! Token issuing: EdDSA access tokens and opaque refresh tokens stored only as hashes.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mesh_contracts::auth::{AccessClaims, DeviceClaims, key_id};
use mesh_contracts::user::TokenPair;
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::UserConfig;
use crate::domain::roles;

/// Signs access tokens with the configured Ed25519 key.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    /// Verifies the device tokens this service issued.
    verifying: DecodingKey,
    kid: String,
    issuer: String,
    audience: String,
    access_ttl: Duration,
}

impl TokenIssuer {
    pub fn new(config: &UserConfig) -> anyhow::Result<Self> {
        let key =
            EncodingKey::from_ed_pem(config.jwt_private_key_pem.as_bytes()).map_err(|err| {
                anyhow::anyhow!("JWT private key is not an Ed25519 PKCS#8 PEM key: {err}")
            })?;
        let verifying = DecodingKey::from_ed_pem(config.jwt_public_key_pem.as_bytes())
            .map_err(|err| anyhow::anyhow!("JWT public key is not an Ed25519 PEM key: {err}"))?;
        Ok(Self {
            key,
            verifying,
            kid: key_id(&config.jwt_public_key_pem),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            access_ttl: config.access_ttl,
        })
    }

    /// A new token pair for a session; `refresh_token` is the caller's fresh refresh token.
    pub fn pair(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        roles_held: &[String],
        refresh_token: String,
    ) -> anyhow::Result<TokenPair> {
        let now = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let claims = AccessClaims {
            sub: user_id,
            sid: session_id,
            jti: Uuid::new_v4(),
            roles: roles::normalize(roles_held),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.access_ttl.as_secs(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let access_token = jsonwebtoken::encode(&header, &claims, &self.key)?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            token_type: "Bearer".to_owned(),
            expires_in: self.access_ttl.as_secs(),
            user_id,
            session_id,
            device_token: None,
        })
    }
}

/// How long a device token lets its device past a lock.
const DEVICE_TTL: Duration = Duration::from_secs(180 * 24 * 3600);

impl TokenIssuer {
    fn device_audience(&self) -> String {
        format!("{}:device", self.audience)
    }

    /// A device token for a device that just signed in to `user_id`.
    pub fn device_token(&self, user_id: Uuid) -> anyhow::Result<String> {
        let now = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let claims = DeviceClaims {
            sub: user_id,
            typ: "device".to_owned(),
            iss: self.issuer.clone(),
            aud: self.device_audience(),
            iat: now,
            exp: now + DEVICE_TTL.as_secs(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }

    /// The account a valid device token was issued for.
    pub fn device_of(&self, token: &str) -> Option<Uuid> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[self.device_audience()]);
        let claims = jsonwebtoken::decode::<DeviceClaims>(token, &self.verifying, &validation)
            .ok()?
            .claims;
        (claims.typ == "device").then_some(claims.sub)
    }
}

/// A new refresh token: 256 random bits, URL-safe hex, and the hash that is stored.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// The stored form of a refresh token.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(hash_refresh_token(&a), hash_a);
        assert_ne!(hash_a, a.as_bytes());
    }

    #[test]
    fn access_tokens_carry_kid_and_claims() {
        let pair = crate::keys::generate().unwrap();
        let config = UserConfig {
            jwt_private_key_pem: pair.private_pem,
            jwt_public_key_pem: pair.public_pem.clone(),
            jwt_issuer: "iss".into(),
            jwt_audience: "aud".into(),
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(600),
            refresh_reuse_grace: Duration::from_secs(2),
            bootstrap_admin_phones: vec![],
            hash_concurrency: 1,
            login_throttle: crate::LoginThrottle::default(),
        };
        let issuer = TokenIssuer::new(&config).unwrap();
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        // Device tokens name their account and never pass as access tokens (or vice versa).
        let device = issuer.device_token(user).unwrap();
        assert_eq!(issuer.device_of(&device), Some(user));
        assert_eq!(issuer.device_of("not.a.token"), None);
        let tokens = issuer
            .pair(user, session, &["admin".to_owned()], "r".into())
            .unwrap();
        let header = jsonwebtoken::decode_header(&tokens.access_token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(
            header.kid.as_deref(),
            Some(key_id(&pair.public_pem).as_str())
        );
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["aud"]);
        validation.set_issuer(&["iss"]);
        let key = jsonwebtoken::DecodingKey::from_ed_pem(pair.public_pem.as_bytes()).unwrap();
        let claims = jsonwebtoken::decode::<AccessClaims>(&tokens.access_token, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!((claims.sub, claims.sid), (user, session));
        assert_eq!(claims.roles, vec!["user", "admin"]);
        assert_eq!(claims.exp - claims.iat, 60);
        assert_eq!(tokens.expires_in, 60);
        assert_eq!(issuer.device_of(&tokens.access_token), None);
        assert!(jsonwebtoken::decode::<AccessClaims>(&device, &key, &validation).is_err());
    }
}
