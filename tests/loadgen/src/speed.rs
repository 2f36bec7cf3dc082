//! The machine's speed while a scenario runs: a thread of its own does the same fixed piece of
//! work every few milliseconds and times it in its own CPU time. Time the thread waits for a
//! CPU is not counted, and the work touches no memory, so the other processes being busy or
//! filling the caches hardly slow it; what does is the CPU itself running slower (the host
//! lowering its clock, another guest's thread on the same physical core, the host taking the
//! CPU away without reporting it as steal). `/proc/stat` shows none of those.
//!
//! `Speeds` cuts the samples into quarter-seconds and calls one slowed when the work took at
//! least `SLOWED` times what it takes at the scenario's fastest (its fastest tenth), so a
//! scenario's figures can be split by whether the machine ran at its speed meanwhile. Every
//! scenario runs beside one probe (`meter`), whose samples so far it can read (`Samples`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

/// How often the work is done.
const EVERY: Duration = Duration::from_millis(5);
/// Rounds of the fixed work: 45-60 µs of one of this machine's CPUs.
const ROUNDS: u64 = 20_000;
/// The length of the stretches the samples are grouped by, in microseconds.
pub const WINDOW_US: u32 = 250_000;
/// A stretch is slowed when its median sample took at least this many times the fastest tenth.
pub const SLOWED: f64 = 1.3;

/// The thread doing the work, until `finish`.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Samples,
    worker: Option<JoinHandle<()>>,
}

/// A probe's samples, readable while it runs.
#[derive(Clone, Default)]
pub struct Samples(Arc<Mutex<Vec<Sample>>>);

impl Samples {
    /// The samples taken so far.
    pub fn taken(&self) -> Vec<Sample> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, sample: Sample) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sample);
    }
}

/// One timing of the work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Instant,
    /// CPU time the work took, in nanoseconds.
    pub work_ns: u64,
}

impl Sampler {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Samples::default();
        let (flag, into) = (Arc::clone(&stop), samples.clone());
        let worker = std::thread::Builder::new()
            .name("speed-probe".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    if let Some(work_ns) = timed_work() {
                        into.push(Sample { at, work_ns });
                    }
                    std::thread::sleep(EVERY);
                }
            })
            .expect("a thread for the speed probe");
        Self {
            stop,
            samples,
            worker: Some(worker),
        }
    }

    /// A handle on the samples, to read them while the probe runs.
    pub fn samples(&self) -> Samples {
        self.samples.clone()
    }

    /// Stops the thread: its samples.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        self.samples.taken()
    }
}

/// A sampler dropped unfinished (its scenario failed) stops its thread too.
impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The fixed work's CPU time on this thread; `None` when the clock cannot be read. Eight
/// independent streams of multiplications in registers: the work keeps the core's arithmetic
/// units busy (so it slows when another thread shares the core, or the clock drops) and
/// touches no memory (so the caches the other processes fill do not slow it).
fn timed_work() -> Option<u64> {
    let before = thread_cpu_ns()?;
    let mut streams = [1_u64, 2, 3, 4, 5, 6, 7, 8];
    for i in 0..ROUNDS {
        for (k, x) in (0_u64..).zip(streams.iter_mut()) {
            *x = x
                .wrapping_mul(0x5851_f42d_4c95_7f2d)
                .wrapping_add(std::hint::black_box(i ^ k));
            *x ^= *x >> 29;
        }
    }
    std::hint::black_box(streams);
    let after = thread_cpu_ns()?;
    Some(after.saturating_sub(before))
}

fn thread_cpu_ns() -> Option<u64> {
    let now = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

/// The samples of a scenario, at microseconds of its timeline.
#[derive(Debug, Clone, Default)]
pub struct Speeds {
    samples: Vec<(u32, u64)>,
}

/// What the samples say over a part of the scenario.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// The work's CPU time at the scenario's fastest (its fastest tenth), and its median.
    pub fast_us: f64,
    pub median_us: f64,
    /// Stretches with samples, and the slowed ones among them.
    pub windows: usize,
    #[serde(rename = "slowed_windows")]
    pub slowed: usize,
    pub slowed_share: f64,
    /// The slowest stretch's median against `fast_us`.
    pub slowest: f64,
    /// A stretch's median at least this many times `fast_us` is slowed.
    pub slowed_factor: f64,
}

impl Speeds {
    /// `samples` placed on a timeline by `at` (microseconds since its start).
    pub fn new(samples: &[Sample], at: impl Fn(Instant) -> u32) -> Self {
        Self {
            samples: samples.iter().map(|s| (at(s.at), s.work_ns)).collect(),
        }
    }

