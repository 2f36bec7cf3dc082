//! JetStream's store lost while Postgres is kept: the ingest stream and the lease bucket are
//! made anew, their sequences and revisions starting again at 1, while `chat.partitions`
//! still records positions and epochs of the old ones. The chat workers notice by themselves
//! (the row names the incarnation, the streams' creation times, it refers to), reset what they
//! recorded, count it in `mesh_chat_partition_resets_total`, and store and deliver new
//! messages with conversation seqs continuing from Postgres's. An owner of the old
//! incarnation stores nothing after a reset, even with an epoch the new bucket issues again;
//! a row of the release before (no incarnation recorded) is adopted without a reset.

use mesh_contracts::nats_permissions::NatsRole;
use mesh_contracts::{Bucket, Stream};
use nats_mesh::roles;
use sqlx::PgPool;

use crate::chat::{history, private_id};
use crate::faults::PrivateNats;
use crate::fencing::{ann_and_friends, epoch_of, partition_of, test_database};
use crate::harness::{TestMesh, Tokens, poll_until, scraped_sum};
use crate::ws::Ws;

/// Messages Ann sends each friend before the loss: the old stream's positions lie well beyond
/// the few messages the new one holds when the first owners claim it.
const BEFORE: usize = 10;

/// `mesh_chat_partition_resets_total` of this test process (every in-process worker).
async fn resets(mesh: &TestMesh) -> f64 {
    let url = mesh.client.url("/metrics");
    scraped_sum(&url, "mesh_chat_partition_resets_total")
        .await
        .unwrap_or(0.0)
}

/// Ann and four friends, and `BEFORE` messages from Ann to each, all stored; then every
/// partition has a recorded position and epoch.
async fn stored_before_the_loss(mesh: &TestMesh) -> (Tokens, Vec<Tokens>) {
    let (ann, friends) = ann_and_friends(mesh).await;
    let mut ws = Ws::connect(&mesh.url, &ann.access).await;
    let count = BEFORE * friends.len();
    for i in 0..count {
        let friend = &friends[i % friends.len()];
        ws.send_to(&friend.user_id, &format!("before-{i}"), "x")
            .await;
    }
    for i in 0..count {
        ws.stored(&format!("before-{i}")).await;
    }
    let db = test_database(mesh).await;
    let partitions = i64::from(mesh.settings.chat.partitions);
    poll_until(
        "every partition claimed",
        std::time::Duration::from_secs(20),
        || async {
            let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM chat.partitions")
                .fetch_one(&db)
                .await
                .ok()?;
            (claimed == partitions).then_some(())
        },
    )
    .await;
    (ann, friends)
}

/// After the loss: new messages are stored and delivered, each conversation's seqs going on
/// from before without a gap, and every partition's record was reset.
async fn assert_recovered(mesh: &TestMesh, ann: &Tokens, friends: &[Tokens], resets_before: f64) {
    let mut ann_ws = Ws::connect(&mesh.url, &ann.access).await;
    let mut bob_ws = Ws::connect(&mesh.url, &friends[0].access).await;
    for round in 0..2 {
        for (n, friend) in friends.iter().enumerate() {
            let id = format!("after-{round}-{n}");
            ann_ws.send_to(&friend.user_id, &id, "y").await;
            let seq = ann_ws.stored(&id).await;
            assert_eq!(
                seq,
                (BEFORE + 1 + round) as i64,
                "{id}: the conversation's seqs go on from Postgres's"
            );
        }
        let delivered = bob_ws.message(&format!("after-{round}-0")).await;
        assert_eq!(delivered["seq"], BEFORE + 1 + round);
    }
    for friend in friends {
        let conversation = private_id(ann, friend);
        let seqs: Vec<i64> = history(&mesh.client, ann, &conversation, 0)
            .await
            .iter()
            .map(|message| message["seq"].as_i64().expect("a seq"))
            .collect();
        let expected: Vec<i64> = (1..=(BEFORE + 2) as i64).collect();
        assert_eq!(seqs, expected, "{conversation}: stored once each, no gap");
    }
    // Every partition had a position and epoch of the old stream and bucket.
    let partitions = f64::from(mesh.settings.chat.partitions);
    poll_until(
        "every partition's reset counted",
        std::time::Duration::from_secs(10),
        || async { (resets(mesh).await >= resets_before + partitions).then_some(()) },
    )
    .await;
}

/// The ingest stream and the lease bucket deleted under the running mesh (as the migrate login
/// can) and made again as `mesh migrate` makes them: what a JetStream that lost them looks
/// like to the chat workers, without restarting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_recovers_by_itself_when_its_stream_and_lease_bucket_are_made_anew() {
    let mesh = TestMesh::spawn().await;
    let (ann, friends) = stored_before_the_loss(&mesh).await;
    let resets_before = resets(&mesh).await;

    let admin = async_nats::jetstream::new(mesh.nats_client_as(NatsRole::Migrate).await);
    let prefix = &mesh.settings.prefix;
    admin
        .delete_stream(prefix.stream(Stream::ChatIn))
        .await
        .expect("delete the ingest stream");
    admin
        .delete_key_value(prefix.bucket(Bucket::Leases))
        .await
        .expect("delete the lease bucket");
    roles::migrate_nats(&mesh.settings)
        .await
        .expect("mesh migrate makes them again");

    assert_recovered(&mesh, &ann, &friends, resets_before).await;
    mesh.stop().await;
}

