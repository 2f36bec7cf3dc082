-- Identifiers compare as bytes, whatever the server's locale: the usage counters' metric names
-- are a key the quota charges in every write it counts. See chat's 0011 for why.
ALTER TABLE social.usage_daily ALTER COLUMN metric TYPE text COLLATE "C";
