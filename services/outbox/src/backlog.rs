//! `outbox_backlog`: how many events each schema's outbox holds that are not relayed yet, for
//! enabled administrators (the mesh health page).

use mesh_contracts::ServiceError;
use mesh_contracts::mesh_health::{
    GetOutboxBacklog, OutboxBacklog, OutboxBacklogRequest, SchemaBacklog,
};
use mesh_contracts::permissions::MESH_READ;
use mesh_nats::{Bus, CallContext, RpcClient, ServiceHost};

use crate::audit::caller_must_hold;
use crate::relay::{Source, measure};

/// What the backlog handler reads; cheap to clone.
#[derive(Clone)]
pub struct State {
    sources: Vec<Source>,
    rpc: RpcClient,
}

impl State {
    pub fn new(bus: &Bus, sources: Vec<Source>, rpc_timeout: std::time::Duration) -> Self {
        Self {
            sources,
            rpc: bus.rpc_client(rpc_timeout),
        }
    }
}

pub fn register(host: ServiceHost, state: State) -> ServiceHost {
    mesh_nats::operations!(host, state;
        GetOutboxBacklog => backlog,
    )
}

async fn backlog(
    state: State,
    ctx: CallContext,
    _req: OutboxBacklogRequest,
) -> Result<OutboxBacklog, ServiceError> {
    caller_must_hold(&state.rpc, &ctx, MESH_READ).await?;
    let mut schemas = Vec::with_capacity(state.sources.len());
    for source in &state.sources {
        let (backlog, oldest_age_seconds) = measure(source).await.map_err(|err| {
            tracing::warn!(schema = source.schema, error = %err, "cannot measure the outbox backlog");
            ServiceError::internal()
        })?;
        schemas.push(SchemaBacklog {
            schema: source.schema.to_owned(),
            backlog,
            oldest_age_seconds,
        });
    }
    Ok(OutboxBacklog { schemas })
}
