//! nats-server processes of a test's own (`MESH_NATS_SERVER_BIN`, installed by
//! `scripts/services.sh`), each with the configuration the test gives it; killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use uuid::Uuid;

use crate::harness::wait_until;

pub fn nats_server_bin() -> PathBuf {
    std::env::var_os("MESH_NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".tools/bin/nats-server"))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap().port()
}

/// A scratch directory removed with the server.
pub fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-{what}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub struct NatsServer {
    child: Child,
    dir: PathBuf,
    /// `nats://127.0.0.1:<port>` (or `tls://` when the configuration says so).
    pub url: String,
}

impl NatsServer {
    /// Starts a server with JetStream in `dir` (removed on drop) and `config` written to
    /// `dir/server.conf`; returns once it accepts TCP connections.
    pub async fn start(dir: &Path, config: &str) -> Self {
        let port = free_port();
        let conf = dir.join("server.conf");
        std::fs::write(&conf, config).expect("write server.conf");
        let log = dir.join("server.log");
        let mut child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("js"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .expect("start nats-server (MESH_NATS_SERVER_BIN)");
        wait_until("nats-server up", || {
            let exited = child.try_wait().ok().flatten();
            if let Some(status) = exited {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("nats-server exited ({status}):\n{text}");
            }
            async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            }
        })
        .await;
        Self {
            child,
            dir: dir.to_owned(),
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
