//! nats-server processes of a test's own (`MESH_NATS_SERVER_BIN`, installed by
//! `scripts/services.sh`), each with the configuration the test gives it; killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use uuid::Uuid;

/// The nats-server binary: `MESH_NATS_SERVER_BIN`, else the one `scripts/services.sh`
/// installed into `.tools/`.
pub fn nats_server_bin() -> PathBuf {
    let bin = std::env::var_os("MESH_NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/nats-server"));
    assert!(
        bin.exists(),
        "no nats-server at {} (run scripts/services.sh up)",
        bin.display()
    );
    bin
}

/// The `--ports_file_dir` arguments that make a nats-server write, once it listens, the
/// addresses it listens on into `dir` (read back by [`client_port`]).
pub fn ports_file_args(dir: &Path) -> [std::ffi::OsString; 2] {
    ["--ports_file_dir".into(), dir.as_os_str().to_owned()]
}

/// The client port of the nats-server (`nats_server_bin`) running as `pid`, started with
/// [`ports_file_args`]`(dir)`: read from the ports file it writes under its own pid once it
/// listens. A port picked beforehand and checked by connecting to it can be taken meanwhile
/// by another test's server, whose clients then look like this one's; the ports file is
/// this process's own. Panics with what `exited` says when the server exits first (its
/// port was taken), or when it does not listen within 30 s.
pub async fn client_port(pid: u32, dir: &Path, mut exited: impl FnMut() -> Option<String>) -> u16 {
    let bin = nats_server_bin();
    let name = bin.file_name().expect("a binary name").to_string_lossy();
    let file = dir.join(format!("{name}_{pid}.ports"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(why) = exited() {
            panic!("nats-server exited before it listened: {why}");
        }
        // Written in one go but not atomically: an unreadable file is read again.
        let port = std::fs::read(&file)
            .ok()
            .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .and_then(|ports| {
                let url = ports["nats"][0].as_str()?.to_owned();
                url.rsplit_once(':')?.1.parse().ok()
            });
        if let Some(port) = port {
            return port;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server did not listen within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
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
        let conf = dir.join("server.conf");
        std::fs::write(&conf, config).expect("write server.conf");
        let log = dir.join("server.log");
        let bin = nats_server_bin();
        // Port -1: the server takes a free one itself, so no other can hold it.
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(dir.join("js"))
            .args(ports_file_args(dir))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .expect("start nats-server (MESH_NATS_SERVER_BIN)");
        let pid = child.id();
        let port = client_port(pid, dir, || {
            let status = child.try_wait().ok().flatten()?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Some(format!("{status}:\n{text}"))
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
