//! The `Idempotency-Key` middleware: the first response (status < 500) to a mutating request
//! with a key is stored in the `<P>_IDEMPOTENCY` bucket and replayed to every retry, on any
//! edge. The reservation is an atomic create, so a concurrent duplicate on another edge sees it
//! (409); it carries a lease, so a crashed edge never blocks the key for longer than that. A
//! 5xx frees the key. When the bucket is unavailable the request proceeds unprotected
//! (fail-open) and `mesh_idempotency_total{outcome="fail_open"}` counts it. The bucket holds
//! no request or response in the clear (`seal.rs`).

mod key;
mod seal;

use std::time::Duration;

use bytes::Bytes;
use mesh_contracts::ErrorCode;
use mesh_contracts::idempotency::{IdempotencyRecord, StoredResponse};
use mesh_nats::{KvBucket, KvError};
use mesh_observability::metrics::IDEMPOTENCY;
use poem::http::{HeaderName, HeaderValue, StatusCode};
use poem::{IntoResponse, Request, Response};

use key::{IdempotencyKey, Slot, Verdict};
pub use key::{MAX_KEY_BYTES, REPLAYED_HEADER, Scope};
use seal::Seal;

use crate::clock::unix_millis;
use crate::problem::ApiError;

/// Response headers worth replaying besides the body.
const STORED_HEADERS: [&str; 3] = ["content-type", "location", "cache-control"];
/// Attempts to settle a key that keeps changing under us before answering 409.
const ATTEMPTS: usize = 3;

/// How long responses are replayed and reservations held.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencySettings {
    /// How long a stored response is replayed (at most the bucket's 24 h age).
    pub ttl: Duration,
    /// How long a reservation holds when its edge never finishes (crash).
    pub lease: Duration,
}

/// This edge's side of the idempotency bucket.
pub struct Idempotency {
    bucket: KvBucket,
    settings: IdempotencySettings,
}

/// What the middleware does with a request before routing it.
pub enum Admission {
    /// Not an idempotent request (no key, or not a mutation): serve it as usual.
    Pass,
    /// Serve it, then hand the response to the reservation.
    Reserved(Box<Reservation>),
    /// Answer with this (a replay or a refusal) without serving the request.
    Answer(Box<Response>),
}

/// A key this request holds until its response is stored (or released after a 5xx).
pub struct Reservation {
    bucket: KvBucket,
    key: String,
    revision: u64,
    fingerprint: String,
    seal: Seal,
    ttl: Duration,
}

fn count(outcome: &str) {
    IDEMPOTENCY.with_label_values(&[outcome]).inc();
}

fn is_mutating(method: &poem::http::Method) -> bool {
    use poem::http::Method;
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

fn encode(record: &IdempotencyRecord) -> Bytes {
    Bytes::from(serde_json::to_vec(record).expect("records serialize"))
}

impl Idempotency {
    pub fn new(bucket: KvBucket, settings: IdempotencySettings) -> Self {
        Self { bucket, settings }
    }

    /// Looks at `req` (its body already read into memory) on behalf of `scope`.
    pub async fn admit(&self, req: &mut Request, scope: &Scope) -> Admission {
        if !is_mutating(req.method()) {
            return Admission::Pass;
        }
        let Some(raw) = key::HEADERS.iter().find_map(|h| req.headers().get(*h)) else {
            return Admission::Pass;
        };
        let key = match IdempotencyKey::parse(raw.as_bytes()) {
            Ok(key) => key,
            Err(bad) => {
                let refusal = ApiError::new(ErrorCode::InvalidIdempotencyKey, bad.to_string());
                return refuse(refusal);
            }
        };
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let slot = Slot {
            scope,
            method: &method,
            path: &path,
            key: &key,
        };
        let (storage_key, seal) = (slot.storage_key(), slot.seal());
        let body = req.take_body().into_bytes().await.unwrap_or_default();
        let fingerprint = seal.fingerprint(req.uri().query().unwrap_or(""), &body);
        req.set_body(body);
        match self.reserve(&storage_key, &fingerprint, seal).await {
            Ok(admission) => admission,
            Err(err) => {
                tracing::warn!(error = %err, "idempotency bucket unavailable; serving unprotected");
                count("fail_open");
                Admission::Pass
            }
        }
    }

    /// Creates the reservation, or settles with whatever record holds the key.
    async fn reserve(
        &self,
        key: &str,
        fingerprint: &str,
        seal: Seal,
    ) -> Result<Admission, KvError> {
        let flight = encode(&IdempotencyRecord::InFlight {
            fingerprint: fingerprint.to_owned(),
            lease_until_ms: unix_millis()
                + i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX),
        });
        for _ in 0..ATTEMPTS {
            let revision = match self.bucket.create(key, flight.clone()).await {
                Ok(revision) => Some(revision),
                Err(KvError::Conflict) => match self.bucket.get(key).await? {
                    // Released between our create and our read: try again.
                    None => continue,
                    Some(entry) => {
                        let record = serde_json::from_slice::<IdempotencyRecord>(&entry.value)
                            .map_err(|e| KvError::Failed(format!("undecodable record: {e}")))?;
                        match key::judge(&record, fingerprint, unix_millis()) {
                            Verdict::Replay => {
                                let response = opened(&record, &seal, key)?;
                                return Ok(Admission::Answer(Box::new(replay(response))));
                            }
                            Verdict::InProgress => return Ok(in_progress()),
                            Verdict::Mismatch => return Ok(mismatch()),
                            Verdict::TakeOver => {
                                match self
                                    .bucket
                                    .update(key, flight.clone(), entry.revision)
                                    .await
                                {
                                    Ok(revision) => Some(revision),
                                    Err(KvError::Conflict) => None,
                                    Err(err) => return Err(err),
                                }
                            }
                        }
                    }
                },
                Err(err) => return Err(err),
            };
            if let Some(revision) = revision {
                return Ok(Admission::Reserved(Box::new(Reservation {
                    bucket: self.bucket.clone(),
                    key: key.to_owned(),
                    revision,
                    fingerprint: fingerprint.to_owned(),
                    seal,
                    ttl: self.settings.ttl,
                })));
            }
        }
        Ok(in_progress())
    }
}

