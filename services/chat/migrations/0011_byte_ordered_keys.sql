-- Identifiers compare as bytes, whatever the server's locale.
--
-- Text columns take the database's default collation. A server initialised with a language's
-- locale (`en_US.UTF-8`: the official Postgres image, most managed services) compares them by
-- that language's rules: every comparison in a btree goes through `strcoll`, not `memcmp`.
-- Conversation ids (`p:<uuid>:<uuid>`, 75 bytes) lead two of chat.messages's indexes, and each
-- stored message is compared into both: on 2 CPUs, on a database created with `en_US.utf8`,
-- Postgres spent 0.016-0.018 ms of CPU per stored message at the maximum before this and
-- 0.010 after, and the mesh stored a third more (bench/README.md). These columns hold machine
-- identifiers (conversation and client ids, metric and consumer names), where byte order is
-- the only order anything needs; equality does not change, so no key that is unique now
-- stops being unique. No table is rewritten, but their indexes are rebuilt under a lock that
-- holds the chat write meanwhile: about 2 s per million stored messages on 2 CPUs (JetStream
-- keeps what edges accept until it is done). The trigger that refuses renaming a
-- conversation with messages depends on `id`, so it is made again as 0008 made it.
DROP TRIGGER conversations_keep_their_messages_on_rename ON chat.conversations;
ALTER TABLE chat.conversations ALTER COLUMN id TYPE text COLLATE "C";
CREATE TRIGGER conversations_keep_their_messages_on_rename
    BEFORE UPDATE OF id ON chat.conversations
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION chat.refuse_orphaning_messages();

ALTER TABLE chat.messages
    ALTER COLUMN conversation_id TYPE text COLLATE "C",
    ALTER COLUMN client_id TYPE text COLLATE "C";
ALTER TABLE chat.inbox ALTER COLUMN conversation_id TYPE text COLLATE "C";
ALTER TABLE chat.usage_daily ALTER COLUMN metric TYPE text COLLATE "C";
ALTER TABLE chat.processed_events ALTER COLUMN consumer TYPE text COLLATE "C";
ALTER TABLE chat.dead_letters ALTER COLUMN consumer TYPE text COLLATE "C";
