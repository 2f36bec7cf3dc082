//! Services build what they put on the wire only from `contracts` types: no `serde_json::json!`
//! anywhere in `services/*/src`, so a renamed field cannot compile on one side and silently
//! break the other.

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|err| panic!("read {}: {err}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The 1-based lines of `source` that invoke the `json!` macro (by any path).
fn json_macro_lines(source: &str) -> Vec<usize> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split("//").next().unwrap_or_default();
            code.match_indices("json!").any(|(at, _)| {
                let before = code[..at].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            }) || code.contains("serde_json::json")
        })
        .map(|(number, _)| number + 1)
        .collect()
}

#[test]
fn the_detector_finds_the_macro_by_any_path() {
    assert_eq!(
        json_macro_lines("let a = 1;\nlet v = json!({});\nlet w = serde_json::json!([]);"),
        [2, 3]
    );
    assert_eq!(json_macro_lines("use serde_json::json;\n"), [1]);
    assert!(json_macro_lines("// json!({}) in a comment\nmy_json!(x)\n").is_empty());
}

#[test]
fn no_service_source_builds_json_by_hand() {
    let services = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("services/")
        .to_path_buf();
    let mut files = Vec::new();
    for service in fs::read_dir(&services).expect("read services/") {
        let src = service.expect("directory entry").path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
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
                .map(move |line| format!("{}:{line}", file.display()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "serde_json::json! in service code (use a typed value from `contracts`): {offenders:#?}"
    );
}