fn in_progress() -> Admission {
    count("in_progress");
    refuse(ApiError::new(
        ErrorCode::IdempotencyInProgress,
        "a request with this Idempotency-Key is still being processed; retry later",
    ))
}

fn mismatch() -> Admission {
    count("mismatch");
    refuse(ApiError::new(
        ErrorCode::IdempotencyKeyMismatch,
        "this Idempotency-Key was used with a different request body",
    ))
}

fn refuse(problem: ApiError) -> Admission {
    Admission::Answer(Box::new(problem.into_response()))
}

/// The response a finished record sealed. One that does not open under the seal its
/// fingerprint matched was not written by an edge: the record counts as unreadable.
fn opened(record: &IdempotencyRecord, seal: &Seal, key: &str) -> Result<StoredResponse, KvError> {
    let IdempotencyRecord::Done { sealed, .. } = record else {
        unreachable!("only finished records are replayed")
    };
    seal.open(sealed, key)
        .ok_or_else(|| KvError::Failed("a stored response does not open".into()))
}

fn replay(response: StoredResponse) -> Response {
    count("replayed");
    let mut out = Response::builder()
        .status(StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK))
        .header(REPLAYED_HEADER, "true");
    for (name, value) in &response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            out = out.header(name, value);
        }
    }
    out.body(response.body)
}

impl Reservation {
    /// Stores `response` for replay (status < 500) or frees the key (5xx). The body is read
    /// into memory and put back.
    pub async fn finish(self, response: &mut Response) {
        let status = response.status();
        if status.is_server_error() {
            self.release("released").await;
            return;
        }
        let body = response.take_body().into_bytes().await.unwrap_or_default();
        let Ok(text) = String::from_utf8(body.to_vec()) else {
            response.set_body(body);
            self.release("fail_open").await;
            return;
        };
        response.set_body(body);
        let headers = STORED_HEADERS
            .iter()
            .filter_map(|name| {
                let value = response.headers().get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), value.to_owned()))
            })
            .collect();
        let record = IdempotencyRecord::Done {
            fingerprint: self.fingerprint.clone(),
            expires_at_ms: unix_millis() + i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX),
            sealed: self.seal.close(
                &StoredResponse {
                    status: status.as_u16(),
                    headers,
                    body: text,
                },
                &self.key,
            ),
        };
        match self
            .bucket
            .update(&self.key, encode(&record), self.revision)
            .await
        {
            Ok(_) => count("stored"),
            // Our lease ran out and another request took the key over: its answer wins.
            Err(KvError::Conflict) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot store an idempotent response");
                self.release("fail_open").await;
            }
        }
    }

    async fn release(self, outcome: &str) {
        count(outcome);
        if let Err(err) = self.bucket.delete_if(&self.key, self.revision).await {
            tracing::warn!(error = %err, "cannot release an idempotency key; its lease will");
        }
    }
}
