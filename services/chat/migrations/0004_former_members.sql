-- A member who left a group, was kicked, or whose group was dissolved keeps the conversation as
-- it was when they left: `left_at_seq` is the last seq they may see, `left_at` when they left
-- (what orders their list from then on). Both are NULL while the user is a member.
ALTER TABLE chat.inbox ADD COLUMN left_at_seq bigint, ADD COLUMN left_at timestamptz;

-- Messages a consumer (the ingest partition owners too) set aside live in `dead_letters`; the
-- newest first when an operator looks.
CREATE INDEX dead_letters_consumer ON chat.dead_letters (consumer, created_at DESC);
