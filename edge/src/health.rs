//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: NATS is connected and
//! the user and social services answer).

use mesh_contracts::ErrorCode;
use mesh_contracts::social::Health as SocialHealth;
use mesh_contracts::user::{Empty, Health};
use mesh_nats::CallContext;
use poem::web::{Data, Json};
use poem::{IntoResponse, Response, handler};
use serde_json::json;

use crate::SharedState;
use crate::problem::ApiError;

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
    let (user, social) = tokio::join!(
        state.rpc.call::<Health>(&ctx, &Empty {}),
        state.rpc.call::<SocialHealth>(&ctx, &Empty {}),
    );
    if let Err(err) = social {
        tracing::warn!(error = %err, "not ready: social service");
        return ApiError::new(
            ErrorCode::ServiceUnavailable,
            "the social service is not answering",
        )
        .into_response();
    }
    match user {
        Ok(_) => {
            Json(json!({ "status": "ready", "nats": state.bus.server_version() })).into_response()
        }
        Err(err) => {
            tracing::warn!(error = %err, "not ready: user service");
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the user service is not answering",
            )
            .into_response()
        }
    }
}
