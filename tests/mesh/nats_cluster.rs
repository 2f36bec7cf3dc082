//! Losing a NATS node: the mesh on a 3-node cluster (`scripts/nats-cluster.sh`, R3 streams and
//! buckets, fsync on every write) keeps every message it acknowledged `accepted` when the
//! chat ingest stream's leader is killed mid-traffic, and keeps leases and revocations working
//! when a bucket's leader is killed. The longest pause clients saw is printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mesh_contracts::nats_permissions::{NatsRole, Scope};
use mesh_contracts::{Bucket, Stream};
use mesh_nats::Bus;
use reqwest::StatusCode;
use serde_json::json;

use crate::chat::{history, private_id};
use crate::harness::{Client, TestMesh, Tokens, poll_until, wait_until};
use crate::nats_server::scratch_dir;
use crate::social_friends::befriend;

/// A cluster started by the script, in a directory and on ports of its own; stopped on drop.
struct Cluster {
    dir: PathBuf,
    base: u16,
    auth_dir: PathBuf,
}

/// Nine consecutive ports that are free right now, below Linux's ephemeral range (32768 on)
/// so that no outgoing connection takes one while a killed node is down.
fn free_port_block() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        let free = (base..base + 9).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no block of 9 free ports");
}

impl Cluster {
    fn script(&self, command: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nats-cluster.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(command)
            .env("MESH_NATS_CLUSTER_DIR", &self.dir)
            .env("MESH_NATS_CLUSTER_PORT_BASE", self.base.to_string())
            .env("MESH_NATS_AUTH_DIR", &self.auth_dir)
            .output()
            .expect("run scripts/nats-cluster.sh");
        assert!(
            out.status.success(),
            "nats-cluster.sh {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn up() -> Self {
        let dir = scratch_dir("cluster");
        let auth_dir = dir.join("auth");
        nats_mesh::nats_config::write(&auth_dir, &Scope::AnyPrefix).expect("authorization");
        let cluster = Self {
            dir,
            base: free_port_block(),
            auth_dir,
        };
        let env = cluster.script("up");
        assert!(env.contains("MESH_NATS_REPLICAS=3"), "{env}");
        cluster
    }

    fn url(&self) -> String {
        (0..3)
            .map(|i| format!("nats://127.0.0.1:{}", self.base + i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs node `name` (`n1`..`n3`), as a crash would.
    fn kill(&self, name: &str) {
        let pid = std::fs::read_to_string(self.dir.join(format!("{name}.pid"))).unwrap();
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.script("down");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `count` messages from ann to bob, each retried with the same client id until it is
/// `accepted`; calls `midway` once after `kill_after` are accepted. Returns the client ids
/// and the longest time between two acceptances (the pause clients saw).
async fn send_through(
    c: &Client,
    ann: &Tokens,
    bob: &Tokens,
    tag: &str,
    count: usize,
    kill_after: usize,
    midway: impl FnOnce(),
) -> (Vec<String>, Duration) {
    let mut midway = Some(midway);
    let mut accepted = Vec::new();
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    for i in 0..count {
        let client_id = format!("{tag}-{i}");
        poll_until(
            &format!("{client_id} accepted"),
            Duration::from_secs(30),
            || async {
                let (status, ack) = c
                    .post_as(
                        "/v1/messages",
                        &ann.access,
                        json!({"client_id": client_id, "to": bob.user_id, "body": "through"}),
                    )
                    .await;
                assert!(
                    status.is_server_error() || status == StatusCode::ACCEPTED,
                    "{status} {ack}"
                );
                (status == StatusCode::ACCEPTED && ack["status"] == "accepted").then_some(())
            },
        )
        .await;
        longest = longest.max(last.elapsed());
        last = Instant::now();
        accepted.push(client_id);
        if accepted.len() == kill_after
            && let Some(kill) = midway.take()
        {
            kill();
        }
    }
    (accepted, longest)
}

/// Waits until bob's history holds every one of `ids`, once.
async fn all_stored(c: &Client, ann: &Tokens, bob: &Tokens, ids: &[String]) {
    let conversation = private_id(ann, bob);
    let started = Instant::now();
    poll_until(
        "every accepted message stored once",
        Duration::from_secs(60),
        || async {
            let seen = history(c, bob, &conversation, 0).await;
            ids.iter()
                .all(|id| {
                    seen.iter()
                        .filter(|m| m["client_id"] == id.as_str())
                        .count()
                        == 1
                })
                .then_some(())
        },
    )
    .await;
    println!(
        "all stored {:?} after the last acceptance",
        started.elapsed()
    );
}

/// Waits until every replica of the stream (or bucket) is current again; returns its leader.
async fn healed(bus: &Bus, stream: Option<Stream>, bucket: Option<Bucket>) -> String {
    poll_until("every replica current", Duration::from_secs(30), || async {
        let state = match (stream, bucket) {
            (Some(s), _) => bus.stream_leader(s).await,
            (_, Some(b)) => bus.bucket_leader(b).await,
            _ => None,
        };
        match state {
            Some((leader, 2)) => Some(leader),
            _ => None,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_ingest_or_a_bucket_leader_loses_nothing_accepted() {
    let cluster = Cluster::up();
    let url = cluster.url();
    let logins = std::fs::read_to_string(cluster.auth_dir.join("role-credentials")).unwrap();
    let logins = mesh_nats::parse_role_passwords(&logins).unwrap();
    let mesh = TestMesh::spawn_with(move |s| {
        s.nats_url = url;
        s.nats_replicas = 3;
        s.nats_role_credentials = logins;
    })
    .await;
    let c = &mesh.client;
    let (profile, ann) = c.user("ann").await;
    let (_, bob) = c.user("bob").await;
    befriend(c, &ann, &bob).await;
    let admin = mesh.bus_as(NatsRole::Migrate, "cluster-test").await;

    // The chat ingest stream's leader dies mid-traffic.
    let leader = healed(&admin, Some(Stream::ChatIn), None).await;
    let (ingest_ids, pause) =
        send_through(c, &ann, &bob, "ingest", 30, 10, || cluster.kill(&leader)).await;
    println!("killed ingest leader {leader}: longest pause between accepted sends {pause:?}");
    all_stored(c, &ann, &bob, &ingest_ids).await;
    cluster.script("up");
    healed(&admin, Some(Stream::ChatIn), None).await;

    // The leases bucket's leader dies mid-traffic: partitions stay owned, messages stored.
    let leader = healed(&admin, None, Some(Bucket::Leases)).await;
    let (lease_ids, pause) =
        send_through(c, &ann, &bob, "lease", 30, 10, || cluster.kill(&leader)).await;
    println!("killed leases leader {leader}: longest pause between accepted sends {pause:?}");
    all_stored(c, &ann, &bob, &lease_ids).await;
    all_stored(c, &ann, &bob, &ingest_ids).await;

    // Revocations still reach the edge with a node down.
    let other = c.login(profile["phone"].as_str().unwrap()).await;
    // Like any client, retry while the bucket elects a new leader (503); a retry after a
    // logout that did land is refused (401), also fine.
    let started = Instant::now();
    poll_until(
        "logout with a node down",
        Duration::from_secs(30),
        || async {
            let (status, body) = c.post_as("/v1/auth/logout", &other.access, json!({})).await;
            assert!(
                status.is_success()
                    || status == StatusCode::UNAUTHORIZED
                    || status.is_server_error(),
                "{status} {body}"
            );
            (status.is_success() || status == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;
    println!("logout with a node down took {:?}", started.elapsed());
    wait_until("revoked token refused", || async {
        c.get_as("/v1/users/me", &other.access).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    admin.drain().await;
    mesh.stop().await;
}
