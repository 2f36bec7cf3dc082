//! Messages: storing a batch with gap-free seqs in one transaction, history, recall and
//! delete-for-me.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use mesh_contracts::chat::{ChatMessage, ConversationId, MessageKind};
use mesh_observability::metrics::CHAT_STORE_RETAKES;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::partitions::{self, Advance, AllFenced};
use crate::domain::batch::{self, Slot};
use crate::lately::Lately;

/// A message about to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation: ConversationId,
    pub sender: Uuid,
    pub client_id: String,
    pub kind: MessageKind,
    pub body: String,
}

/// What storing one message of a batch did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Stored now.
    Stored(ChatMessage),
    /// A resend of a message stored earlier (this one, as it was stored).
    Duplicate(ChatMessage),
    /// Not stored: the sender's daily message quota is used up.
    OverQuota,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    conversation_id: String,
    seq: i64,
    id: Uuid,
    sender_id: Uuid,
    client_id: String,
    kind: String,
    body: String,
    sent_at: OffsetDateTime,
    recalled_at: Option<OffsetDateTime>,
    recalled_by_moderation: bool,
    #[sqlx(default)]
    deleted: bool,
}

impl From<MessageRow> for ChatMessage {
    fn from(row: MessageRow) -> Self {
        let hidden = row.recalled_at.is_some() || row.deleted;
        ChatMessage {
            id: row.id,
            conversation_id: row.conversation_id,
            seq: row.seq,
            sender_id: row.sender_id,
            client_id: row.client_id,
            kind: MessageKind::parse(&row.kind).unwrap_or_default(),
            body: if hidden { String::new() } else { row.body },
            recalled: row.recalled_at.is_some(),
            moderated: row.recalled_by_moderation,
            deleted: row.deleted,
            sent_at: row.sent_at,
        }
    }
}

const COLUMNS: &str = "m.conversation_id, m.seq, m.id, m.sender_id, m.client_id, m.kind, m.body, \
                       m.sent_at, m.recalled_at, m.recalled_by_moderation";

fn kind_of(conversation: &ConversationId) -> &'static str {
    match conversation {
        ConversationId::Private(..) => "private",
        ConversationId::Group(_) => "group",
    }
}

/// The storing transaction of the chat ingest: stores a round's messages (the batches of one
/// or more partitions) only while every fence of `advances` is still its partition's current
/// owner (checked first, under the partition rows' locks, so a stale owner stores nothing) and
/// records each partition's stored stream sequence in the same commit. Resends are recognised
/// (also long after JetStream's duplicate window), the rest get each conversation's next seqs
/// in batch order. `members` lists, per conversation, users whose inbox row must exist (group
/// rosters the caller has not synced yet); the two users of a new private conversation get
/// theirs automatically. Every wait inside is bounded (`partitions::begin_bounded`).
///
/// The statements are few and the same whatever the batch holds: open, fence, lock the
/// conversations, charge the quota (one; two when a charge does not fit), write, commit (plus
/// inbox rows when a conversation is new or a roster unsynced). A round is first stored
/// assuming it holds no resend of a message stored before, which is nearly always so: should
/// the write find one, or the quota refuse anything (a resend must be neither charged nor
/// refused), that transaction is rolled back and the round stored again after looking its
/// resends up (one statement more), as every round is for a while after
/// (`GIVEN_UP`).
pub async fn store_batch(
    pool: &PgPool,
    advances: &[Advance],
    messages: &[NewMessage],
    members: &HashMap<ConversationId, Vec<Uuid>>,
) -> sqlx::Result<AllFenced<Vec<Outcome>>> {
    match store_batch_if(pool, advances, messages, members, &mut Unconditional).await? {
        Ok(done) => Ok(done),
        Err(never) => match never {},
    }
}

/// What a storing transaction waits for once it has written, before it commits: while it
/// waits, whatever decides whether it may commit runs beside it (`ingest::ahead`).
pub trait Confirm {
    /// Why the transaction may not commit.
    type Withheld;

