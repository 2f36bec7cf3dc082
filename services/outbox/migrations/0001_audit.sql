-- The audit log: one record per mutating request at an edge, written in batches by the outbox
-- role (redeliveries are dropped by the primary key) and read by admins, newest first.
CREATE TABLE audit.records (
    -- UUIDv7 made by the edge when it answered: ordering by id is ordering by time.
    id          uuid PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor_id    uuid,
    session_id  uuid,
    -- The operation id (`send_friend_request`), or `unmatched`.
    action      text NOT NULL,
    method      text NOT NULL,
    -- The route template, or the raw path when no route matched.
    path        text NOT NULL,
    -- `name=value` of each path parameter.
    target      text,
    status      integer NOT NULL,
    -- `ok` or the problem's error code.
    result      text NOT NULL,
    client_ip   text,
    request_id  text NOT NULL
);

-- Newest first, filtered by actor or by action; time ranges use `at`.
CREATE INDEX records_actor ON audit.records (actor_id, id DESC) WHERE actor_id IS NOT NULL;
CREATE INDEX records_action ON audit.records (action, id DESC);
CREATE INDEX records_at ON audit.records (at);
