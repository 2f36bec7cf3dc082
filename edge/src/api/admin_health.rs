//! `GET /v1/admin/health`: the mesh's health for administrators: every service and the
//! per-endpoint statistics each of its instances reports through the NATS services API
//! (`$SRV.STATS`). Gated like the other admin routes, by the permission the route table names
//! (`mesh:read`).

use std::time::Duration;

use mesh_contracts::leases::LeaseKey;
use mesh_contracts::mesh_health::{
    GetOutboxBacklog, MeshHealth, OutboxBacklogRequest, PartitionOwner, ServiceHealth,
};
use mesh_contracts::{Bucket, ErrorCode, Service};
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::payload::Json;

use super::Tag;
use crate::SharedState;
use crate::caller::{BearerAuth, Call};
use crate::problem::{ApiError, ApiResult};

/// How long instances' statistics are gathered: every running instance answers at once, so
/// this only bounds the wait for the last of them.
const STATS_WINDOW: Duration = Duration::from_millis(500);

pub struct AdminHealthApi;

#[OpenApi(prefix_path = "/v1/admin", tag = "Tag::Admin")]
impl AdminHealthApi {
    /// Every service of the mesh with the instances that answered `$SRV.STATS` and their
    /// per-operation request, error and latency counters (a service with no instance is
    /// listed with none), the outbox backlog per schema (`null` when the outbox role does not
    /// answer) and the owner of each chat ingest partition. Refused with `unauthorized` (401) without a valid token and
    /// `forbidden` (403) without the permission `mesh:read`.
    #[oai(path = "/health", method = "get", operation_id = "admin_mesh_health")]
    async fn health(
        &self,
        call: Call,
        auth: BearerAuth,
        state: Data<&SharedState>,
    ) -> ApiResult<MeshHealth> {
        let call = call.permitted(&auth, "admin_mesh_health").await?;
        // Asked of every service at once: one gathering window in all.
        let asks = Service::ALL.iter().map(|service| async {
            let name = state.bus.prefix().service_name(*service);
            let instances = state.bus.service_stats(&name, STATS_WINDOW).await;
            instances.map(|instances| ServiceHealth {
                service: service.as_str().to_owned(),
                name,
                instances,
            })
        });
        let services = futures::future::try_join_all(asks).await.map_err(|err| {
            tracing::warn!(error = %err, "cannot ask for service statistics");
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the mesh cannot be asked right now",
            )
        })?;
        let outbox = call
            .send::<GetOutboxBacklog>(&OutboxBacklogRequest {})
            .await
            .ok();
        let partitions = partition_owners(&state).await?;
        Ok(Json(MeshHealth {
            services,
            outbox,
            partitions,
        }))
    }
}

/// Each ingest partition's lease holder, as chat workers record it in the LEASES bucket.
async fn partition_owners(state: &SharedState) -> Result<Vec<PartitionOwner>, ApiError> {
    let unavailable = |err: &dyn std::fmt::Display| {
        tracing::warn!(error = %err, "cannot read the partition leases");
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "the partition leases cannot be read right now",
        )
    };
    let leases = state
        .bus
        .bucket(Bucket::Leases)
        .await
        .map_err(|err| unavailable(&err))?;
    let mut owners = Vec::with_capacity(state.chat_partitions as usize);
    for partition in 0..state.chat_partitions {
        let entry = leases
            .get(&LeaseKey::Partition(partition).key())
            .await
            .map_err(|err| unavailable(&err))?;
        owners.push(PartitionOwner {
            partition,
            owner: entry.map(|e| String::from_utf8_lossy(&e.value).into_owned()),
        });
    }
    Ok(owners)
}
