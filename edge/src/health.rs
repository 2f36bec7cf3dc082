//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: NATS is connected and
//! the user, social and chat services answer; `/readyz?exclude=services`: NATS only).
//!
//! `/readyz` is outside the rate limits and each check of the services is three RPCs, each a
//! Postgres query, so the services' answer is shared: probes that arrive during a check wait for
//! it, and its result answers every probe for `REUSE`. A flood of probes costs the services one
//! check a second from each edge.
//!
//! `?exclude=services` (the Kubernetes apiserver's `exclude`) is for the edge's own readiness
//! probe: one worker role being down must not take every edge out of its Service, since the
//! edge answers the routes it cannot serve with a 503 problem itself.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mesh_contracts::ErrorCode;
use mesh_contracts::chat::Health as ChatHealth;
use mesh_contracts::social::Health as SocialHealth;
use mesh_contracts::user::{Empty, Health};
use mesh_nats::CallContext;
use poem::web::{Data, Json};
use poem::{IntoResponse, Request, Response, handler};
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::SharedState;
use crate::problem::ApiError;

/// How long `/readyz` waits for the services' health answers (so it answers within a second).
const READY_DEADLINE: Duration = Duration::from_millis(800);
/// How long one check of the services answers every probe.
const REUSE: Duration = Duration::from_secs(1);
/// The one check `exclude` may name.
const SERVICES: &str = "services";

/// What the services answered: all of them, or the first that did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Services {
    Answering,
    Silent(&'static str),
}

/// A check's result and when it began.
#[derive(Debug, Clone, Copy)]
struct Checked {
    at: Instant,
    services: Services,
}

/// This edge's readiness: the last check of the services, shared by every probe, and whether
/// the edge is shutting down.
#[derive(Default)]
pub struct Readiness {
    /// Held during a check, so that probes arriving meanwhile wait for its result.
    last: Mutex<Option<Checked>>,
    stopping: AtomicBool,
}

impl Readiness {
    /// Every probe from now on answers 503: the edge is shutting down.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// The services' answer and its age (since its check began, so an answer no older than
    /// some wait was checked entirely within it): the last check's while it is fresh, else
    /// that of a new `check`, made once for every probe waiting meanwhile.
    pub async fn services<F: Future<Output = Services>>(
        &self,
        check: impl FnOnce() -> F,
    ) -> (Services, Duration) {
        let mut last = self.last.lock().await;
        let now = Instant::now();
        if let Some(checked) = last.filter(|c| fresh(c, now)) {
            return (checked.services, now.saturating_duration_since(checked.at));
        }
        let services = check().await;
        *last = Some(Checked { at: now, services });
        (services, now.elapsed())
    }
}

/// Whether `checked` may still answer a probe at `now`.
fn fresh(checked: &Checked, now: Instant) -> bool {
    now.saturating_duration_since(checked.at) < REUSE
}

/// Whether a probe's query (`exclude=services`, possibly repeated) leaves the services out;
/// another `exclude` value is refused (other parameters are ignored).
fn excludes_services(query: &str) -> Result<bool, String> {
    let mut excluded = false;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "exclude" {
            continue;
        }
        if value != SERVICES {
            return Err(value.to_owned());
        }
        excluded = true;
    }
    Ok(excluded)
}

#[handler]
pub fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

#[handler]
pub async fn readyz(req: &Request, Data(state): Data<&SharedState>) -> Response {
    let excluded = match excludes_services(req.uri().query().unwrap_or_default()) {
        Ok(excluded) => excluded,
        Err(value) => {
            return ApiError::new(
                ErrorCode::BadRequest,
                format!("`exclude` may only name `{SERVICES}`, not {value:?}"),
            )
            .into_response();
        }
    };
    if state.readiness.is_stopping() {
        return ApiError::new(ErrorCode::ServiceUnavailable, "the edge is shutting down")
            .into_response();
    }
    if !state.bus.is_connected() {
        return ApiError::new(ErrorCode::ServiceUnavailable, "not connected to NATS")
            .into_response();
    }
    if excluded {
        return Json(json!({ "status": "ready", "nats": state.bus.server_version() }))
            .into_response();
    }
    match state.readiness.services(|| check_services(state)).await {
        // How old the services' answer is, so that a caller waiting for a change (a restarted
        // worker) can tell a shared earlier answer from a new one.
        (Services::Answering, age) => Json(json!({
            "status": "ready",
            "nats": state.bus.server_version(),
            "services_checked_ms_ago": u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
        }))
        .into_response(),
        (Services::Silent(service), _) => ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!("the {service} service is not answering"),
        )
        .into_response(),
    }
}

/// Asks the user, social and chat services for their health at once.
async fn check_services(state: &SharedState) -> Services {
    let ctx = CallContext::internal();
    // A probe must answer within its own timeout: a service that is silent for this long is
    // not ready, whatever the API's longer deadline.
    let rpc = state.bus.rpc_client(READY_DEADLINE);
    let (user, social, chat) = tokio::join!(
        rpc.call::<Health>(&ctx, &Empty {}),
        rpc.call::<SocialHealth>(&ctx, &Empty {}),
        rpc.call::<ChatHealth>(&ctx, &Empty {}),
    );
    let failed = [("user", user), ("social", social), ("chat", chat)]
        .into_iter()
        .find_map(|(service, answer)| answer.err().map(|err| (service, err)));
    match failed {
        None => Services::Answering,
        Some((service, err)) => {
            // Once per check, not per probe.
            tracing::warn!(error = %err, service, "not ready");
            Services::Silent(service)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn only_services_can_be_excluded() {
        assert_eq!(excludes_services(""), Ok(false));
        assert_eq!(excludes_services("exclude=services"), Ok(true));
        assert_eq!(
            excludes_services("verbose&exclude=services&exclude=services"),
            Ok(true)
        );
        assert_eq!(excludes_services("verbose=1"), Ok(false));
        assert_eq!(excludes_services("exclude=nats"), Err("nats".into()));
        assert_eq!(
            excludes_services("exclude=services&exclude="),
            Err(String::new())
        );
        assert_eq!(excludes_services("exclude"), Err(String::new()));
    }

    /// Probes during a check wait for it; its result answers for `REUSE`, then a probe checks
    /// again.
    #[tokio::test(start_paused = true)]
    async fn probes_share_one_check_and_reuse_it_for_a_second() {
        const CHECK: Duration = Duration::from_millis(300);
        let readiness = Arc::new(Readiness::default());
        let checks = Arc::new(AtomicUsize::new(0));
        let probe = |answer: Services| {
            let (readiness, checks) = (readiness.clone(), checks.clone());
            async move {
                readiness
                    .services(|| async move {
                        checks.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(CHECK).await;
                        answer
                    })
                    .await
            }
        };
        let probes: Vec<_> = (0..50)
            .map(|_| tokio::spawn(probe(Services::Answering)))
            .collect();
        for answered in futures::future::join_all(probes).await {
            assert_eq!(answered.unwrap().0, Services::Answering);
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1, "one check for 50 probes");

        // The check took 300 ms; its answer is reused until a second after it began.
        tokio::time::advance(REUSE - CHECK - Duration::from_millis(1)).await;
        let silent = Services::Silent("social");
        assert_eq!(
            probe(silent).await,
            (Services::Answering, REUSE - Duration::from_millis(1)),
            "reused, and said how old it is"
        );
        assert_eq!(checks.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(probe(silent).await, (silent, CHECK), "checked again");
        assert_eq!(checks.load(Ordering::SeqCst), 2);
    }
}
