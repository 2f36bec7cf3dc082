-- Usage quotas (issue #15): a user's plan and overrides as an administrator set them, and the
-- per-day counters charged in the transaction of the effect they count.
CREATE TABLE chat.quota_settings (
    user_id    uuid PRIMARY KEY,
    plan       text NOT NULL,
    overrides  jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chat.usage_daily (
    user_id uuid NOT NULL,
    day     date NOT NULL,
    metric  text NOT NULL,
    used    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day, metric)
);

-- A message recalled by a moderator (`messages:moderate`) rather than by its sender.
ALTER TABLE chat.messages ADD COLUMN recalled_by_moderation boolean NOT NULL DEFAULT false;
