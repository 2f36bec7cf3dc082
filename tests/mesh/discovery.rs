//! The services announce themselves through NATS service discovery.

use std::time::Duration;

use mesh_contracts::Service;

use crate::harness::TestMesh;

/// `$SRV.INFO.<prefix>-user` names the user service and lists its operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_service_is_discoverable_with_its_endpoints() {
    let mesh = TestMesh::spawn().await;
    let prefix = mesh.settings.prefix.clone();
    let bus = mesh
        .bus_as(
            mesh_contracts::nats_permissions::NatsRole::Migrate,
            "discovery-test",
        )
        .await;
    let info = bus
        .discover(&prefix.service_name(Service::User), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(info["name"], prefix.service_name(Service::User));
    assert_eq!(info["metadata"]["prefix"], prefix.as_str());
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    for op in [
        "register",
        "login",
        "refresh",
        "logout",
        "get_me",
        "admin_set_disabled",
    ] {
        let subject = prefix.rpc(Service::User, op);
        assert!(
            subjects.contains(&subject.as_str()),
            "{subject} missing from {subjects:?}"
        );
    }
    bus.drain().await;
    mesh.stop().await;
}
