//! Chat's quota operations: a user's plan and overrides (set through the edge by a holder of
//! `quotas:write`) and their messages stored today.

use mesh_contracts::ServiceError;
use mesh_contracts::usage::{Metric, SetQuotaRequest, Usage, UsageRequest};
use mesh_contracts::user::Empty;
use mesh_nats::CallContext;
use mesh_service_kit::Fault;
use mesh_service_kit::quota;

use super::State;
use crate::store::SCHEMA;

pub async fn set_quota(
    state: State,
    _ctx: CallContext,
    req: SetQuotaRequest,
) -> Result<Empty, ServiceError> {
    quota::apply_setting(state.pool(), SCHEMA, &req).await
}

pub async fn usage(state: State, _ctx: CallContext, req: UsageRequest) -> Result<Usage, Fault> {
    let metric = Metric::MessagesPerDay;
    let used = quota::used_today(state.pool(), SCHEMA, req.user_id, metric).await?;
    Ok(quota::report(state.pool(), SCHEMA, req.user_id, &[(metric, used)]).await?)
}
