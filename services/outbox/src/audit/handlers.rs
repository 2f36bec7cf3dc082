//! The audit log's RPC handlers: decode, check the caller, read, reply.

use mesh_contracts::ServiceError;
use mesh_contracts::audit::{AuditPage, ListAuditRequest};
use mesh_contracts::rbac::{AccessRequest, GetAccess};
use mesh_nats::CallContext;
use mesh_service_kit::db_error;

use super::State;
use super::access::require_audit_reader;
use super::query::AuditQuery;
use super::store;

/// `list_audit`: records newest first, for holders of `audit:read` only.
pub async fn list(
    state: State,
    ctx: CallContext,
    req: ListAuditRequest,
) -> Result<AuditPage, ServiceError> {
    let user_id = ctx.user_id.ok_or_else(|| {
        ServiceError::new(mesh_contracts::ErrorCode::Unauthorized, "sign in first")
    })?;
    let request = AccessRequest {
        user_id,
        roles: Vec::new(),
    };
    let caller = state
        .rpc
        .call::<GetAccess>(&ctx, &request)
        .await
        .map_err(|err| err.into_service_error("user"))?;
    require_audit_reader(&caller)?;
    let query = AuditQuery::try_from(req)?;
    let rows = store::list(&state.pool, &query).await.map_err(db_error)?;
    let (items, next_cursor) = query.page.finish(rows, |record| record.id);
    Ok(AuditPage { items, next_cursor })
}
