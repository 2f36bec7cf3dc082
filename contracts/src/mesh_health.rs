//! The mesh's health as administrators see it (`GET /v1/admin/health`): which services answer,
//! each instance's per-endpoint statistics as the NATS services API reports them
//! (`$SRV.STATS.<prefix>-<service>`; field names are that API's), the outbox backlog (asked of
//! the outbox role with `outbox_backlog`) and who owns each chat ingest partition.

use poem_openapi::Object;
use serde::{Deserialize, Serialize};

use crate::rpc;
use crate::rpc::Service;

/// Every service of the mesh, answering or not, the outbox backlog and the partition owners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct MeshHealth {
    pub services: Vec<ServiceHealth>,
    /// Unrelayed events per schema; `None` when the outbox role did not answer.
    pub outbox: Option<OutboxBacklog>,
    /// Chat ingest partitions (`MESH_CHAT_PARTITIONS`) and their current owners.
    pub partitions: Vec<PartitionOwner>,
}

/// The outbox role's view of every service's outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct OutboxBacklog {
    pub schemas: Vec<SchemaBacklog>,
}

/// Events a schema wrote that are not on the EVENTS stream yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct SchemaBacklog {
    /// The schema (`users`, `social`, `chat`).
    pub schema: String,
    /// Rows not yet relayed.
    pub backlog: i64,
    /// Age of the oldest of them, in seconds (0 when none).
    pub oldest_age_seconds: i64,
}

/// One chat ingest partition and the chat worker holding its lease, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct PartitionOwner {
    pub partition: u32,
    /// The owning worker's id as its lease names it; `None` while no worker holds it.
    pub owner: Option<String>,
}

/// Asks the outbox role for the backlog; the request carries nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxBacklogRequest {}

rpc!(
    /// Admin: the outbox backlog of every schema.
    GetOutboxBacklog, Service::Outbox, "outbox_backlog", OutboxBacklogRequest => OutboxBacklog
);

/// One service (`user`, `social`, `chat`, `outbox`) and the instances that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct ServiceHealth {
    /// The service (`chat`).
    pub service: String,
    /// Its NATS services API name (`<prefix>-chat`).
    pub name: String,
    /// Instances that answered the statistics request; empty when none runs.
    pub instances: Vec<ServiceInstanceStats>,
}

/// One running instance's `$SRV.STATS` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct ServiceInstanceStats {
    /// The instance id NATS assigned.
    pub id: String,
    pub version: String,
    /// When the instance started (RFC 3339).
    pub started: String,
    pub endpoints: Vec<EndpointStats>,
}

/// Counters of one endpoint (one RPC operation) of an instance since it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct EndpointStats {
    /// The operation (`list_conversations`).
    pub name: String,
    pub subject: String,
    pub num_requests: u64,
    pub num_errors: u64,
    /// The last error returned, empty when none.
    #[serde(default)]
    pub last_error: String,
    /// Total time spent handling requests, in nanoseconds.
    #[serde(default)]
    pub processing_time: u64,
    /// Mean time per request, in nanoseconds.
    #[serde(default)]
    pub average_processing_time: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_nats_stats_answer() {
        let answer = r#"{"type":"io.nats.micro.v1.stats_response","name":"mesh-chat","id":"X1",
            "version":"0.1.0","started":"2026-12-02T15:00:00.123456789Z","metadata":{},
            "endpoints":[{"name":"history","subject":"mesh.chat.history","queue_group":"q",
            "num_requests":3,"num_errors":1,"last_error":"404:not_found",
            "processing_time":300,"average_processing_time":100,"data":null}]}"#;
        let stats: ServiceInstanceStats = serde_json::from_str(answer).unwrap();
        assert_eq!(stats.endpoints[0].num_requests, 3);
        assert_eq!(stats.endpoints[0].average_processing_time, 100);
    }
}
