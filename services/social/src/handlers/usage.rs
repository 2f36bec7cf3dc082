//! Social's quota operations: a user's plan and overrides (set through the edge by a holder
//! of `quotas:write`) and what they use of friend requests, groups owned and group size.

use mesh_contracts::ServiceError;
use mesh_contracts::usage::{SetQuotaRequest, Usage, UsageRequest};
use mesh_contracts::user::Empty;
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use mesh_service_kit::quota;

use super::State;
use crate::store::{SCHEMA, usage};

pub async fn set_quota(
    state: State,
    _ctx: CallContext,
    req: SetQuotaRequest,
) -> Result<Empty, ServiceError> {
    quota::apply_setting(&state.pool, SCHEMA, &req).await
}

pub async fn usage(state: State, _ctx: CallContext, req: UsageRequest) -> Result<Usage, Fault> {
    let used = usage::used(&state.pool, req.user_id).await?;
    Ok(quota::report(&state.pool, SCHEMA, req.user_id, &used).await?)
}
