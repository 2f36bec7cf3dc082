//! The audit log's RPC handlers: decode, check the caller, read, reply.

use mesh_contracts::audit::{AuditPage, ListAuditRequest};
use mesh_contracts::permissions::AUDIT_READ;
use mesh_nats::CallContext;
use mesh_service_kit::Fault;

use super::State;
use super::access::caller_must_hold;
use super::query::AuditQuery;
use super::store;

/// `list_audit`: records newest first, for holders of `audit:read` only.
pub async fn list(
    state: State,
    ctx: CallContext,
    req: ListAuditRequest,
) -> Result<AuditPage, Fault> {
    caller_must_hold(&state.rpc, &ctx, AUDIT_READ).await?;
    let query = AuditQuery::try_from(req)?;
    let rows = store::list(&state.pool, &query).await?;
    let (items, next_cursor) = query.page.finish(rows, |record| record.id);
    Ok(AuditPage { items, next_cursor })
}
