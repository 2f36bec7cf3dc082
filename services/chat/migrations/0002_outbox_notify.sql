-- Wakes the outbox relay as soon as a transaction that wrote events commits (NOTIFY is
-- delivered at commit), so events leave within milliseconds instead of at the next poll.
CREATE FUNCTION chat.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chat_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON chat.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION chat.notify_outbox();