    fn within(&self, window: (u32, u32)) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.samples
            .iter()
            .copied()
            .filter(move |(at, _)| (window.0..window.1).contains(at))
    }

    /// The samples inside `window` taken apart once: the fastest tenth, the median, and each
    /// stretch's median by stretch number; `None` when there are none.
    fn stretches(&self, window: (u32, u32)) -> Option<Stretches> {
        let mut all: Vec<u64> = self.within(window).map(|(_, ns)| ns).collect();
        all.sort_unstable();
        let (fast, median) = (*all.get(all.len() / 10)?, all[all.len() / 2]);
        let mut by: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for (at, ns) in self.within(window) {
            by.entry(at / WINDOW_US).or_default().push(ns);
        }
        let medians = by
            .into_iter()
            .map(|(stretch, mut all)| {
                all.sort_unstable();
                (stretch, all[all.len() / 2])
            })
            .collect();
        Some(Stretches {
            fast: fast.max(1),
            median,
            medians,
        })
    }

    /// The summary of the samples inside `window` and the stretches in which the machine ran
    /// slowed; `None` when there are none.
    pub fn assess(&self, window: (u32, u32)) -> Option<(Summary, BTreeSet<u32>)> {
        let Stretches {
            fast,
            median,
            medians,
        } = self.stretches(window)?;
        let fast = fast as f64;
        let slowed: BTreeSet<u32> = medians
            .iter()
            .filter(|(_, median)| *median as f64 >= fast * SLOWED)
            .map(|(stretch, _)| *stretch)
            .collect();
        let slowest = medians.iter().map(|(_, m)| *m).max().unwrap_or(0) as f64 / fast;
        let windows = medians.len();
        let summary = Summary {
            fast_us: (fast / 100.0).round() / 10.0,
            median_us: (median as f64 / 100.0).round() / 10.0,
            windows,
            slowed: slowed.len(),
            slowed_share: (slowed.len() as f64 / windows.max(1) as f64 * 1000.0).round() / 1000.0,
            slowest: (slowest * 100.0).round() / 100.0,
            slowed_factor: SLOWED,
        };
        Some((summary, slowed))
    }

    /// Whether the moment `at` fell in a slowed stretch of `slowed`.
    pub fn is_slowed(slowed: &BTreeSet<u32>, at: u32) -> bool {
        slowed.contains(&(at / WINDOW_US))
    }

    /// What the samples inside `window` say; `None` when there are none.
    pub fn summary(&self, window: (u32, u32)) -> Option<Summary> {
        self.assess(window).map(|(summary, _)| summary)
    }
}

/// The samples of a window, taken apart.
struct Stretches {
    fast: u64,
    median: u64,
    medians: Vec<(u32, u64)>,
}

impl Summary {
    /// `fastest tenth 41 µs, median 44 µs; slowed (1.3x or more) in 12 of 80 quarter-seconds,
    /// the slowest 1.74x`
    pub fn line(&self) -> String {
        format!(
            "the same work took {:.0} µs of CPU at the fastest tenth, {:.0} µs at the median; \
             slowed ({SLOWED}x or more) in {} of {} quarter-seconds, the slowest at {:.2}x",
            self.fast_us, self.median_us, self.slowed, self.windows, self.slowest
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every 5 ms from 0 to `until_us`, taking `ns(at)`.
    fn speeds(until_us: u32, ns: impl Fn(u32) -> u64) -> Speeds {
        Speeds {
            samples: (0..until_us)
                .step_by(5_000)
                .map(|at| (at, ns(at)))
                .collect(),
        }
    }

    #[test]
    fn stretches_whose_work_took_longer_are_slowed_and_summarised() {
        // 2 s at 40 µs, but the quarter-second from 1.0 s at 70 µs.
        let speeds = speeds(2_000_000, |at| {
            if (1_000_000..1_250_000).contains(&at) {
                70_000
            } else {
                40_000
            }
        });
        let window = (0, 2_000_000);
        assert_eq!(slowed(&speeds, window), BTreeSet::from([4]));
        assert!(Speeds::is_slowed(&slowed(&speeds, window), 1_100_000));
        assert!(!Speeds::is_slowed(&slowed(&speeds, window), 1_300_000));
        let summary = speeds.summary(window).unwrap();
        assert_eq!(summary.windows, 8);
        assert_eq!(summary.slowed, 1);
        assert!((summary.fast_us - 40.0).abs() < 1e-9);
        assert!((summary.slowest - 1.75).abs() < 1e-9);
        assert!((summary.slowed_share - 0.125).abs() < 1e-9);
        assert!(
            summary.line().contains("1 of 8 quarter-seconds"),
            "{}",
            summary.line()
        );
    }

    #[test]
    fn a_little_jitter_is_not_a_slowdown_and_only_the_window_counts() {
        let speeds = speeds(1_000_000, |at| 40_000 + u64::from(at % 7) * 1_000);
        assert!(slowed(&speeds, (0, 1_000_000)).is_empty());
        // Outside the window the work was slow; inside it was not.
        let speeds = speeds_with_slow_start();
        assert!(slowed(&speeds, (500_000, 1_000_000)).is_empty());
        assert_eq!(slowed(&speeds, (0, 1_000_000)), BTreeSet::from([0]));
        assert_eq!(Speeds::default().summary((0, 1)), None);
    }

    fn speeds_with_slow_start() -> Speeds {
        speeds(1_000_000, |at| if at < 250_000 { 90_000 } else { 40_000 })
    }

    #[test]
    fn the_probe_times_its_work_in_cpu_time() {
        let probe = Sampler::start();
        let handle = probe.samples();
        wait_until(|| handle.taken().len() >= 3);
        let so_far = handle.taken();
        let samples = probe.finish();
        assert!(samples.len() >= so_far.len() && samples.starts_with(&so_far));
        assert!(samples.len() >= 3, "{samples:?}");
        assert!(samples.iter().all(|s| s.work_ns > 0), "{samples:?}");
        assert!(samples.windows(2).all(|w| w[0].at < w[1].at));

        // Dropped unfinished, it stops sampling too: its thread ends, letting go of its handle
        // on the samples (the test's is then the only one).
        let probe = Sampler::start();
        let handle = probe.samples();
        wait_until(|| !handle.taken().is_empty());
        drop(probe);
        wait_until(|| Arc::strong_count(&handle.0) == 1);
        let after_drop = handle.taken().len();
        assert_eq!(handle.taken().len(), after_drop);
    }

    /// The stretches inside `window` in which the machine ran slowed.
    fn slowed(speeds: &Speeds, window: (u32, u32)) -> BTreeSet<u32> {
        speeds
            .assess(window)
            .map(|(_, slowed)| slowed)
            .unwrap_or_default()
    }

    /// Waits until `done` holds, failing the test after 5 s.
    fn wait_until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "the condition never held");
            std::thread::yield_now();
        }
    }
}
