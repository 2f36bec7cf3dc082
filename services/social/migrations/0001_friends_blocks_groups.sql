-- Friend requests, friendships, blocks, groups, memberships and join requests of the social
-- service, plus its outbox. User ids refer to accounts of the user service, which this
-- schema never reads: the service checks them over NATS.

CREATE TABLE social.friend_requests (
    id         uuid PRIMARY KEY,
    from_user  uuid NOT NULL,
    to_user    uuid NOT NULL,
    message    text,
    status     text NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'accepted', 'rejected', 'cancelled')),
    created_at timestamptz NOT NULL DEFAULT now(),
    handled_at timestamptz,
    CHECK (from_user <> to_user)
);
-- At most one pending request per pair of users, whichever direction it goes.
CREATE UNIQUE INDEX friend_requests_one_pending_per_pair
    ON social.friend_requests (LEAST(from_user, to_user), GREATEST(from_user, to_user))
    WHERE status = 'pending';
CREATE INDEX friend_requests_incoming ON social.friend_requests (to_user, id);
CREATE INDEX friend_requests_outgoing ON social.friend_requests (from_user, id);

-- One row per direction: (A, B) holds A's remark for B. Both rows are written together.
CREATE TABLE social.friendships (
    user_id    uuid NOT NULL,
    friend_id  uuid NOT NULL,
    -- UUIDv7, the paging cursor.
    id         uuid NOT NULL UNIQUE,
    remark     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, friend_id),
    CHECK (user_id <> friend_id)
);
CREATE INDEX friendships_page ON social.friendships (user_id, id);

CREATE TABLE social.blocks (
    blocker_id uuid NOT NULL,
    blocked_id uuid NOT NULL,
    id         uuid NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);
CREATE INDEX blocks_page ON social.blocks (blocker_id, id);
CREATE INDEX blocks_by_blocked ON social.blocks (blocked_id);

CREATE TABLE social.groups (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    icon         text,
    announcement text,
    join_policy  text NOT NULL CHECK (join_policy IN ('open', 'approval', 'invite_only')),
    max_members  integer NOT NULL CHECK (max_members >= 2),
    -- Kept in the transaction of every join and leave, under the group row's lock.
    member_count integer NOT NULL DEFAULT 0 CHECK (member_count >= 0),
    owner_id     uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE social.group_members (
    group_id    uuid NOT NULL REFERENCES social.groups (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL,
    id          uuid NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    muted_until timestamptz,
    joined_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id)
);
CREATE UNIQUE INDEX group_members_one_owner ON social.group_members (group_id) WHERE role = 'owner';
CREATE INDEX group_members_page ON social.group_members (group_id, id);
CREATE INDEX group_members_by_user ON social.group_members (user_id, group_id);

CREATE TABLE social.group_join_requests (
    id         uuid PRIMARY KEY,
    group_id   uuid NOT NULL REFERENCES social.groups (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL,
    inviter_id uuid,
    message    text,
    status     text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    created_at timestamptz NOT NULL DEFAULT now(),
    handled_at timestamptz,
    handled_by uuid
);
CREATE UNIQUE INDEX group_join_requests_one_pending
    ON social.group_join_requests (group_id, user_id) WHERE status = 'pending';
CREATE INDEX group_join_requests_page ON social.group_join_requests (group_id, id);

-- Domain events written in the same transaction as the change they describe.
CREATE TABLE social.outbox (
    id         uuid PRIMARY KEY,
    aggregate  uuid NOT NULL,
    event_type text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON social.outbox (created_at) WHERE sent_at IS NULL;
