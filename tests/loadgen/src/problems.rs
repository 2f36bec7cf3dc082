//! A bounded record of the problems many tasks see while a scenario runs.

use std::sync::Mutex;

/// Most problems of one kind kept as evidence; the rest are only counted.
const PROBLEM_SAMPLES: usize = 5;

/// Problems seen by many tasks: counted by kind, with the first few kept word for word.
#[derive(Default)]
pub struct Problems {
    seen: Mutex<Vec<(String, u64, Vec<String>)>>,
}

/// One kind of problem: how often it was seen and the first few samples.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counted {
    pub kind: String,
    pub times: u64,
    pub samples: Vec<String>,
}

impl Problems {
    pub fn add(&self, kind: &str, evidence: impl FnOnce() -> String) {
        self.absorb(Counted {
            kind: kind.to_owned(),
            times: 1,
            samples: vec![evidence()],
        });
    }

    /// Adds problems counted elsewhere (another process), kind by kind.
    pub fn absorb(&self, counted: Counted) {
        let mut seen = self.seen.lock().expect("problems lock");
        let index = match seen.iter().position(|(k, _, _)| *k == counted.kind) {
            Some(index) => index,
            None => {
                seen.push((counted.kind, 0, Vec::new()));
                seen.len() - 1
            }
        };
        let entry = &mut seen[index];
        entry.1 += counted.times;
        let room = PROBLEM_SAMPLES.saturating_sub(entry.2.len());
        entry.2.extend(counted.samples.into_iter().take(room));
    }

    /// Every kind with its count and samples.
    pub fn counted(&self) -> Vec<Counted> {
        self.seen
            .lock()
            .expect("problems lock")
            .iter()
            .map(|(kind, times, samples)| Counted {
                kind: kind.clone(),
                times: *times,
                samples: samples.clone(),
            })
            .collect()
    }

    /// One line per kind: `kind (n times), e.g. evidence; evidence`.
    pub fn lines(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("problems lock")
            .iter()
            .map(|(kind, n, samples)| format!("{kind} ({n} times), e.g. {}", samples.join("; ")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_counted_with_a_few_samples() {
        let problems = Problems::default();
        for i in 0..7 {
            problems.add("closed", || format!("close {i}"));
        }
        let lines = problems.lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("closed (7 times), e.g. close 0;"),
            "{}",
            lines[0]
        );
        assert!(!lines[0].contains("close 5"));
    }

    #[test]
    fn problems_from_other_processes_merge_by_kind() {
        let here = Problems::default();
        here.add("closed", || "a".into());
        let there = Problems::default();
        for i in 0..6 {
            there.add("closed", || format!("b{i}"));
        }
        there.add("failed", || "c".into());
        for counted in there.counted() {
            here.absorb(counted);
        }
        assert_eq!(
            here.lines(),
            [
                "closed (7 times), e.g. a; b0; b1; b2; b3",
                "failed (1 times), e.g. c"
            ]
        );
    }
}
