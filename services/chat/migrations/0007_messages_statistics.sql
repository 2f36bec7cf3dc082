-- chat.messages is an append-only log read only through its unique keys ((conversation_id, seq),
-- (conversation_id, sender_id, client_id) and id), where no plan depends on its columns'
-- statistics. Autovacuum analyzes it after every tenth of its rows is new, and at the default
-- target of 100 that samples 30,000 rows spread over a table of gigabytes: about 0.7 s of one
-- CPU (1.5 s when throttled as autovacuum does), enough to hold up every store round on a small
-- machine (on 2 CPUs at 8,600 msg/s: p99 accepted -> delivered 45-57 ms without it, 92-129 ms
-- with it). A target of 10 samples 3,000 rows, about 0.1 s. Changing a target takes no lock that
-- blocks writes and rewrites nothing.
ALTER TABLE chat.messages
    ALTER COLUMN conversation_id SET STATISTICS 10,
    ALTER COLUMN seq SET STATISTICS 10,
    ALTER COLUMN id SET STATISTICS 10,
    ALTER COLUMN sender_id SET STATISTICS 10,
    ALTER COLUMN client_id SET STATISTICS 10,
    ALTER COLUMN kind SET STATISTICS 10,
    ALTER COLUMN body SET STATISTICS 10,
    ALTER COLUMN sent_at SET STATISTICS 10,
    ALTER COLUMN recalled_at SET STATISTICS 10,
    ALTER COLUMN recalled_by_moderation SET STATISTICS 10;
