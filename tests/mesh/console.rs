//! The web console's side of the edge (issue #17): the build directory served under
//! `MESH_CONSOLE_PATH` with content types, the console's CSP and nothing from outside it; and
//! the admins' mesh health (`GET /v1/admin/health`): every service answering `$SRV.STATS`, the
//! outbox backlog and the chat partitions' owners, for enabled administrators only.

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{TestMesh, assert_problem, wait_until};

/// A console build of a test's own: an index page and one hashed asset.
fn console_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-console-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>console</title>",
    )
    .unwrap();
    std::fs::write(dir.join("assets/index-1a.js"), "export {};").unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_from_its_directory_only() {
    let dir = console_dir();
    let console = mesh_edge::ConsoleConfig::new("/console", dir.clone()).unwrap();
    let mesh = TestMesh::spawn_with(|s| s.console = Some(console)).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| http.get(format!("{}{path}", mesh.url)).send();

    let bare = get("/console").await.unwrap();
    assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers()["location"], "/console/");

    let index = get("/console/").await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(index.headers()["cache-control"], "no-cache");
    assert_eq!(index.headers()["x-frame-options"], "DENY");
    let csp = index.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        index
            .text()
            .await
            .unwrap()
            .contains("<title>console</title>")
    );

    let asset = get("/console/assets/index-1a.js").await.unwrap();
    assert_eq!(
        asset.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        asset.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );

    // Nothing outside the directory, nothing hidden, nothing missing.
    for path in [
        "/console/%2e%2e/%2e%2e/Cargo.toml",
        "/console/.hidden",
        "/console/nope.js",
    ] {
        let answer = get(path).await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let post = http
        .post(format!("{}/console/", mesh.url))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_every_service_the_outbox_backlog_and_partition_owners() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    c.register("+10000000001", "Root").await;
    let root = c.login("+10000000001").await;
    let (_, alice) = c.user("Alice").await;

    assert_problem(
        &c.get_as("/v1/admin/health", &alice.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &c.get("/v1/admin/health").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    let health = |c: &crate::harness::Client| {
        let token = root.access.clone();
        let c = c.clone();
        async move {
            let (status, body) = c.get_as("/v1/admin/health", &token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    // Chat workers take their partitions within seconds of starting.
    let partitions = mesh.settings.chat.partitions as usize;
    wait_until("every partition owned", || async {
        let body = health(c).await;
        let owners = body["partitions"].as_array().unwrap();
        owners.len() == partitions && owners.iter().all(|p| p["owner"].is_string())
    })
    .await;

    let body = health(c).await;
    let services: Vec<&Value> = body["services"].as_array().unwrap().iter().collect();
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["user", "social", "chat", "outbox"]);
    for service in &services {
        let instances = service["instances"].as_array().unwrap();
        assert_eq!(instances.len(), 1, "{service}");
        assert!(!instances[0]["endpoints"].as_array().unwrap().is_empty());
    }
    let user = &services[0]["instances"][0]["endpoints"];
    // The edge asked the user service for the callers' permissions (`get_access`) above.
    let get_access = user
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "get_access")
        .expect("get_access endpoint");
    assert!(
        get_access["num_requests"].as_u64().unwrap() >= 1,
        "{get_access}"
    );
    let schemas: Vec<&str> = body["outbox"]["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["schema"].as_str().unwrap())
        .collect();
    assert_eq!(schemas.len(), 3, "{body}");
    for schema in ["users", "social", "chat"] {
        assert!(schemas.contains(&schema), "{schema} in {schemas:?}");
    }
}
