//! The two parts a read through the bus cannot do without, run together with nothing else: the
//! edge's own HTTP answer (`GET /healthz`) and a raw NATS request/reply, each asked the read
//! target's rate (a share of the raw request/reply rate just measured) by as many clients as
//! the read scenario has. When this machine cannot hold both at that rate at once, no read
//! that needs one of each can reach it.

use crate::api::Api;
use crate::raw_nats::NatsAccess;

use super::{Figure, edge_http, request_reply};

pub struct Plan {
    pub concurrency: usize,
    pub seconds: f64,
    /// Operations a second asked of each part.
    pub per_sec: f64,
}

/// What each part reached.
pub struct Parts {
    pub edge_http: Figure,
    pub request_reply: Figure,
}

pub async fn measure(api: &Api, nats: &NatsAccess, plan: &Plan) -> anyhow::Result<Parts> {
    let http = edge_http::Plan {
        concurrency: plan.concurrency,
        seconds: plan.seconds,
        pace: Some(plan.per_sec),
    };
    let nats_plan = request_reply::Plan {
        concurrency: plan.concurrency,
        seconds: plan.seconds,
        answer_bytes: request_reply::ANSWER_BYTES,
        pace: Some(plan.per_sec),
    };
    let (edge_http, request_reply) = tokio::join!(
        edge_http::measure(api, &http),
        request_reply::measure(nats, &nats_plan)
    );
    Ok(Parts {
        edge_http: edge_http?,
        request_reply: request_reply?,
    })
}

/// Whether a part reached the rate asked of it (within 2%: a paced client's last slots may
/// fall past the end).
pub fn kept_up(reached: f64, asked: f64) -> bool {
    reached >= asked * 0.98
}
