-- Conversations, their gap-free message history, each user's state of a conversation, and the
-- chat outbox. User and group ids belong to the user and social services; this schema never
-- reads theirs.

-- `p:<lower user>:<higher user>` or `g:<group id>`. `last_seq` is the seq of the newest message;
-- the row is locked while a batch assigns the next ones, so seqs never repeat or skip.
CREATE TABLE chat.conversations (
    id              text PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('private', 'group')),
    last_seq        bigint NOT NULL DEFAULT 0,
    last_message_id uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chat.messages (
    conversation_id text NOT NULL REFERENCES chat.conversations (id),
    seq             bigint NOT NULL CHECK (seq > 0),
    id              uuid NOT NULL UNIQUE,
    sender_id       uuid NOT NULL,
    client_id       text NOT NULL,
    kind            text NOT NULL,
    body            text NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now(),
    recalled_at     timestamptz,
    PRIMARY KEY (conversation_id, seq)
);
-- A resend with the same client id is a duplicate forever, not only within JetStream's window.
CREATE UNIQUE INDEX messages_client_id ON chat.messages (conversation_id, sender_id, client_id);

-- One row per user and conversation they take part in. `hidden_at_seq`: hidden from the list
-- until a message newer than that seq arrives.
CREATE TABLE chat.inbox (
    user_id         uuid NOT NULL,
    conversation_id text NOT NULL REFERENCES chat.conversations (id),
    read_seq        bigint NOT NULL DEFAULT 0,
    muted           boolean NOT NULL DEFAULT false,
    pinned          boolean NOT NULL DEFAULT false,
    hidden_at_seq   bigint,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, conversation_id)
);

-- Messages a user deleted from their own view.
CREATE TABLE chat.deleted_messages (
    user_id    uuid NOT NULL,
    message_id uuid NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, message_id)
);

-- When each user was last connected (the online flag itself lives in the PRESENCE bucket).
CREATE TABLE chat.last_seen (
    user_id   uuid PRIMARY KEY,
    last_seen timestamptz NOT NULL
);

CREATE TABLE chat.outbox (
    id         uuid PRIMARY KEY,
    aggregate  uuid NOT NULL,
    event_type text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON chat.outbox (created_at) WHERE sent_at IS NULL;