    /// `Ok` when the transaction may commit; asked again if the round is stored again, so an
    /// answer once known is kept.
    fn confirm(&mut self) -> impl Future<Output = Result<(), Self::Withheld>> + Send;
}

/// Nothing to wait for: the transaction commits as soon as it has written.
pub struct Unconditional;

impl Confirm for Unconditional {
    type Withheld = Infallible;

    async fn confirm(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// `store_batch` that commits only once `confirm` says it may; when it may not, the
/// transaction is rolled back (nothing stored, charged or recorded) and `Err` says why.
pub async fn store_batch_if<C>(
    pool: &PgPool,
    advances: &[Advance],
    messages: &[NewMessage],
    members: &HashMap<ConversationId, Vec<Uuid>>,
    confirm: &mut C,
) -> sqlx::Result<Result<AllFenced<Vec<Outcome>>, C::Withheld>>
where
    C: Confirm + Send,
    C::Withheld: Send,
{
    let round = RoundKeys::of(messages);
    let mut resends = Resends::first();
    loop {
        match attempt(pool, advances, messages, members, &round, resends, confirm).await? {
            Attempted::Done(done) => return Ok(Ok(done)),
            Attempted::Withheld(why) => return Ok(Err(why)),
            Attempted::GivenUp(why) => {
                CHAT_STORE_RETAKES.with_label_values(&[why.label()]).inc();
                Resends::note_given_up();
                resends = Resends::LookedUp;
            }
        }
    }
}

/// How long after an attempt was given up rounds look their resends up from the start: a
/// client resending old messages on purpose (or a sender at their quota) then costs about one
/// wasted attempt in this time (one per chain of rounds at most), not one every round, and
/// the rounds in between cost what every round did before rounds assumed no resend.
static GIVEN_UP: Lately = Lately::new(Duration::from_secs(1));

/// Whether a storing attempt looks for resends of messages stored before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resends {
    /// Assumed absent: nothing is looked up, and the attempt is given up when that was wrong.
    Assumed,
    /// Looked up before seqs are handed out and the quota is charged.
    LookedUp,
}

impl Resends {
    /// How a round's first attempt treats resends: assumed absent, unless an attempt was given
    /// up lately.
    fn first() -> Self {
        if GIVEN_UP.holds() {
            Self::LookedUp
        } else {
            Self::Assumed
        }
    }

    /// Notes that an attempt assuming no resend was given up.
    fn note_given_up() {
        GIVEN_UP.note();
    }
}

/// What one storing attempt came to.
enum Attempted<W> {
    Done(AllFenced<Vec<Outcome>>),
    /// A resend was assumed absent and may not be: nothing took effect.
    GivenUp(GaveUp),
    /// The confirmation was withheld: nothing took effect.
    Withheld(W),
}

/// Why an attempt that assumed no resend was given up.
#[derive(Debug, Clone, Copy)]
enum GaveUp {
    /// The write found a message's row already there.
    Resend,
    /// The quota refused a message, which may be a resend.
    Quota,
}

impl GaveUp {
    fn label(self) -> &'static str {
        match self {
            Self::Resend => "resend",
            Self::Quota => "quota",
        }
    }
}

/// A round's conversations, as text and in id order without repeats, and each message's
/// conversation as text.
struct RoundKeys {
    texts: Vec<String>,
    conversations: Vec<(String, ConversationId)>,
}

impl RoundKeys {
    fn of(messages: &[NewMessage]) -> Self {
        let texts: Vec<String> = messages
            .iter()
            .map(|m| m.conversation.to_string())
            .collect();
        let mut conversations: Vec<(String, ConversationId)> = texts
            .iter()
            .cloned()
            .zip(messages.iter().map(|m| m.conversation))
            .collect();
        conversations.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        conversations.dedup_by(|a, b| a.0 == b.0);
        Self {
            texts,
            conversations,
        }
    }
}

