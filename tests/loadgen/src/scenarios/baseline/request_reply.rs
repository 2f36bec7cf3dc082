//! Raw NATS request/reply: a tiny responder of the load generator's own (logged in as the
//! `user` role, which answers requests) echoes a small answer, and `concurrency` requesters
//! (as the `edge` role) each keep one request outstanding, as the read scenario's clients do.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use super::Figure;
use crate::pace::Schedule;
use crate::raw_nats::{NatsAccess, RAW_PREFIX};
use crate::tally::Tally;

/// Bytes of a raw answer: about a read's answer (a group's JSON).
pub const ANSWER_BYTES: usize = 300;

pub struct Plan {
    pub concurrency: usize,
    pub seconds: f64,
    /// Operations a second asked of all clients together (`None`: as fast as they go).
    pub pace: Option<f64>,
    /// Bytes of each answer (a read's answer is a small JSON document).
    pub answer_bytes: usize,
}

pub async fn measure(access: &NatsAccess, plan: &Plan) -> anyhow::Result<Figure> {
    let subject = format!("{RAW_PREFIX}.user.echo");
    let responder = access.connect("user").await?;
    let mut requests = responder.subscribe(subject.clone()).await?;
    responder.flush().await?;
    let answer = Bytes::from(vec![b'r'; plan.answer_bytes.max(1)]);
    let echo = tokio::spawn({
        let responder = responder.clone();
        async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = responder.publish(reply, answer.clone()).await;
                }
            }
        }
    });

    let client = access.connect("edge").await?;
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(plan.seconds.max(1.0));
    let schedule = plan
        .pace
        .map(|per_sec| std::sync::Arc::new(Schedule::new(per_sec)));
    let tasks: Vec<_> = (0..plan.concurrency.max(1))
        .map(|_| {
            let client = client.clone();
            let subject = subject.clone();
            let schedule = schedule.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let question =
                    Bytes::from_static(b"{\"user_id\":\"00000000-0000-0000-0000-000000000000\"}");
                while Instant::now() < end {
                    if let Some(schedule) = &schedule {
                        schedule.wait().await;
                    }
                    let began = Instant::now();
                    match client.request(subject.clone(), question.clone()).await {
                        Ok(_) => tally.success(began),
                        Err(err) => tally.failure(err),
                    }
                }
                tally
            })
        })
        .collect();
    let tally = Tally::join(tasks).await?;
    let seconds = started.elapsed().as_secs_f64();
    echo.abort();
    Ok(Figure::of(
        &tally,
        1,
        seconds,
        format!(
            "{} requesters, one request each outstanding, {} B answers",
            plan.concurrency, plan.answer_bytes
        ),
    ))
}
