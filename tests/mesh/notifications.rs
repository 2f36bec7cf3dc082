//! Notifications on the sockets of the users a social change concerns: a rejected friend
//! request, an ended friendship, a join request for the group's managers, a role change, a
//! mute and its end, an ownership transfer. A user's notifications arrive in event order, so a
//! later one proves an earlier one was never sent.

use serde_json::{Value, json};

use crate::events::notification;
use crate::harness::{Client, TestMesh, Tokens};
use crate::social_friends::{befriend, delete_as, ok, send_request};
use crate::social_groups::{create_group, invite, join, join_open, mute, set_role, transfer};
use crate::ws::Ws;

/// Waits for the `barrier` notification and asserts that no `unwanted` one came before it.
async fn none_before(ws: &mut Ws, unwanted: &str, barrier: &str) {
    let first = ws
        .expect(barrier, |f| {
            f["type"] == "notification" && (f["kind"] == unwanted || f["kind"] == barrier)
        })
        .await;
    assert_eq!(first["kind"], barrier, "{first}");
}

/// A user with an open socket.
async fn online(mesh: &TestMesh, name: &str) -> (Tokens, Ws) {
    let (_, user) = mesh.client.user(name).await;
    let ws = Ws::connect(&mesh.url, &user.access).await;
    (user, ws)
}