/// One try at storing the round, in one transaction, with its resends assumed absent or
/// looked up; committed once `confirm` says so.
async fn attempt<C: Confirm>(
    pool: &PgPool,
    advances: &[Advance],
    messages: &[NewMessage],
    members: &HashMap<ConversationId, Vec<Uuid>>,
    round: &RoundKeys,
    resends: Resends,
    confirm: &mut C,
) -> sqlx::Result<Attempted<C::Withheld>> {
    let mut tx = partitions::begin_bounded(pool).await?;
    let stale = partitions::advance_all(&mut tx, advances).await?;
    if !stale.is_empty() {
        return Ok(Attempted::Done(AllFenced::Stale(stale)));
    }
    let mut last_seq = open_conversations(&mut tx, &round.conversations).await?;
    let fresh: HashSet<String> = last_seq
        .iter()
        .filter(|(_, seq)| **seq == 0)
        .map(|(id, _)| id.clone())
        .collect();

    let existing = match resends {
        Resends::Assumed => HashMap::new(),
        Resends::LookedUp => already_stored(&mut tx, &round.texts, messages).await?,
    };
    let keys: Vec<batch::DedupKey> = round
        .texts
        .iter()
        .zip(messages)
        .map(|(c, m)| (c.as_str(), m.sender, m.client_id.as_str()))
        .collect();
    let is_stored =
        |key: &batch::DedupKey| existing.contains_key(&(key.0.to_owned(), key.1, key.2.to_owned()));
    let slots = super::usage::plan_within_quota(&mut tx, &keys, is_stored, &mut last_seq).await?;
    if resends == Resends::Assumed && slots.iter().any(Option::is_none) {
        tx.rollback().await?;
        return Ok(Attempted::GivenUp(GaveUp::Quota));
    }

    let now = stored_instant(OffsetDateTime::now_utc());
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(messages.len());
    for (index, slot) in slots.iter().enumerate() {
        let message = &messages[index];
        let outcome = match *slot {
            None => Outcome::OverQuota,
            Some(Slot::New { seq }) => Outcome::Stored(ChatMessage {
                id: Uuid::now_v7(),
                conversation_id: round.texts[index].clone(),
                seq,
                sender_id: message.sender,
                client_id: message.client_id.clone(),
                kind: message.kind,
                body: message.body.clone(),
                recalled: false,
                moderated: false,
                deleted: false,
                sent_at: now,
            }),
            Some(Slot::Stored) => Outcome::Duplicate(
                existing[&(
                    round.texts[index].clone(),
                    message.sender,
                    message.client_id.clone(),
                )]
                    .clone(),
            ),
            Some(Slot::SameAs(first)) => match &outcomes[first] {
                Outcome::Stored(m) | Outcome::Duplicate(m) => Outcome::Duplicate(m.clone()),
                Outcome::OverQuota => Outcome::OverQuota,
            },
        };
        outcomes.push(outcome);
    }
    let new_rows: Vec<&ChatMessage> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Stored(m) => Some(m),
            _ => None,
        })
        .collect();
    ensure_inbox(&mut tx, &round.conversations, &fresh, members).await?;
    if !new_rows.is_empty() {
        match write_rows(&mut tx, &new_rows).await {
            Ok(()) => {}
            Err(err) if resends == Resends::Assumed && is_resend(&err) => {
                tx.rollback().await?;
                return Ok(Attempted::GivenUp(GaveUp::Resend));
            }
            Err(err) => return Err(err),
        }
    }
    if let Err(why) = confirm.confirm().await {
        tx.rollback().await?;
        return Ok(Attempted::Withheld(why));
    }
    tx.commit().await?;
    Ok(Attempted::Done(AllFenced::Current(outcomes)))
}

/// Creates the round's conversations that are missing and locks them in id order, in one
/// statement (so two owners of an overlapping batch, in a takeover race, never deadlock and
/// never hand out the same seq): each one's last seq.
async fn open_conversations(
    conn: &mut PgConnection,
    conversations: &[(String, ConversationId)],
) -> sqlx::Result<HashMap<String, i64>> {
    let ids: Vec<&str> = conversations.iter().map(|c| c.0.as_str()).collect();
    let kinds: Vec<&str> = conversations.iter().map(|c| kind_of(&c.1)).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO chat.conversations AS c (id, kind) \
         SELECT * FROM UNNEST($1::text[], $2::text[]) AS u(id, kind) ORDER BY u.id \
         ON CONFLICT (id) DO UPDATE SET kind = c.kind \
         RETURNING c.id, c.last_seq",
    )
    .bind(&ids)
    .bind(&kinds)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// `at` as Postgres keeps it (microseconds), so a pushed message and the stored row carry the
