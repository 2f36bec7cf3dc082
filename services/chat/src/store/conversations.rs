//! Conversations as each user sees them: the list, read positions and personal settings.

use mesh_contracts::chat::{
    ChatMessage, ConversationId, ConversationSettings, MessageKind, ReadState,
};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::cursor::ListCursor;

/// One row of a user's conversation list.
#[derive(sqlx::FromRow)]
pub struct ListRow {
    pub id: String,
    pub last_seq: i64,
    pub updated_at: OffsetDateTime,
    pub changed_at: OffsetDateTime,
    pub read_seq: i64,
    pub muted: bool,
    pub pinned: bool,
    pub m_id: Option<Uuid>,
    pub m_sender: Option<Uuid>,
    pub m_client_id: Option<String>,
    pub m_kind: Option<String>,
    pub m_body: Option<String>,
    pub m_sent_at: Option<OffsetDateTime>,
    pub m_recalled_at: Option<OffsetDateTime>,
    pub m_moderated: Option<bool>,
    /// The reader deleted the last message from their own view.
    pub m_deleted: bool,
}

impl ListRow {
    pub fn last_message(&self) -> Option<ChatMessage> {
        Some(ChatMessage {
            id: self.m_id?,
            conversation_id: self.id.clone(),
            seq: self.last_seq,
            sender_id: self.m_sender?,
            client_id: self.m_client_id.clone()?,
            kind: self
                .m_kind
                .as_deref()
                .and_then(MessageKind::parse)
                .unwrap_or_default(),
            body: if self.m_deleted || self.m_recalled_at.is_some() {
                String::new()
            } else {
                self.m_body.clone().unwrap_or_default()
            },
            recalled: self.m_recalled_at.is_some(),
            moderated: self.m_moderated.unwrap_or(false),
            deleted: self.m_deleted,
            sent_at: self.m_sent_at?,
        })
    }

    /// The cursor of the page after this row; `None` when the stored id is no conversation id
    /// (every id is written from a `ConversationId`, so that is a broken invariant).
    pub fn cursor(&self) -> Option<ListCursor> {
        Some(ListCursor {
            pinned: self.pinned,
            updated_at: self.updated_at,
            id: ConversationId::parse(&self.id)?,
        })
    }
}

/// A page of `user`'s visible conversations: pinned first, then by newest message.
pub async fn list(
    pool: &PgPool,
    user: Uuid,
    limit: u32,
    after: Option<&ListCursor>,
    since: Option<OffsetDateTime>,
) -> sqlx::Result<Vec<ListRow>> {
    // `v` is the conversation as this user sees it: everything, or for a former member of a
    // group only what was stored before they left (`left_at_seq`, ordered by `left_at`).
    sqlx::query_as(
        "WITH v AS ( \
           SELECT i.*, \
                  LEAST(c.last_seq, COALESCE(i.left_at_seq, c.last_seq)) AS seen_seq, \
                  COALESCE(i.left_at, c.updated_at) AS seen_at \
           FROM chat.inbox i JOIN chat.conversations c ON c.id = i.conversation_id \
           WHERE i.user_id = $1) \
         SELECT v.conversation_id AS id, v.seen_seq AS last_seq, v.seen_at AS updated_at, \
                GREATEST(v.seen_at, v.updated_at) AS changed_at, \
                v.read_seq, v.muted, v.pinned, \
                m.id AS m_id, m.sender_id AS m_sender, m.client_id AS m_client_id, \
                m.kind AS m_kind, m.body AS m_body, m.sent_at AS m_sent_at, \
                m.recalled_at AS m_recalled_at, \
                m.recalled_by_moderation AS m_moderated, (d.message_id IS NOT NULL) AS m_deleted \
         FROM v \
         LEFT JOIN chat.messages m ON m.conversation_id = v.conversation_id AND m.seq = v.seen_seq \
         LEFT JOIN chat.deleted_messages d ON d.user_id = v.user_id AND d.message_id = m.id \
         WHERE v.seen_seq > 0 \
           AND (v.hidden_at_seq IS NULL OR v.seen_seq > v.hidden_at_seq) \
           AND ($2::timestamptz IS NULL OR GREATEST(v.seen_at, v.updated_at) > $2) \
           AND ($3::boolean IS NULL OR (v.pinned, v.seen_at, v.conversation_id) < ($3, $4, $5)) \
         ORDER BY v.pinned DESC, v.seen_at DESC, v.conversation_id DESC \
         LIMIT $6",
    )
    .bind(user)
    .bind(since)
    .bind(after.map(|c| c.pinned))
    .bind(after.map(|c| c.updated_at))
    .bind(after.map(|c| c.id.to_string()))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await
}

/// The newest seq of a conversation (0 when nothing was stored yet).
pub async fn last_seq(pool: &PgPool, conversation: &str) -> sqlx::Result<i64> {
    let seq: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM chat.conversations WHERE id = $1")
            .bind(conversation)
            .fetch_optional(pool)
            .await?;
    Ok(seq.unwrap_or(0))
}

