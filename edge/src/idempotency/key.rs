//! The pure rules of idempotency keys: which header values are keys, what a key is scoped to,
//! where its record is kept and what seals it, and what to do with a retry given the stored
//! record.

use mesh_contracts::idempotency::IdempotencyRecord;

use super::seal::{self, Seal};

/// The request headers carrying a key, the standard one first.
pub const HEADERS: [&str; 2] = ["idempotency-key", "x-idempotency-key"];
/// Set on every replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// A client-chosen key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
pub struct MalformedKey;

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, MalformedKey> {
        let visible = raw.iter().all(|b| (0x21..=0x7e).contains(b));
        if raw.is_empty() || raw.len() > MAX_KEY_BYTES || !visible {
            return Err(MalformedKey);
        }
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }
}

/// Who a key belongs to: keys of different callers never meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The authenticated user.
    User(uuid::Uuid),
    /// An anonymous caller (register, login), by client address.
    Client(String),
}

/// Everything that names one idempotent operation: the caller, the method, the route, the key.
pub struct Slot<'a> {
    pub scope: &'a Scope,
    pub method: &'a str,
    pub path: &'a str,
    pub key: &'a IdempotencyKey,
}

impl Slot<'_> {
    /// The parts naming the operation, in order.
    fn with_parts<R>(&self, then: impl FnOnce(&[&[u8]]) -> R) -> R {
        let scope = match self.scope {
            Scope::User(id) => format!("user:{id}"),
            Scope::Client(ip) => format!("client:{ip}"),
        };
        then(&[
            scope.as_bytes(),
            self.method.as_bytes(),
            self.path.as_bytes(),
            self.key.0.as_bytes(),
        ])
    }

    /// The bucket key (`seal::storage_key`).
    pub fn storage_key(&self) -> String {
        self.with_parts(seal::storage_key)
    }

    /// What this operation's record is fingerprinted and sealed with.
    pub fn seal(&self) -> Seal {
        self.with_parts(Seal::of)
    }
}

/// What a request does when its key is already in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Replay the stored response.
    Replay,
    /// The first request is still running: 409.
    InProgress,
    /// The key was used for a different request: 422.
    Mismatch,
    /// The record is stale (an abandoned reservation, an expired response): take it over.
    TakeOver,
}

/// Decides what a request with `fingerprint` does at `now_ms`, given the stored `record`.
pub fn judge(record: &IdempotencyRecord, fingerprint: &str, now_ms: i64) -> Verdict {
    let stale = match record {
        IdempotencyRecord::InFlight { lease_until_ms, .. } => *lease_until_ms <= now_ms,
        IdempotencyRecord::Done { expires_at_ms, .. } => *expires_at_ms <= now_ms,
    };
    if stale {
        Verdict::TakeOver
    } else if record.fingerprint() != fingerprint {
        Verdict::Mismatch
    } else if matches!(record, IdempotencyRecord::InFlight { .. }) {
        Verdict::InProgress
    } else {
        Verdict::Replay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255_bytes() {
        assert!(IdempotencyKey::parse(b"order-42_a.b~").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
        assert_eq!(IdempotencyKey::parse(b""), Err(MalformedKey));
        assert_eq!(IdempotencyKey::parse(&[b'k'; 256]), Err(MalformedKey));
        assert_eq!(IdempotencyKey::parse(b"two words"), Err(MalformedKey));
        assert_eq!(IdempotencyKey::parse("clé".as_bytes()), Err(MalformedKey));
        assert_eq!(IdempotencyKey::parse(b"tab\t"), Err(MalformedKey));
    }

    #[test]
    fn storage_keys_separate_callers_methods_and_routes() {
        let key = IdempotencyKey::parse(b"k1").unwrap();
        let alice = Scope::User(uuid::Uuid::now_v7());
        let bob = Scope::User(uuid::Uuid::now_v7());
        let slot = |scope, method, path| {
            Slot {
                scope,
                method,
                path,
                key: &key,
            }
            .storage_key()
        };
        let base = slot(&alice, "POST", "/v1/groups");
        assert_eq!(base, slot(&alice, "POST", "/v1/groups"));
        assert_ne!(base, slot(&bob, "POST", "/v1/groups"));
        assert_ne!(base, slot(&alice, "PUT", "/v1/groups"));
        assert_ne!(base, slot(&alice, "POST", "/v1/messages"));
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn retries_are_judged_by_state_fingerprint_and_age() {
        let flight = IdempotencyRecord::InFlight {
            fingerprint: "f".into(),
            lease_until_ms: 100,
        };
        assert_eq!(judge(&flight, "f", 50), Verdict::InProgress);
        assert_eq!(judge(&flight, "g", 50), Verdict::Mismatch);
        assert_eq!(judge(&flight, "f", 100), Verdict::TakeOver);
        let done = IdempotencyRecord::Done {
            fingerprint: "f".into(),
            expires_at_ms: 1000,
            sealed: String::new(),
        };
        assert_eq!(judge(&done, "f", 500), Verdict::Replay);
        assert_eq!(judge(&done, "g", 500), Verdict::Mismatch);
        assert_eq!(judge(&done, "g", 1000), Verdict::TakeOver);
    }
}