/// A NATS server rebuilt without its volumes: killed, its JetStream store deleted, started
/// again empty, and `mesh migrate` run, while the roles keep running against the same
/// Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_recovers_by_itself_when_nats_comes_back_without_its_store() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let mesh = TestMesh::spawn_with(|s| s.nats_url = url).await;
    let (ann, friends) = stored_before_the_loss(&mesh).await;
    let resets_before = resets(&mesh).await;

    nats.kill().await;
    nats.lose_store();
    nats.run().await;
    poll_until(
        "mesh migrate on the empty server",
        std::time::Duration::from_secs(30),
        || async { roles::migrate_nats(&mesh.settings).await.ok() },
    )
    .await;
    mesh.wait_ready().await;

    assert_recovered(&mesh, &ann, &friends, resets_before).await;
    mesh.stop().await;
}

/// A mesh with one message stored: who sent it to whom, the sender's socket, the test
/// database, and the conversation's partition with its recorded epoch and incarnation.
struct OneStored {
    ann: Tokens,
    bob: Tokens,
    conversation: String,
    ws: Ws,
    db: PgPool,
    partition: i32,
    epoch: i64,
    present: (String, String),
}

async fn one_stored(mesh: &TestMesh) -> OneStored {
    let (ann, mut friends) = ann_and_friends(mesh).await;
    let bob = friends.swap_remove(0);
    let conversation = private_id(&ann, &bob);
    let mut ws = Ws::connect(&mesh.url, &ann.access).await;
    ws.send_to(&bob.user_id, "first", "x").await;
    assert_eq!(ws.stored("first").await, 1);
    let db = test_database(mesh).await;
    let partition = partition_of(mesh, &conversation);
    let epoch = epoch_of(&db, partition).await;
    let present = recorded_incarnation(&db, partition).await;
    OneStored {
        ann,
        bob,
        conversation,
        ws,
        db,
        partition,
        epoch,
        present,
    }
}

/// Each partition's creation times as recorded.
async fn recorded_incarnation(db: &PgPool, partition: i32) -> (String, String) {
    sqlx::query_as(
        "SELECT stream_created::text, leases_created::text FROM chat.partitions \
         WHERE partition = $1",
    )
    .bind(partition)
    .fetch_one(db)
    .await
    .expect("read the partition's incarnation")
}

/// The partition's row reset behind its running owner's back to another stream and bucket,
/// by a claim whose lease revision equals the owner's epoch (a bucket made anew issues its
/// revisions from 1 again, so they come round): only the incarnation tells the two owners
/// apart. The owner of the old incarnation stores nothing and stops; its worker takes the
/// partition again, and that claim, finding the row of a stream that is not the present one,
/// resets it (counted) and stores the message, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_of_the_old_incarnation_stores_nothing_after_a_reset() {
    let mesh = TestMesh::spawn().await;
    let OneStored {
        ann,
        bob,
        conversation,
        mut ws,
        db,
        partition,
        epoch,
        present,
    } = one_stored(&mesh).await;
    let resets_before = resets(&mesh).await;

    sqlx::query(
        "UPDATE chat.partitions SET stream_created = stream_created + interval '1 day', \
         leases_created = leases_created + interval '1 day' WHERE partition = $1",
    )
    .bind(partition)
    .execute(&db)
    .await
    .expect("reset the partition to another incarnation");

    ws.send_to(&bob.user_id, "second", "y").await;
    assert_eq!(ws.stored("second").await, 2);
    assert!(
        epoch_of(&db, partition).await > epoch,
        "stored by the owner of the old incarnation"
    );
    assert_eq!(
        recorded_incarnation(&db, partition).await,
        present,
        "the claim after it records the present stream and bucket again"
    );
    assert!(
        resets(&mesh).await > resets_before,
        "the reset was not counted"
    );
    let stored: Vec<String> = history(&mesh.client, &ann, &conversation, 0)
        .await
        .iter()
        .map(|message| {
            message["client_id"]
                .as_str()
                .expect("a client id")
                .to_owned()
        })
        .collect();
    assert_eq!(stored, ["first", "second"], "each message stored once");
    mesh.stop().await;
}

/// A row of the release before (no incarnation recorded) whose position and epoch fit the
/// present stream and bucket is adopted at its next claim, position kept: no reset, nothing
/// read again. (Its owner, whose fence names the incarnation, is fenced out by the row that
/// names none, as by a claim of a worker of the release before during a rolling upgrade.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_of_the_release_before_is_adopted_without_a_reset() {
    let mesh = TestMesh::spawn().await;
    let OneStored {
        bob,
        mut ws,
        db,
        partition,
        epoch,
        present,
        ..
    } = one_stored(&mesh).await;
    let position: i64 =
        sqlx::query_scalar("SELECT stream_seq FROM chat.partitions WHERE partition = $1")
            .bind(partition)
            .fetch_one(&db)
            .await
            .expect("read the partition's position");
    assert!(position > 0, "the first message's position is recorded");

    sqlx::query(
        "UPDATE chat.partitions SET stream_created = NULL, leases_created = NULL \
         WHERE partition = $1",
    )
    .bind(partition)
    .execute(&db)
    .await
    .expect("forget the partition's incarnation");

    ws.send_to(&bob.user_id, "second", "y").await;
    assert_eq!(ws.stored("second").await, 2);
    assert!(epoch_of(&db, partition).await > epoch, "claimed again");
    assert_eq!(
        recorded_incarnation(&db, partition).await,
        present,
        "the present stream and bucket adopted"
    );
    // A reset would have read the stream again from its start: `first` (still in it, since a
    // row of an unknown stream purges nothing) answered `stored` a second time.
    let again: Vec<serde_json::Value> = ws
        .drain("ack", std::time::Duration::from_millis(500))
        .await
        .into_iter()
        .filter(|ack| ack["client_id"] == "first" && ack["status"] == "stored")
        .collect();
    assert!(again.is_empty(), "read again from the start: {again:?}");
    mesh.stop().await;
}