/// Moves `user`'s read position forward to `seq` (never past the last message, never back).
/// Returns the state after, and whether it moved.
pub async fn mark_read(
    pool: &PgPool,
    user: Uuid,
    conversation: &str,
    seq: i64,
) -> sqlx::Result<(ReadState, bool)> {
    let mut tx = pool.begin().await?;
    let last: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM chat.conversations WHERE id = $1")
            .bind(conversation)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(last) = last else {
        return Ok((state(conversation, 0, 0), false));
    };
    let target = seq.clamp(0, last);
    let before: Option<i64> = sqlx::query_scalar(
        "SELECT read_seq FROM chat.inbox WHERE user_id = $1 AND conversation_id = $2 FOR UPDATE",
    )
    .bind(user)
    .bind(conversation)
    .fetch_optional(&mut *tx)
    .await?;
    let read: i64 = sqlx::query_scalar(
        "INSERT INTO chat.inbox (user_id, conversation_id, read_seq) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, conversation_id) DO UPDATE \
           SET read_seq = GREATEST(chat.inbox.read_seq, EXCLUDED.read_seq), \
               updated_at = CASE WHEN EXCLUDED.read_seq > chat.inbox.read_seq \
                                 THEN now() ELSE chat.inbox.updated_at END \
         RETURNING read_seq",
    )
    .bind(user)
    .bind(conversation)
    .bind(target)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((state(conversation, read, last), read > before.unwrap_or(0)))
}

fn state(conversation: &str, read_seq: i64, last_seq: i64) -> ReadState {
    ReadState {
        conversation_id: conversation.to_owned(),
        read_seq,
        last_seq,
        unread: (last_seq - read_seq).max(0),
    }
}

/// Changes `user`'s settings of a stored conversation; `None` fields stay. `None` when the
/// conversation has no message yet.
pub async fn update_settings(
    pool: &PgPool,
    user: Uuid,
    conversation: &str,
    muted: Option<bool>,
    pinned: Option<bool>,
    hidden: Option<bool>,
) -> sqlx::Result<Option<ConversationSettings>> {
    let row: Option<(bool, bool, bool)> = sqlx::query_as(
        "WITH c AS (SELECT id, last_seq FROM chat.conversations WHERE id = $2) \
         INSERT INTO chat.inbox AS i (user_id, conversation_id, muted, pinned, hidden_at_seq) \
         SELECT $1, c.id, COALESCE($3, false), COALESCE($4, false), \
                CASE WHEN $5 THEN c.last_seq END FROM c \
         ON CONFLICT (user_id, conversation_id) DO UPDATE SET \
           muted = COALESCE($3, i.muted), \
           pinned = COALESCE($4, i.pinned), \
           hidden_at_seq = CASE WHEN $5 IS NULL THEN i.hidden_at_seq \
                                WHEN $5 THEN (SELECT last_seq FROM c) ELSE NULL END, \
           updated_at = now() \
         RETURNING i.muted, i.pinned, \
           (i.hidden_at_seq IS NOT NULL AND i.hidden_at_seq >= (SELECT last_seq FROM c))",
    )
    .bind(user)
    .bind(conversation)
    .bind(muted)
    .bind(pinned)
    .bind(hidden)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(muted, pinned, hidden)| ConversationSettings {
        conversation_id: conversation.to_owned(),
        muted,
        pinned,
        hidden,
    }))
}

/// Freezes the group conversation for `user` (every member when `None`: a dissolved group) as
/// it was at `at`: they keep the messages stored until then and see nothing after.
pub async fn mark_left(
    conn: &mut sqlx::PgConnection,
    conversation: &str,
    user: Option<Uuid>,
    at: OffsetDateTime,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE chat.inbox i SET \
           left_at = $3, updated_at = now(), \
           left_at_seq = (SELECT COALESCE(max(m.seq), 0) FROM chat.messages m \
                          WHERE m.conversation_id = $1 AND m.sent_at <= $3) \
         WHERE i.conversation_id = $1 AND ($2::uuid IS NULL OR i.user_id = $2) \
           AND i.left_at_seq IS NULL",
    )
    .bind(conversation)
    .bind(user)
    .bind(at)
    .execute(conn)
    .await
    .map(drop)
}

/// `user` is a member of the group conversation again: they follow it from now on.
pub async fn rejoined(
    conn: &mut sqlx::PgConnection,
    conversation: &str,
    user: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE chat.inbox SET left_at_seq = NULL, left_at = NULL, updated_at = now() \
         WHERE conversation_id = $1 AND user_id = $2 AND left_at_seq IS NOT NULL",
    )
    .bind(conversation)
    .bind(user)
    .execute(conn)
    .await
    .map(drop)
}

/// The last seq a former member of a group conversation may see, or `None` when `user` never
/// left it (or never was in it).
pub async fn left_at_seq(
    pool: &PgPool,
    user: Uuid,
    conversation: &str,
) -> sqlx::Result<Option<i64>> {
    let seq: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT left_at_seq FROM chat.inbox WHERE user_id = $1 AND conversation_id = $2",
    )
    .bind(user)
    .bind(conversation)
    .fetch_optional(pool)
    .await?;
    Ok(seq.flatten())
}