/// Friends `a` and `b`, with the notifications of becoming friends consumed.
async fn friends(c: &Client, a: &mut (Tokens, Ws), b: &mut (Tokens, Ws)) {
    befriend(c, &a.0, &b.0).await;
    notification(&mut b.1, "friend_request_received").await;
    notification(&mut a.1, "friend_request_accepted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_friend_request_reaches_its_sender() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (ann, mut ann_ws) = online(&mesh, "ann").await;
    let (_, bob) = c.user("bob").await;
    let request = send_request(c, &ann, &bob, "hi").await;
    let id = request["id"].as_str().unwrap();
    ok(c.post_as(
        &format!("/v1/friend-requests/{id}/reject"),
        &bob.access,
        json!({}),
    )
    .await);
    let rejected = notification(&mut ann_ws, "friend_request_rejected").await;
    assert_eq!(rejected["data"]["request"]["id"], id);
    assert_eq!(rejected["data"]["request"]["status"], "rejected");
    assert_eq!(
        rejected["data"]["request"]["to_user_id"],
        bob.user_id.as_str()
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_friendship_reaches_the_other_user_only() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let mut ann = online(&mesh, "ann").await;
    let mut bob = online(&mesh, "bob").await;
    let mut cal = online(&mesh, "cal").await;
    friends(c, &mut ann, &mut bob).await;
    friends(c, &mut ann, &mut cal).await;

    // Bob removes Ann: Ann learns who, Bob is not told about his own act.
    ok(delete_as(c, &format!("/v1/friends/{}", ann.0.user_id), &bob.0.access).await);
    let unfriended = notification(&mut ann.1, "unfriended").await;
    assert_eq!(unfriended["data"], json!({ "user_id": bob.0.user_id }));
    send_request(c, &ann.0, &bob.0, "again?").await;
    none_before(&mut bob.1, "unfriended", "friend_request_received").await;

    // A block ends a friendship as well, and says no more than that.
    let (status, body) = c
        .post_as(
            &format!("/v1/blocks/{}", ann.0.user_id),
            &cal.0.access,
            json!({}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let unfriended = notification(&mut ann.1, "unfriended").await;
    assert_eq!(unfriended["data"], json!({ "user_id": cal.0.user_id }));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_request_reaches_the_owner_and_admins_only() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (ann, mut ann_ws) = online(&mesh, "ann").await;
    let (adm, mut adm_ws) = online(&mesh, "adm").await;
    let (mem, mut mem_ws) = online(&mesh, "mem").await;
    let (_, out) = c.user("out").await;
    let (inv, mut inv_ws) = online(&mesh, "inv").await;
    let group = create_group(c, &ann, "approval", 10).await;
    for who in [&adm, &mem] {
        let reply = ok(invite(c, &ann, &group, who).await);
        assert_eq!(reply["outcome"], "joined", "{reply}");
    }
    ok(set_role(c, &ann, &group, &adm, "admin").await);
    let promoted = notification(&mut adm_ws, "role_changed").await;
    assert_eq!(
        promoted["data"],
        json!({ "group_id": group, "role": "admin" })
    );

    // A user asks to join; a plain member invites another, which the managers decide too.
    let reply = ok(join(c, &out, &group).await);
    assert_eq!(reply["outcome"], "pending", "{reply}");
    let reply = ok(invite(c, &mem, &group, &inv).await);
    assert_eq!(reply["outcome"], "pending", "{reply}");
    let invitation = notification(&mut inv_ws, "group_invitation").await;
    assert_eq!(
        invitation["data"]["request"]["inviter_id"],
        mem.user_id.as_str()
    );
    for ws in [&mut ann_ws, &mut adm_ws] {
        let asked = notification(ws, "join_request_received").await;
        assert_eq!(asked["data"]["request"]["group_id"], group.as_str());
        assert_eq!(asked["data"]["request"]["user_id"], out.user_id.as_str());
        assert_eq!(asked["data"]["request"]["status"], "pending");
        let invited = notification(ws, "join_request_received").await;
        assert_eq!(invited["data"]["request"]["user_id"], inv.user_id.as_str());
        assert_eq!(
            invited["data"]["request"]["inviter_id"],
            mem.user_id.as_str()
        );
    }
    ok(mute(
        c,
        &adm,
        &group,
        &mem,
        json!({ "muted": true, "duration_secs": 60 }),
    )
    .await);
    none_before(&mut mem_ws, "join_request_received", "muted").await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_and_mutes_reach_the_member() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (_, ann) = c.user("ann").await;
    let (bob, mut bob_ws) = online(&mesh, "bob").await;
    let group = create_group(c, &ann, "open", 10).await;
    join_open(c, &bob, &group).await;

    for role in ["admin", "member"] {
        ok(set_role(c, &ann, &group, &bob, role).await);
        let changed = notification(&mut bob_ws, "role_changed").await;
        assert_eq!(changed["data"], json!({ "group_id": group, "role": role }));
    }
    let member = ok(mute(
        c,
        &ann,
        &group,
        &bob,
        json!({ "muted": true, "duration_secs": 3600 }),
    )
    .await);
    let muted = notification(&mut bob_ws, "muted").await;
    assert_eq!(muted["data"]["group_id"], group.as_str());
    assert_eq!(muted["data"]["muted_until"], member["muted_until"]);
    assert!(muted["data"]["muted_until"].is_string(), "{muted}");
    ok(mute(c, &ann, &group, &bob, json!({ "muted": false })).await);
    let unmuted = notification(&mut bob_ws, "unmuted").await;
    assert_eq!(unmuted["data"], json!({ "group_id": group }));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ownership_transfer_reaches_the_old_and_the_new_owner() {
    let mesh = TestMesh::spawn().await;
    let c = &mesh.client;
    let (ann, mut ann_ws) = online(&mesh, "ann").await;
    let (bob, mut bob_ws) = online(&mesh, "bob").await;
    let (cal, mut cal_ws) = online(&mesh, "cal").await;
    let group = create_group(c, &ann, "open", 10).await;
    join_open(c, &bob, &group).await;
    join_open(c, &cal, &group).await;
    ok(transfer(c, &ann, &group, &bob).await);
    let expected: Value = json!({ "group_id": group, "from": ann.user_id, "to": bob.user_id });
    for ws in [&mut ann_ws, &mut bob_ws] {
        let moved = notification(ws, "ownership_transferred").await;
        assert_eq!(moved["data"], expected);
    }
    // Other members are not told; the next notification Cal receives is a later one.
    ok(mute(
        c,
        &bob,
        &group,
        &cal,
        json!({ "muted": true, "duration_secs": 60 }),
    )
    .await);
    none_before(&mut cal_ws, "ownership_transferred", "muted").await;
    mesh.stop().await;
}
