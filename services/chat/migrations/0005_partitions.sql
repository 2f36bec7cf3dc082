-- Who owns each ingest partition, and how far its stream is stored. `epoch` is the owner's
-- lease revision (a fencing token): a batch is stored only while its owner's epoch is still the
-- row's, checked and `stream_seq` advanced in the same transaction, so a stale owner stores
-- nothing and a new owner resumes right after the last stored stream sequence.
CREATE TABLE chat.partitions (
    partition  integer PRIMARY KEY CHECK (partition >= 0),
    epoch      bigint NOT NULL,
    stream_seq bigint NOT NULL DEFAULT 0 CHECK (stream_seq >= 0)
);
