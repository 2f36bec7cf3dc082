-- The relay publishes the outbox in `seq` order, the order rows were inserted. For the events
-- of one aggregate that is the order their transactions committed: `seq` is drawn when the
-- row is inserted, and a writer inserts an aggregate's event only while it holds that
-- aggregate's lock, which it keeps until its commit. `created_at` (`now()`: when the writing
-- transaction began, the envelope's `occurred_at`) is no such order: a transaction that began
-- first may take the lock, and commit, last. Ordered by it, a kick that began before a join
-- but committed after it was published first, and chat's projection kept the kicked member.
--
-- Rows already here are numbered in the order the relay used for them (`created_at`, `id`),
-- so unsent ones still go out as before; rows inserted from now on follow them. The table is
-- locked for the whole migration, so no row is inserted between the numbering and the
-- identity taking over.
ALTER TABLE social.outbox ADD COLUMN seq bigint;
UPDATE social.outbox o SET seq = numbered.seq
FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS seq FROM social.outbox) numbered
WHERE o.id = numbered.id;
ALTER TABLE social.outbox ALTER COLUMN seq SET NOT NULL;
ALTER TABLE social.outbox ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('social.outbox', 'seq'), coalesce(max(seq), 0) + 1, false)
FROM social.outbox;

-- The relay's query: unsent rows by `seq`.
DROP INDEX social.outbox_unsent;
CREATE INDEX outbox_unsent ON social.outbox (seq) WHERE sent_at IS NULL;
