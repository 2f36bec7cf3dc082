//! The edge's own HTTP floor: `GET /healthz` (answered by the edge alone, no token checked, no
//! NATS hop) from `concurrency` clients each with one request outstanding, as the read
//! scenario's clients do, through the same lean reader. A read through the bus cannot be
//! faster than this.

use std::time::{Duration, Instant};

use super::Figure;
use crate::api::Api;
use crate::pace::Schedule;
use crate::reader::{Get, Reader};
use crate::tally::Tally;

pub struct Plan {
    pub concurrency: usize,
    pub seconds: f64,
    /// Operations a second asked of all clients together (`None`: as fast as they go).
    pub pace: Option<f64>,
}

pub async fn measure(api: &Api, plan: &Plan) -> anyhow::Result<Figure> {
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(plan.seconds.max(1.0));
    let get = Get::new(api.base(), "/healthz", None)?;
    let schedule = plan
        .pace
        .map(|per_sec| std::sync::Arc::new(Schedule::new(per_sec)));
    let tasks: Vec<_> = (0..plan.concurrency.max(1))
        .map(|_| {
            let mut reader = Reader::new(get.clone());
            let schedule = schedule.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < end {
                    if let Some(schedule) = &schedule {
                        schedule.wait().await;
                    }
                    let began = Instant::now();
                    match reader.send().await {
                        Ok(status) if status.is_success() => tally.success(began),
                        Ok(status) => tally.failure(format!("GET /healthz answered {status}")),
                        Err(err) => tally.failure(format!("{err:#}")),
                    }
                }
                tally
            })
        })
        .collect();
    let tally = Tally::join(tasks).await?;
    Ok(Figure::of(
        &tally,
        1,
        started.elapsed().as_secs_f64(),
        format!(
            "{} clients, GET /healthz through the edge (no token, no NATS)",
            plan.concurrency.max(1)
        ),
    ))
}
