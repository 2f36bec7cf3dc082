//! The rules of the code's layout that a machine can check, read from the sources: every
//! `.rs` file opens with a `//!` line, only `nats` talks to `async_nats`, services build wire
//! values only from `contracts` types (no `json!`), and no crate has an import cycle between
//! its top-level modules.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The workspace root (this test belongs to the root package).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Folders never scanned: build output, installed tools, vendored web code.
const SKIPPED: &[&str] = &["target", ".tools", ".local", "node_modules", ".git"];

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            fs::read_dir(&dir).unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if !SKIPPED.contains(&name) {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The source folders of the workspace's crates: `(crate folder, its src/)`.
fn crate_sources() -> Vec<(String, PathBuf)> {
    let manifest = fs::read_to_string(root().join("Cargo.toml")).expect("read Cargo.toml");
    let members = manifest
        .lines()
        .find_map(|line| line.trim().strip_prefix("members = "))
        .expect("workspace members");
    let mut crates: Vec<(String, PathBuf)> = members
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .map(|m| (m.clone(), root().join(&m).join("src")))
        .collect();
    crates.push((".".to_owned(), root().join("src")));
    crates
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The code of a line, without a trailing `//` comment (good enough for these checks).
fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap_or_default()
}

/// The 1-based lines of `source` that invoke the `json!` macro (by any path).
fn json_macro_lines(source: &str) -> Vec<usize> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = code_of(line);
            code.match_indices("json!").any(|(at, _)| {
                let before = code[..at].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            }) || code.contains("serde_json::json")
        })
        .map(|(number, _)| number + 1)
        .collect()
}

/// The top-level module a file of `src` belongs to (`None` for the crate root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The top-level modules of this crate that `source` names through `crate::`.
fn modules_named(source: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in source.lines() {
        let code = code_of(line);
        for (at, _) in code.match_indices("crate::") {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `mesh_crate::`, not `crate::`
            }
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                named.insert(name);
            }
        }
        // `use crate::{a, b::c}` groups.
        if let Some(group) = code.split("crate::{").nth(1) {
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) {
                    named.insert(name);
                }
            }
        }
    }
    named
}

/// The module cycles of `graph`: each strongly connected set of more than one module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<&str> = vec![from];
        while let Some(at) = pending.pop() {
            for next in graph.get(at).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    pending.push(next);
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reaches(m))).collect();
    let mut found: Vec<Vec<String>> = Vec::new();
    for (module, from_here) in &reach {
        // Sorted, because `from_here` is: one spelling per cycle.
        let cycle: Vec<String> = from_here
            .iter()
            .filter(|other| reach.get(other).is_some_and(|r| r.contains(*module)))
            .cloned()
            .collect();
        if cycle.len() > 1 && !found.contains(&cycle) {
            found.push(cycle);
        }
    }
    found
}

#[test]
fn the_checks_find_what_they_look_for() {
    assert_eq!(
        json_macro_lines("let a = 1;\nlet v = json!({});\nlet w = serde_json::json!([]);"),
        [2, 3]
    );
    assert!(json_macro_lines("// json!({}) in a comment\nmy_json!(x)\n").is_empty());

    let modules: BTreeSet<String> = ["audit", "caller", "problem"].map(String::from).into();
    assert_eq!(
        modules_named(
            "use crate::caller::X;\nuse crate::{problem::A, audit};\nmesh_crate::audit::y();\n// crate::audit",
            &modules
        ),
        ["audit", "caller", "problem"].map(String::from).into()
    );
    assert!(modules_named("use mesh_crate::audit;\n", &modules).is_empty());

    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), ["b".to_owned()].into());
    graph.insert("b".to_owned(), ["c".to_owned()].into());
    graph.insert("c".to_owned(), ["a".to_owned()].into());
    graph.insert("d".to_owned(), ["a".to_owned()].into());
    assert_eq!(cycles(&graph), [["a", "b", "c"].map(String::from).to_vec()]);
    graph.remove("c");
    assert!(cycles(&graph).is_empty());
}

#[test]
fn every_rust_file_opens_with_a_module_doc_line() {
    let files = rust_files(&root());
    assert!(
        files.len() > 100,
        "the scan reaches the sources ({})",
        files.len()
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|file| {
            let source = fs::read_to_string(file).expect("read a source file");
            !source.starts_with("//!")
        })
        .map(|file| relative(file))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` line: {missing:#?}"
    );
}

#[test]
fn only_the_nats_crate_uses_async_nats() {
    // The load generator measures raw NATS beside the mesh, so it talks to NATS directly.
    let offenders: Vec<String> = crate_sources()
        .into_iter()
        .filter(|(name, _)| name != "nats" && name != "tests/loadgen")
        .flat_map(|(_, src)| rust_files(&src))
        .filter(|file| {
            fs::read_to_string(file)
                .expect("read a source file")
                .lines()
                .any(|line| code_of(line).contains("async_nats"))
        })
        .map(|file| relative(&file))
        .collect();
    assert!(
        offenders.is_empty(),
        "async_nats outside nats/ (go through mesh_nats): {offenders:#?}"
    );
}

#[test]
fn no_service_source_builds_json_by_hand() {
    let files: Vec<PathBuf> = crate_sources()
        .into_iter()
        .filter(|(name, _)| name.starts_with("services/"))
        .flat_map(|(_, src)| rust_files(&src))
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("social/src/handlers/membership.rs")),
        "the scan reaches the service handlers ({} files)",
        files.len()
    );
    let offenders: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let source = fs::read_to_string(file).expect("read a source file");
            json_macro_lines(&source)
                .into_iter()
                .map(move |line| format!("{}:{line}", relative(file)))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "serde_json::json! in service code (use a typed value from `contracts`): {offenders:#?}"
    );
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut found = Vec::new();
    let mut edges_seen = 0;
    for (name, src) in crate_sources() {
        let files = rust_files(&src);
        let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(module) = top_module(&src, file) else {
                continue;
            };
            let source = fs::read_to_string(file).expect("read a source file");
            let mut named = modules_named(&source, &modules);
            named.remove(&module);
            edges_seen += named.len();
            graph.entry(module).or_default().extend(named);
        }
        for cycle in cycles(&graph) {
            found.push(format!("{name}: {}", cycle.join(" <-> ")));
        }
    }
    assert!(
        edges_seen > 50,
        "the scan sees module imports ({edges_seen})"
    );
    assert!(
        found.is_empty(),
        "import cycles between modules: {found:#?}"
    );
}
