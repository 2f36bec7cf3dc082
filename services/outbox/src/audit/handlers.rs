//! The audit log's RPC handlers: decode, check the caller, read, reply.

use mesh_contracts::ServiceError;
use mesh_contracts::audit::{AuditPage, ListAuditRequest};
use mesh_contracts::user::{Empty, GetMe};
use mesh_nats::CallContext;
use mesh_service_kit::db_error;

use super::State;
use super::access::require_admin;
use super::query::AuditQuery;
use super::store;

/// `list_audit`: records newest first, for enabled administrators only.
pub async fn list(
    state: State,
    ctx: CallContext,
    req: ListAuditRequest,
) -> Result<AuditPage, ServiceError> {
    let caller = state
        .rpc
        .call::<GetMe>(&ctx, &Empty {})
        .await
        .map_err(|err| err.into_service_error("user"))?;
    require_admin(&caller)?;
    let query = AuditQuery::try_from(req)?;
    let rows = store::list(&state.pool, &query).await.map_err(db_error)?;
    let (items, next_cursor) = query.page.finish(rows, |record| record.id);
    Ok(AuditPage { items, next_cursor })
}
