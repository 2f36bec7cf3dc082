//! `init` caps the `log` facade at `RUST_LOG`'s level, so that records of crates logging
//! through `log` (tungstenite writes one per WebSocket frame) stop before any filter runs.
//! `init` installs a process-wide subscriber and reads `RUST_LOG` from the environment, so
//! each check runs in a child process of this test binary with an environment of its own.

use std::process::Command;

/// Set in the child: the `log` level it must find after `init`.
const EXPECTED: &str = "MESH_LOG_CAP_EXPECTED";

#[test]
fn init_caps_the_log_facade_at_the_rust_log_level() {
    if let Ok(expected) = std::env::var(EXPECTED) {
        let _guard = mesh_observability::init("log-cap-test", "test", &[]);
        assert_eq!(log::max_level().to_string(), expected);
        return;
    }
    // Without the cap the facade would stay at TRACE: the statement layer asks for it.
    for (rust_log, expected) in [
        ("warn", "WARN"),
        ("info", "INFO"),
        ("info,mesh_chat=debug", "DEBUG"),
        ("off", "OFF"),
    ] {
        let child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "init_caps_the_log_facade_at_the_rust_log_level",
                "--exact",
                "--nocapture",
            ])
            .env("RUST_LOG", rust_log)
            .env(EXPECTED, expected)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&child.stdout);
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert!(
            child.status.success() && stdout.contains("1 passed"),
            "RUST_LOG={rust_log}: the child found another level\n{stdout}\n{stderr}"
        );
    }
}
