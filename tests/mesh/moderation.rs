//! Moderation through the API (issue #15): a moderator recalls another user's message (the
//! members see it recalled by moderation over WebSocket, the sender is notified), reads a
//! conversation for a report, and removes members from and dissolves other users' groups;
//! plain users are refused, and every act is in the audit log.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::chat::{history, private_id};
use crate::events::notification;
use crate::harness::{TestMesh, assert_problem, wait_until};
use crate::rbac::{root, user_with_role};
use crate::social_friends::ok;
use crate::social_groups::{create_group, join_open};
use crate::ws::Ws;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_recall_messages_and_read_reports() {
    let mesh = TestMesh::spawn_with(|s| s.chat.open_private = true).await;
    let c = &mesh.client;
    let root = root(c).await;
    let moderator = user_with_role(c, &root, "Mo", "moderator").await;
    let (_, ann) = c.user("Ann").await;
    let (_, bob) = c.user("Bob").await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    ann_ws.send_to(&bob.user_id, "m1", "something nasty").await;
    ann_ws.stored("m1").await;
    let message = bob_ws.message("m1").await;
    let conversation = private_id(&ann, &bob);
    let message_id = message["id"].as_str().unwrap();
    let recall_path =
        format!("/v1/admin/conversations/{conversation}/messages/{message_id}/recall");
    let report_path = format!("/v1/admin/conversations/{conversation}/report");

    // A plain user may do neither, not even a party of the conversation.
    assert_problem(
        &c.post_as(&recall_path, &bob.access, json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &c.post_as(&report_path, &bob.access, json!({"reason": "r"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    // The moderator reads the conversation for the report, then recalls the message.
    let page = ok(c
        .post_as(
            &report_path,
            &moderator.access,
            json!({"after_seq": 0, "reason": "report #7"}),
        )
        .await);
    assert_eq!(page["items"][0]["body"], "something nasty");
    ok(c.post_as(&recall_path, &moderator.access, json!({})).await);
    for ws in [&mut ann_ws, &mut bob_ws] {
        let recall = ws.expect_type("recall").await;
        assert_eq!(recall["message_id"], message_id);
        assert_eq!(recall["by_moderation"], true);
    }
    let told = notification(&mut ann_ws, "message_moderated").await;
    assert_eq!(told["data"]["message_id"], message_id);
    let seen = history(c, &bob, &conversation, 0).await;
    assert_eq!(seen[0]["recalled"], true);
    assert_eq!(seen[0]["moderated"], true);
    assert_eq!(seen[0]["body"], "");
    // Unknown messages and conversations.
    assert_problem(
        &c.post_as(
            &format!(
                "/v1/admin/conversations/{conversation}/messages/{}/recall",
                uuid::Uuid::now_v7()
            ),
            &moderator.access,
            json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    for action in ["moderate_recall_message", "moderate_conversation_report"] {
        wait_until(&format!("audit records of {action}"), || async {
            let (status, page) = c
                .get_as(&format!("/v1/admin/audit?action={action}"), &root.access)
                .await;
            status == StatusCode::OK
                && page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["actor_id"] == moderator.user_id.as_str() && r["result"] == "ok")
        })
        .await;
    }
    ann_ws.close().await;
    bob_ws.close().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_remove_members_and_dissolve_groups() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let root = root(c).await;
    let moderator = user_with_role(c, &root, "Mo", "moderator").await;
    let (_, cid) = c.user("Cid").await;
    let (_, ann) = c.user("Ann").await;
    let group = create_group(c, &cid, "open", 10).await;
    join_open(c, &ann, &group).await;
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut cid_ws = Ws::connect(&mesh.url, &cid.access).await;

    assert_problem(
        &c.get_as("/v1/admin/groups", &ann.access).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let listed = ok(c.get_as("/v1/admin/groups", &moderator.access).await);
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == group.as_str()),
        "{listed}"
    );
    let inspected = ok(c
        .get_as(&format!("/v1/admin/groups/{group}"), &moderator.access)
        .await);
    assert_eq!(inspected["member_count"], 2);

    let remove = |user: String| {
        let path = format!("/v1/admin/groups/{group}/members/{user}");
        let token = moderator.access.clone();
        async move { c.send(Method::DELETE, &path, Some(&token), None).await }
    };
    assert_problem(
        &remove(cid.user_id.clone()).await,
        StatusCode::CONFLICT,
        "owner_must_transfer",
    );
    ok(remove(ann.user_id.clone()).await);
    assert_eq!(
        notification(&mut ann_ws, "kicked").await["data"]["group_id"],
        group.as_str()
    );
    ok(c.send(
        Method::DELETE,
        &format!("/v1/admin/groups/{group}"),
        Some(&moderator.access),
        None,
    )
    .await);
    assert_eq!(
        notification(&mut cid_ws, "group_dissolved").await["data"]["group_id"],
        group.as_str()
    );
    assert_problem(
        &c.get_as(&format!("/v1/admin/groups/{group}"), &moderator.access)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    ann_ws.close().await;
    cid_ws.close().await;
    mesh.stop().await;
}
