-- Identifiers compare as bytes, whatever the server's locale: phone numbers (the sign-in key),
-- role names and the roles an account holds (a GIN key). Nicknames stay in the server's
-- collation: they are language, searched with ILIKE. See chat's 0011 for why.
ALTER TABLE users.accounts
    ALTER COLUMN phone TYPE text COLLATE "C",
    ALTER COLUMN roles TYPE text[] COLLATE "C";
ALTER TABLE users.roles ALTER COLUMN name TYPE text COLLATE "C";
