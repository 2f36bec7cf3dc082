-- Which incarnation of JetStream's streams a partition's row refers to. `epoch` is a revision
-- of the `<P>_LEASES` bucket and `stream_seq` a sequence of the `<P>_CHAT_IN` stream; when
-- JetStream loses its store (a NATS rebuilt without its volumes) and they are made again,
-- revisions and sequences start again at 1, and a row of the old ones refused every new
-- owner as stale (a lower epoch) and would have skipped the new stream's messages up to the
-- old position. So each row records when the stream (`stream_created`) and the bucket's
-- stream (`leases_created`) it refers to were created, as JetStream reports them (set when a
-- stream is made, kept across restarts and updates, new for a stream made again).
--
-- A claim reads both from JetStream while it holds the row lock and compares
-- (`services/chat/src/domain/incarnation.rs`):
--   * the same stream and bucket: the epoch check as before (a later recorded epoch is a
--     later owner), resume after `stream_seq`;
--   * another bucket: its epoch is no revision of the current bucket, replaced without
--     comparing; another stream: `stream_seq` starts again at 0 (what JetStream acknowledged
--     before the loss is gone from NATS; what Postgres stored stays). Logged as a warning and
--     counted in `mesh_chat_partition_resets_total`;
--   * a bid whose lease was taken in a bucket that is no longer the current one is stale.
-- Storing transactions check the epoch and both creation times, so an owner of the old
-- incarnation stores nothing after a reset even if its epoch comes round again.
--
-- Existing rows get NULL in both: an unknown incarnation (the release before recorded none).
-- The first claim after the upgrade adopts the current stream and bucket, keeping the row's
-- position, when they can be the row's: its `stream_seq` is not beyond the stream's last
-- sequence and its epoch not beyond the bucket's newest revision (both only grow), and the
-- epoch check passes as before (a later recorded epoch refuses the claim, as before). A row
-- that cannot be the current stream's or bucket's (a loss before the upgrade) is treated as
-- lost and reset as above. So a deployment that upgrades without a loss keeps every position,
-- with no reset.
ALTER TABLE chat.partitions
    ADD COLUMN stream_created timestamptz,
    ADD COLUMN leases_created timestamptz,
    ADD CONSTRAINT partitions_incarnation_whole
        CHECK ((stream_created IS NULL) = (leases_created IS NULL));
