-- Chat's own view of social: friendships, blocks and group members, built from social's
-- events (chat never reads the social schema). Plus what every event consumer keeps: the
-- events it processed (so a redelivery has no second effect) and the ones it gave up on.

-- One row per friendship, the lower user id first.
CREATE TABLE chat.friendships (
    user_lo uuid NOT NULL,
    user_hi uuid NOT NULL,
    PRIMARY KEY (user_lo, user_hi),
    CHECK (user_lo < user_hi)
);
CREATE INDEX friendships_hi ON chat.friendships (user_hi);

CREATE TABLE chat.blocks (
    blocker_id uuid NOT NULL,
    blocked_id uuid NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);

CREATE TABLE chat.group_members (
    group_id    uuid NOT NULL,
    user_id     uuid NOT NULL,
    role        text NOT NULL,
    muted_until timestamptz,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE chat.processed_events (
    consumer     text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE chat.dead_letters (
    id         uuid PRIMARY KEY,
    consumer   text NOT NULL,
    payload    text NOT NULL,
    error      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
