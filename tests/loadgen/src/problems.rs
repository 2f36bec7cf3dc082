//! A bounded record of the problems many tasks see while a scenario runs.

use std::sync::Mutex;

/// Most problems of one kind kept as evidence; the rest are only counted.
const PROBLEM_SAMPLES: usize = 5;

/// Problems seen by many tasks: counted by kind, with the first few kept word for word.
#[derive(Default)]
pub struct Problems {
    seen: Mutex<Vec<(String, u64, Vec<String>)>>,
}

impl Problems {
    pub fn add(&self, kind: &str, evidence: impl FnOnce() -> String) {
        let mut seen = self.seen.lock().expect("problems lock");
        let index = match seen.iter().position(|(k, _, _)| k == kind) {
            Some(index) => index,
            None => {
                seen.push((kind.to_owned(), 0, Vec::new()));
                seen.len() - 1
            }
        };
        let entry = &mut seen[index];
        entry.1 += 1;
        if entry.2.len() < PROBLEM_SAMPLES {
            entry.2.push(evidence());
        }
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
}
