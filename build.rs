//! Build script: records the commit the binary is built from as `MESH_GIT_COMMIT`
//! (`MESH_GIT_COMMIT` from the environment wins, e.g. in the container build; else git's HEAD).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=MESH_GIT_COMMIT");
    let commit = std::env::var("MESH_GIT_COMMIT")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            for path in ["HEAD", "logs/HEAD"] {
                if let Some(file) = git(&["rev-parse", "--git-path", path]) {
                    println!("cargo:rerun-if-changed={file}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=MESH_GIT_COMMIT={commit}");
}
