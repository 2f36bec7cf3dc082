-- Accounts, sessions (devices) and refresh tokens of the user service, plus its outbox.
CREATE TABLE users.accounts (
    id            uuid PRIMARY KEY,
    phone         text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    nickname      text NOT NULL,
    avatar        text,
    sex           text NOT NULL DEFAULT 'unspecified',
    roles         text[] NOT NULL DEFAULT '{user}',
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users.sessions (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users.accounts (id) ON DELETE CASCADE,
    device_name  text,
    user_agent   text,
    ip           text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX sessions_active_by_user ON users.sessions (user_id) WHERE revoked_at IS NULL;

-- Every refresh token ever issued, by SHA-256 hash. A rotated token is kept so that
-- presenting it again is recognised as reuse (RFC 9700) rather than as an unknown token.
CREATE TABLE users.refresh_tokens (
    hash       bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES users.sessions (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz
);
CREATE INDEX refresh_tokens_by_session ON users.refresh_tokens (session_id);

-- Domain events written in the same transaction as the change they describe.
CREATE TABLE users.outbox (
    id         uuid PRIMARY KEY,
    aggregate  uuid NOT NULL,
    event_type text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON users.outbox (created_at) WHERE sent_at IS NULL;
