//! A fixed rate shared by many workers: each operation takes the next slot of one schedule and
//! waits for its time, so the workers together ask `per_sec` operations a second. A slot
//! already past is taken at once: workers that cannot keep up simply go as fast as they can,
//! each with one operation outstanding, so how far they fall short is what they could not do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub struct Schedule {
    start: Instant,
    period: Duration,
    next: AtomicU64,
}

impl Schedule {
    /// A schedule from now at `per_sec` operations a second (at least one).
    pub fn new(per_sec: f64) -> Self {
        Self {
            start: Instant::now(),
            period: Duration::from_secs_f64(1.0 / per_sec.max(1.0)),
            next: AtomicU64::new(0),
        }
    }

    /// When slot `n` is due.
    fn due(&self, n: u64) -> Instant {
        self.start + self.period.mul_f64(n as f64)
    }

    /// Takes the next slot and answers when it is due.
    pub fn take(&self) -> Instant {
        self.due(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Takes the next slot and waits until it is due (not at all when it is past).
    pub async fn wait(&self) {
        tokio::time::sleep_until(self.take()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_due_one_period_apart() {
        let schedule = Schedule::new(1000.0);
        let start = schedule.start;
        assert_eq!(schedule.due(0), start);
        assert_eq!(schedule.due(250), start + Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn workers_together_keep_to_the_rate() {
        let schedule = std::sync::Arc::new(Schedule::new(2000.0));
        let start = schedule.start;
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let schedule = schedule.clone();
                tokio::spawn(async move {
                    let mut done = 0u32;
                    while Instant::now() < start + Duration::from_secs(1) {
                        schedule.wait().await;
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut total = 0;
        for worker in workers {
            total += worker.await.unwrap();
        }
        assert!(
            (2000..=2010).contains(&total),
            "{total} operations in a second"
        );
    }
}
