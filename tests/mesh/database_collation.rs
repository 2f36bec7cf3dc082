//! The mesh on a Postgres whose default collation follows a language (as the official image's
//! `en_US.UTF-8` does): its migrations make every identifier that keys an index compare as
//! bytes, and chat stores, dedups and reads back there as on a "C" server.

use std::time::Duration;

use sqlx::PgPool;

use crate::chat::{Friends, friends, history};
use crate::harness::{TestMesh, fresh_database_with};
use crate::ws::Ws;

/// A database whose default collation is ICU's `en-US` (ICU ships with Postgres, so no
/// operating-system locale has to be installed for it).
const LANGUAGE_COLLATION: &str =
    "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'";

/// Text (and text array) columns that key an index in the mesh's schemas, with the name of
/// their collation.
const KEYED_TEXT_COLUMNS: &str = "\
    SELECT n.nspname || '.' || t.relname || '.' || a.attname, co.collname::text \
    FROM pg_index x \
    JOIN pg_class t ON t.oid = x.indrelid \
    JOIN pg_namespace n ON n.oid = t.relnamespace \
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY (x.indkey) \
    JOIN pg_collation co ON co.oid = a.attcollation \
    WHERE n.nspname IN ('users', 'social', 'chat', 'audit') \
      AND a.atttypid IN ('text'::regtype, 'text[]'::regtype, 'varchar'::regtype) \
    ORDER BY 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_compare_as_bytes_on_a_server_that_sorts_by_language() {
    let url = fresh_database_with(LANGUAGE_COLLATION).await;
    let db = PgPool::connect(&url).await.expect("connect");
    let (by_default, by_bytes): (bool, bool) =
        sqlx::query_as("SELECT 'a' < 'B', 'a' < 'B' COLLATE \"C\"")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(
        by_default && !by_bytes,
        "the database's default collation must order by language for this test to mean anything"
    );

    let mesh = TestMesh::spawn_on(url).await;

    let keyed: Vec<(String, String)> = sqlx::query_as(KEYED_TEXT_COLUMNS)
        .fetch_all(&db)
        .await
        .unwrap();
    for wanted in [
        "chat.conversations.id",
        "chat.messages.conversation_id",
        "chat.messages.client_id",
        "chat.inbox.conversation_id",
        "chat.usage_daily.metric",
        "social.usage_daily.metric",
        "users.accounts.phone",
        "users.accounts.roles",
        "audit.records.action",
    ] {
        assert!(
            keyed.iter().any(|(column, _)| column == wanted),
            "{wanted} keys an index: {keyed:?}"
        );
    }
    let by_language: Vec<&(String, String)> = keyed
        .iter()
        .filter(|(_, collation)| collation != "C")
        .collect();
    assert!(
        by_language.is_empty(),
        "every text key of an index compares as bytes; these follow the server's locale: {by_language:?}"
    );

    // Chat on that server: messages stored in order, a resend recognised by its client id,
    // history read back.
    let Friends {
        bob,
        conversation,
        mut ann_ws,
        ..
    } = friends(&mesh).await;
    let mut bob_ws = Ws::connect(&mesh.url, &bob.access).await;
    for (n, body) in ["Zebra", "apple", "Äpfel"].iter().enumerate() {
        let id = format!("m-{n}");
        ann_ws.send_to(&bob.user_id, &id, body).await;
        assert_eq!(ann_ws.stored(&id).await, n as i64 + 1);
    }
    ann_ws.send_to(&bob.user_id, "m-1", "apple").await;
    assert_eq!(
        ann_ws.stored("m-1").await,
        2,
        "a resend is the message stored before"
    );
    for (n, body) in ["Zebra", "apple", "Äpfel"].iter().enumerate() {
        let message = bob_ws.message(&format!("m-{n}")).await;
        assert_eq!(message["seq"], n as i64 + 1);
        assert_eq!(message["body"], *body);
    }
    let again = bob_ws
        .frames_within("message", Duration::from_millis(500))
        .await;
    assert!(
        again.is_empty(),
        "the resend was delivered again: {again:?}"
    );

    let stored = history(&mesh.client, &bob, &conversation, 0).await;
    let bodies: Vec<&str> = stored.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["Zebra", "apple", "Äpfel"]);
    mesh.stop().await;
}
