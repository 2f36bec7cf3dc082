//! The processes a run watches and what they cost: CPU seconds (utime + stime from
//! `/proc/<pid>/stat`) of the mesh, nats-server, every Postgres process (the postmaster, its
//! live children and the children it already reaped) and the load generator with its children,
//! and a process's resident set.

use std::collections::HashMap;

use anyhow::Context;
use serde::Serialize;

/// The CPUs this machine gives the run (at least 1).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ; 100 on every Linux build the
/// bench runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// The CPU fields of one `/proc/<pid>/stat` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    /// utime + stime of the process itself.
    own: u64,
    /// cutime + cstime: children it waited for.
    reaped: u64,
}

/// Parses a stat line; the command name may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<i64>().ok());
    Some(Stat {
        ppid: u32::try_from(num(1)?).ok()?,
        own: u64::try_from(num(11)? + num(12)?).ok()?,
        reaped: u64::try_from(num(13)? + num(14)?).ok()?,
    })
}

fn stat_of(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process's stat, by pid.
fn all_stats() -> HashMap<u32, Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_of(pid)?)))
        .collect()
}

/// How a watched process's CPU is counted.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// One process (its threads included).
    Single,
    /// A parent with short- and long-lived children (the Postgres postmaster).
    Tree,
}

/// The processes a run watches, by name.
#[derive(Debug, Clone, Default)]
pub struct Procs {
    watched: Vec<(&'static str, u32, Kind)>,
}

/// CPU ticks used so far, per watched name.
#[derive(Debug, Clone)]
pub struct CpuSample {
    ticks: Vec<(&'static str, Option<u64>)>,
}

/// CPU seconds one watched process used between two samples.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub process: &'static str,
    pub seconds: f64,
}

impl Procs {
    /// The mesh's processes (one, or several when roles run apart), NATS, Postgres and
    /// Synapse pids (any may be unknown) and this process.
    pub fn new(
        mesh: impl IntoIterator<Item = u32>,
        nats: Option<u32>,
        postmaster: Option<u32>,
        synapse: Option<u32>,
    ) -> Self {
        let mut watched = Vec::new();
        for pid in mesh {
            watched.push(("mesh", pid, Kind::Single));
        }
        if let Some(pid) = nats {
            watched.push(("nats-server", pid, Kind::Single));
        }
        if let Some(pid) = postmaster {
            watched.push(("postgres", pid, Kind::Tree));
        }
        if let Some(pid) = synapse {
            watched.push(("synapse", pid, Kind::Single));
        }
        // With its children: the connections scenario holds its sockets in child processes.
        watched.push(("loadgen", std::process::id(), Kind::Tree));
        Self { watched }
    }

    /// The mesh's processes.
    pub fn meshes(&self) -> Vec<u32> {
        self.watched
            .iter()
            .filter(|(name, _, _)| *name == "mesh")
            .map(|w| w.1)
            .collect()
    }

    pub fn sample(&self) -> CpuSample {
        let needs_tree = self.watched.iter().any(|w| matches!(w.2, Kind::Tree));
        let all = if needs_tree {
            all_stats()
        } else {
            HashMap::new()
        };
        let ticks = self
            .watched
            .iter()
            .map(|(name, pid, kind)| {
                let used = match kind {
                    Kind::Single => stat_of(*pid).map(|s| s.own),
                    Kind::Tree => all.get(pid).map(|root| {
                        let children: u64 =
                            all.values().filter(|s| s.ppid == *pid).map(|s| s.own).sum();
                        root.own + root.reaped + children
                    }),
                };
                (*name, used)
            })
            .collect();
        CpuSample { ticks }
    }
}

impl CpuSample {
    /// CPU seconds each watched name used since `earlier`, its processes summed; a process
    /// that vanished is left out (a name all of whose processes vanished, too).
    pub fn since(&self, earlier: &CpuSample) -> Vec<CpuUse> {
        let mut used: Vec<(&'static str, Option<u64>)> = Vec::new();
        for (i, (name, now)) in self.ticks.iter().enumerate() {
            let delta = earlier
                .ticks
                .get(i)
                .filter(|(n, _)| n == name)
                .and_then(|(_, before)| Some((*now)?.saturating_sub((*before)?)));
            match used.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => {
                    if let Some(delta) = delta {
                        *sum = Some(sum.unwrap_or(0) + delta);
                    }
                }
                None => used.push((name, delta)),
            }
        }
        used.into_iter()
            .filter_map(|(process, ticks)| {
                Some(CpuUse {
                    process,
                    seconds: ticks? as f64 / TICKS_PER_SEC,
                })
            })
            .collect()
    }
}

/// VmRSS of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is --pid the mesh process?)"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line =
            "4242 (post gres: a) b) S 17 4242 4242 0 -1 4194560 10 0 0 0 250 50 7 3 20 0 1 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 17,
                own: 300,
                reaped: 10
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_watched_and_its_cpu_counted() {
        let procs = Procs::new([], None, Some(std::process::id()), None);
        let before = procs.sample();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut x = 0u64;
        let used = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let used = procs.sample().since(&before);
            if used.iter().any(|u| u.seconds > 0.0) || std::time::Instant::now() > deadline {
                break used;
            }
        };
        let names: Vec<&str> = used.iter().map(|u| u.process).collect();
        assert_eq!(names, ["postgres", "loadgen"]);
        let loadgen = used.iter().find(|u| u.process == "loadgen").unwrap();
        assert!(loadgen.seconds > 0.0, "{used:?}");
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn the_processes_of_one_name_are_summed() {
        let at = |ticks: [Option<u64>; 3]| CpuSample {
            ticks: vec![
                ("mesh", ticks[0]),
                ("mesh", ticks[1]),
                ("nats-server", ticks[2]),
            ],
        };
        let used = at([Some(150), Some(70), Some(9)]).since(&at([Some(100), Some(20), Some(5)]));
        let seconds: Vec<(&str, f64)> = used.iter().map(|u| (u.process, u.seconds)).collect();
        assert_eq!(seconds, [("mesh", 1.0), ("nats-server", 0.04)]);
        // One mesh process gone: the other still counts; both gone: no figure.
        let used = at([None, Some(70), None]).since(&at([Some(100), Some(20), Some(5)]));
        let seconds: Vec<(&str, f64)> = used.iter().map(|u| (u.process, u.seconds)).collect();
        assert_eq!(seconds, [("mesh", 0.5)]);
    }
}
