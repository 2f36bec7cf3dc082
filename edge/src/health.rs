//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: NATS is connected and
//! the user, social and chat services answer).

use mesh_contracts::ErrorCode;
use mesh_contracts::chat::Health as ChatHealth;
use mesh_contracts::social::Health as SocialHealth;
use mesh_contracts::user::{Empty, Health};
use mesh_nats::CallContext;
use poem::web::{Data, Json};
use poem::{IntoResponse, Response, handler};
use serde_json::json;

use crate::SharedState;
use crate::problem::ApiError;

/// How long `/readyz` waits for the services' health answers (so it answers within a second).
const READY_DEADLINE: std::time::Duration = std::time::Duration::from_millis(800);

#[handler]
pub fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

#[handler]
pub async fn readyz(Data(state): Data<&SharedState>) -> Response {
    if !state.bus.is_connected() {
        return ApiError::new(ErrorCode::ServiceUnavailable, "not connected to NATS")
            .into_response();
    }
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
        None => {
            Json(json!({ "status": "ready", "nats": state.bus.server_version() })).into_response()
        }
        Some((service, err)) => {
            tracing::warn!(error = %err, service, "not ready");
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!("the {service} service is not answering"),
            )
            .into_response()
        }
    }
}
