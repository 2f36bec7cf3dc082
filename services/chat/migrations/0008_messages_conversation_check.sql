-- Every message names a conversation that exists, checked once per statement instead of once
-- per row.
--
-- The foreign key `messages.conversation_id -> conversations.id` ran a lookup of its own for
-- each stored row (`SELECT ... FOR KEY SHARE` through SPI, after the statement), on the
-- conversation rows the same statement had just moved (`last_seq`): an eighth to a fifth of
-- Postgres's CPU per stored message at full load on 2 CPUs (0.031-0.038 ms against
-- 0.026-0.031 ms with the checks below, three runs each; bench/README.md). The checks below
-- give the same answer to every writer: a statement that inserts or updates messages naming a
-- conversation that does not exist fails with `foreign_key_violation` (23503), as the foreign
-- key made it fail, and a conversation that still has messages can be neither deleted nor
-- renamed. Unlike the foreign key they take no `KEY SHARE` lock on the conversation; the one
-- writer of messages (the chat worker's storing transaction) locks and updates each
-- conversation's row in the statement that stores its messages, since the row hands out their
-- seqs, so no delete can slip between its check and its commit.
ALTER TABLE chat.messages DROP CONSTRAINT messages_conversation_id_fkey;

CREATE FUNCTION chat.refuse_messages_without_conversation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM written w
        WHERE NOT EXISTS (SELECT 1 FROM chat.conversations c WHERE c.id = w.conversation_id)
    ) THEN
        RAISE EXCEPTION 'a message names a conversation that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_need_conversations_on_insert
    AFTER INSERT ON chat.messages REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION chat.refuse_messages_without_conversation();
CREATE TRIGGER messages_need_conversations_on_update
    AFTER UPDATE ON chat.messages REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION chat.refuse_messages_without_conversation();

CREATE FUNCTION chat.refuse_orphaning_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM chat.messages m WHERE m.conversation_id = OLD.id) THEN
        RAISE EXCEPTION 'conversation % still has messages', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER conversations_keep_their_messages_on_delete
    BEFORE DELETE ON chat.conversations
    FOR EACH ROW EXECUTE FUNCTION chat.refuse_orphaning_messages();
CREATE TRIGGER conversations_keep_their_messages_on_rename
    BEFORE UPDATE OF id ON chat.conversations
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION chat.refuse_orphaning_messages();
