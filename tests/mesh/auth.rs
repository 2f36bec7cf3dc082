//! Accounts and sessions end to end: register, login, tokens, refresh rotation, logout.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{PASSWORD, TestMesh, assert_problem, unique_phone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_and_read_own_profile() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let phone = unique_phone();
    let profile = c.register(&phone, "  Ann  ").await;
    assert_eq!(profile["nickname"], "Ann");
    assert_eq!(profile["phone"], phone);
    assert_eq!(profile["roles"], json!(["user"]));
    assert!(profile.get("password_hash").is_none() && profile.get("password").is_none());

    let (status, tokens) = c.post("/v1/auth/login", json!({ "phone": phone, "password": PASSWORD, "device_name": "laptop" })).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert_eq!(tokens["user_id"], profile["id"]);
    let access = tokens["access_token"].as_str().unwrap();

    let (status, me) = c.get_as("/v1/users/me", access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], profile["id"]);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_phone_and_duplicate_phone_are_refused() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let phone = unique_phone();
    c.register(&phone, "Ann").await;

    let wrong = c.post("/v1/auth/login", json!({ "phone": phone, "password": "not the password" })).await;
    assert_problem(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let unknown = c.post("/v1/auth/login", json!({ "phone": unique_phone(), "password": PASSWORD })).await;
    assert_problem(&unknown, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let garbage = c.post("/v1/auth/login", json!({ "phone": "not a phone", "password": PASSWORD })).await;
    assert_problem(&garbage, StatusCode::UNAUTHORIZED, "invalid_credentials");

    let again = c.post("/v1/auth/register", json!({ "phone": phone, "password": PASSWORD, "nickname": "Bob" })).await;
    assert_problem(&again, StatusCode::CONFLICT, "phone_taken");
    // The same number written without '+' is the same phone.
    let bare = c.post("/v1/auth/register", json!({ "phone": phone.trim_start_matches('+'), "password": PASSWORD, "nickname": "Bob" })).await;
    assert_problem(&bare, StatusCode::CONFLICT, "phone_taken");
    mesh.stop().await;
}