/// same `sent_at`.
fn stored_instant(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

type StoredKey = (String, Uuid, String);

async fn already_stored(
    conn: &mut PgConnection,
    texts: &[String],
    messages: &[NewMessage],
) -> sqlx::Result<HashMap<StoredKey, ChatMessage>> {
    let senders: Vec<Uuid> = messages.iter().map(|m| m.sender).collect();
    let client_ids: Vec<&str> = messages.iter().map(|m| m.client_id.as_str()).collect();
    let rows: Vec<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chat.messages m \
         JOIN UNNEST($1::text[], $2::uuid[], $3::text[]) AS k(c, s, cl) \
           ON m.conversation_id = k.c AND m.sender_id = k.s AND m.client_id = k.cl"
    )))
    .bind(texts)
    .bind(&senders)
    .bind(&client_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let key = (
                row.conversation_id.clone(),
                row.sender_id,
                row.client_id.clone(),
            );
            (key, ChatMessage::from(row))
        })
        .collect())
}

/// Writes the new messages in one statement: the rows themselves, each conversation's last
/// seq and message (its newest stored one), and each sender's read position, moved to the
/// newest seq they stored in each conversation (a sender has read their own messages; never
/// moved back). Inbox rows a batch creates are written before this, since one statement may
/// not touch a row twice. A message whose row is already there (a resend) fails it
/// (`is_resend`).
async fn write_rows(conn: &mut PgConnection, rows: &[&ChatMessage]) -> sqlx::Result<()> {
    let conversation: Vec<&str> = rows.iter().map(|m| m.conversation_id.as_str()).collect();
    let seq: Vec<i64> = rows.iter().map(|m| m.seq).collect();
    let id: Vec<Uuid> = rows.iter().map(|m| m.id).collect();
    let sender: Vec<Uuid> = rows.iter().map(|m| m.sender_id).collect();
    let client: Vec<&str> = rows.iter().map(|m| m.client_id.as_str()).collect();
    let kind: Vec<&str> = rows.iter().map(|m| m.kind.as_str()).collect();
    let body: Vec<&str> = rows.iter().map(|m| m.body.as_str()).collect();
    let sent: Vec<OffsetDateTime> = rows.iter().map(|m| m.sent_at).collect();
    sqlx::query(
        "WITH new AS ( \
           SELECT * FROM UNNEST($1::text[], $2::int8[], $3::uuid[], $4::uuid[], $5::text[], \
                                $6::text[], $7::text[], $8::timestamptz[]) \
             AS n(conversation_id, seq, id, sender_id, client_id, kind, body, sent_at)), \
         stored AS ( \
           INSERT INTO chat.messages \
             (conversation_id, seq, id, sender_id, client_id, kind, body, sent_at) \
           SELECT * FROM new), \
         newest AS ( \
           UPDATE chat.conversations c \
           SET last_seq = l.seq, last_message_id = l.id, updated_at = l.sent_at \
           FROM (SELECT DISTINCT ON (conversation_id) conversation_id, seq, id, sent_at \
                 FROM new ORDER BY conversation_id, seq DESC) AS l \
           WHERE c.id = l.conversation_id) \
         INSERT INTO chat.inbox (user_id, conversation_id, read_seq) \
         SELECT sender_id, conversation_id, max(seq) FROM new \
         GROUP BY sender_id, conversation_id ORDER BY sender_id, conversation_id \
         ON CONFLICT (user_id, conversation_id) DO UPDATE \
           SET read_seq = GREATEST(chat.inbox.read_seq, EXCLUDED.read_seq)",
    )
    .bind(&conversation)
    .bind(&seq)
    .bind(&id)
    .bind(&sender)
    .bind(&client)
    .bind(&kind)
    .bind(&body)
    .bind(&sent)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether `err` is a message's row found already there: its sender's client id is taken in
/// its conversation (`messages_client_id`).
fn is_resend(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.constraint() == Some("messages_client_id"))
}

