-- Identifiers compare as bytes, whatever the server's locale: an audit record's action name is
-- the key of the index the audit log is filtered by. See chat's 0011 for why.
ALTER TABLE audit.records ALTER COLUMN action TYPE text COLLATE "C";
