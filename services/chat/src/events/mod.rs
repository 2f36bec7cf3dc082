//! Chat's consumers of social's events: the membership projection and the notifications pushed
//! to affected users. Each is a durable consumer shared by every chat instance.

mod notifications;
mod projection;

use mesh_contracts::Service;
use mesh_service_kit::events::{Consumer, consume};
use tokio_util::sync::CancellationToken;

use crate::state::State;
use crate::store::SCHEMA;

const SOCIAL: &[Service] = &[Service::Social];

/// Runs both consumers until `stop`.
pub async fn run(state: State, stop: CancellationToken) {
    let consumer = |which: mesh_contracts::Consumer| Consumer {
        name: which.name(),
        services: SOCIAL,
        schema: SCHEMA,
        pool: state.pool().clone(),
    };
    let projecting = consume(
        state.bus().clone(),
        consumer(projection::CONSUMER),
        stop.clone(),
        |envelope| projection::apply(state.clone(), envelope),
    );
    let notifying = consume(
        state.bus().clone(),
        consumer(notifications::CONSUMER),
        stop.clone(),
        |envelope| notifications::push(state.clone(), envelope),
    );
    tokio::join!(projecting, notifying);
}
