//! What concurrent workers of a timed scenario count: operations that succeeded (with their
//! latency) and those that failed (with the first few errors), merged when the workers end.

use std::fmt::Display;
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::task::JoinHandle;

use crate::report::{self, Latency};

/// Failures kept word for word.
const SAMPLES: usize = 3;

pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures.
    pub samples: Vec<String>,
    latencies: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            ok: 0,
            failed: 0,
            samples: Vec::new(),
            latencies: report::histogram(),
        }
    }
}

impl Tally {
    /// An operation begun at `began` succeeded now.
    pub fn success(&mut self, began: Instant) {
        self.ok += 1;
        let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.latencies.saturating_record(micros.max(1));
    }

    pub fn failure(&mut self, err: impl Display) {
        self.failed += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(err.to_string());
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        let room = SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
        self.latencies.add(other.latencies).ok();
    }

    pub fn latency(&self) -> Latency {
        Latency::of(&self.latencies)
    }

    /// Waits for every worker and merges what they counted.
    pub async fn join(workers: Vec<JoinHandle<Tally>>) -> anyhow::Result<Tally> {
        let mut total = Tally::default();
        for worker in workers {
            total.merge(worker.await?);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_counts_samples_and_latencies() {
        let mut a = Tally::default();
        a.success(Instant::now());
        a.failure("first");
        let mut b = Tally::default();
        for i in 0..5 {
            b.failure(format!("b{i}"));
        }
        b.success(Instant::now());
        a.merge(b);
        assert_eq!((a.ok, a.failed), (2, 6));
        assert_eq!(a.samples, ["first", "b0", "b1"]);
        assert_eq!(a.latency().count, 2);
    }
}