/// Inbox rows: both users of a conversation created by this batch, and the group members the
/// caller asked for.
async fn ensure_inbox(
    conn: &mut PgConnection,
    conversations: &[(String, ConversationId)],
    fresh: &HashSet<String>,
    members: &HashMap<ConversationId, Vec<Uuid>>,
) -> sqlx::Result<()> {
    let mut users: Vec<Uuid> = Vec::new();
    let mut convs: Vec<&str> = Vec::new();
    for (text, id) in conversations {
        if let ConversationId::Private(a, b) = id
            && fresh.contains(text)
        {
            users.extend([*a, *b]);
            convs.extend([text.as_str(), text.as_str()]);
        }
        if let Some(list) = members.get(id) {
            users.extend(list);
            convs.extend(std::iter::repeat_n(text.as_str(), list.len()));
        }
    }
    if users.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO chat.inbox (user_id, conversation_id) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(&users)
    .bind(&convs)
    .execute(conn)
    .await?;
    Ok(())
}

/// Which way to read history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Seqs greater than the bound, oldest first.
    After(i64),
    /// Seqs lower than the bound, newest first.
    Before(i64),
}

/// Up to `limit` messages of a conversation as `reader` sees them, none past seq `upto`, plus
/// whether more follow.
pub async fn history(
    pool: &PgPool,
    conversation: &str,
    reader: Uuid,
    direction: Direction,
    limit: u32,
    upto: i64,
) -> sqlx::Result<(Vec<ChatMessage>, bool)> {
    let (condition, order, bound) = match direction {
        Direction::After(seq) => ("m.seq > $2", "ASC", seq),
        Direction::Before(seq) => ("m.seq < $2", "DESC", seq),
    };
    let mut rows: Vec<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, (d.message_id IS NOT NULL) AS deleted FROM chat.messages m \
         LEFT JOIN chat.deleted_messages d ON d.user_id = $3 AND d.message_id = m.id \
         WHERE m.conversation_id = $1 AND {condition} AND m.seq <= $5 \
         ORDER BY m.seq {order} LIMIT $4"
    )))
    .bind(conversation)
    .bind(bound)
    .bind(reader)
    .bind(i64::from(limit) + 1)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok((rows.into_iter().map(ChatMessage::from).collect(), more))
}

/// One message of a conversation.
pub async fn get(pool: &PgPool, conversation: &str, id: Uuid) -> sqlx::Result<Option<ChatMessage>> {
    let row: Option<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chat.messages m WHERE m.conversation_id = $1 AND m.id = $2"
    )))
    .bind(conversation)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(ChatMessage::from))
}

/// A sender's message by the client id they gave it.
pub async fn by_client_id(
    pool: &PgPool,
    conversation: &str,
    sender: Uuid,
    client_id: &str,
) -> sqlx::Result<Option<ChatMessage>> {
    let row: Option<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chat.messages m \
         WHERE m.conversation_id = $1 AND m.sender_id = $2 AND m.client_id = $3"
    )))
    .bind(conversation)
    .bind(sender)
    .bind(client_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(ChatMessage::from))
}

/// Marks a message recalled and drops its body; false when it already was.
pub async fn recall(pool: &PgPool, id: Uuid, by_moderation: bool) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE chat.messages SET recalled_at = now(), body = '', recalled_by_moderation = $2 \
         WHERE id = $1 AND recalled_at IS NULL",
    )
    .bind(id)
    .bind(by_moderation)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Hides a message from `user`'s own view (and marks their conversation changed, so a client
/// syncing the list with `since` sees the new preview).
pub async fn delete_for(
    pool: &PgPool,
    user: Uuid,
    conversation: &str,
    id: Uuid,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO chat.deleted_messages (user_id, message_id) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(user)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE chat.inbox SET updated_at = now() WHERE user_id = $1 AND conversation_id = $2",
    )
    .bind(user)
    .bind(conversation)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
