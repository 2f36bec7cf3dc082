//! Every way a role can log in to NATS, each against a nats-server that demands it: token,
//! NKey seed, `.creds` file (decentralized JWT auth) and mutual TLS. The right credentials
//! connect (to a server with JetStream, as `Bus` checks); missing or wrong ones are refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_contracts::Prefix;
use mesh_nats::{Bus, ConnectError, NatsCredentials, Secret};
use nkeys::KeyPair;
use serde_json::json;

use crate::nats_server::{NatsServer, scratch_dir};

async fn connect(url: &str, credentials: &NatsCredentials) -> Result<Bus, ConnectError> {
    Bus::connect_with(
        url,
        credentials,
        Prefix::parse("creds").unwrap(),
        "creds-test",
        Duration::from_secs(3),
    )
    .await
}

/// Connects, and proves the connection is live with a request the server answers.
async fn works(url: &str, credentials: &NatsCredentials) {
    let bus = connect(url, credentials).await.expect("connect");
    let info = bus
        .discover("nobody-here", Duration::from_millis(200))
        .await
        .err();
    // No service answers, but the server does (no responders): the connection is live.
    assert!(info.is_some());
    assert!(bus.is_connected());
    bus.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_logs_in_by_flag_or_in_the_url() {
    let dir = scratch_dir("token");
    let server = NatsServer::start(&dir, "authorization { token: \"t0ken-s3cret\" }\n").await;
    let token = NatsCredentials {
        token: Some(Secret::new("t0ken-s3cret")),
        ..Default::default()
    };
    works(&server.url, &token).await;
    let in_url = server.url.replace("nats://", "nats://t0ken-s3cret@");
    works(&in_url, &NatsCredentials::default()).await;
    let wrong = NatsCredentials {
        token: Some(Secret::new("guess")),
        ..Default::default()
    };
    let err = connect(&server.url, &wrong).await.expect_err("refused");
    assert!(!err.to_string().contains("guess"), "{err}");
    assert!(
        connect(&server.url, &NatsCredentials::default())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_logs_in() {
    let user = KeyPair::new_user();
    let dir = scratch_dir("nkey");
    let config = format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    );
    let server = NatsServer::start(&dir, &config).await;
    let seed = NatsCredentials {
        nkey_seed: Some(Secret::new(user.seed().unwrap())),
        ..Default::default()
    };
    works(&server.url, &seed).await;
    let stranger = NatsCredentials {
        nkey_seed: Some(Secret::new(KeyPair::new_user().seed().unwrap())),
        ..Default::default()
    };
    assert!(connect(&server.url, &stranger).await.is_err());
}

/// A signed NATS JWT (the format `nsc` writes): header, claims, ed25519 signature.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let claims = json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": time::OffsetDateTime::now_utc().unix_timestamp(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_logs_in_to_a_decentralized_auth_server() {
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        json!({"type": "operator", "version": 2}),
    );
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "conn": -1,
        "leaf": -1, "wildcards": true,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "mesh",
        json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "edge",
        json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
    );
    // JetStream needs a system account.
    let system = KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        json!({"type": "account", "version": 2}),
    );
    let dir = scratch_dir("creds");
    let config = format!(
        "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {acc}: {account_jwt}\n  {sys}: {system_jwt}\n}}\n",
        acc = account.public_key(),
        sys = system.public_key(),
    );
    let server = NatsServer::start(&dir, &config).await;
    let creds_file = dir.join("edge.creds");
    write_creds(&creds_file, &user_jwt, &user.seed().unwrap());
    let creds = NatsCredentials {
        creds_file: Some(creds_file),
        ..Default::default()
    };
    works(&server.url, &creds).await;
    let missing = NatsCredentials {
        creds_file: Some(dir.join("absent.creds")),
        ..Default::default()
    };
    let err = connect(&server.url, &missing).await.expect_err("refused");
    assert!(err.to_string().contains("absent.creds"), "{err}");
    assert!(
        connect(&server.url, &NatsCredentials::default())
            .await
            .is_err()
    );
}

fn write_creds(path: &Path, jwt: &str, seed: &str) {
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    );
    std::fs::write(path, text).unwrap();
}

/// Runs openssl (a test-time tool like nats-server) and fails loudly.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all ECDSA P-256.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=mesh test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (name, usage, san) in [
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1"),
        ("client", "clientAuth", "subjectAltName=DNS:edge"),
    ] {
        let mut req = vec!["req", "-subj"];
        let subject = format!("/CN={name}");
        req.push(&subject);
        req.extend(ec);
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("extendedKeyUsage={usage}\n{san}\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        let pem = format!("{name}.pem");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_ca_and_a_client_certificate() {
    let dir = scratch_dir("mtls");
    make_pki(&dir);
    let path = |name: &str| dir.join(name);
    let config = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
        path("server.pem").display(),
        path("server.key").display(),
        path("ca.pem").display()
    );
    let server = NatsServer::start(&dir, &config).await;
    let tls = server.url.replace("nats://", "tls://");
    let mutual = NatsCredentials {
        tls_ca: Some(path("ca.pem")),
        tls_cert: Some(path("client.pem")),
        tls_key: Some(path("client.key")),
        ..Default::default()
    };
    works(&tls, &mutual).await;
    let no_client_cert = NatsCredentials {
        tls_ca: Some(path("ca.pem")),
        ..Default::default()
    };
    assert!(connect(&tls, &no_client_cert).await.is_err());
    assert!(
        connect(&server.url, &NatsCredentials::default())
            .await
            .is_err()
    );
}
