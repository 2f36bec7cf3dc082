-- Roles as named sets of `resource:action` permissions (issue #15), the built-in ones seeded,
-- and direct grants per account. `accounts.roles` keeps holding role names.
CREATE TABLE users.roles (
    name        text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    permissions text[] NOT NULL DEFAULT '{}',
    builtin     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO users.roles (name, description, permissions, builtin) VALUES
    ('user', 'Every account', '{}', true),
    ('moderator', 'Moderates messages, groups and accounts',
     '{users:read,users:disable,messages:moderate,groups:moderate}', true),
    ('admin', 'Administers accounts, roles, quotas and the audit log; sees the mesh''s health',
     '{users:*,roles:*,audit:read,messages:moderate,groups:moderate,quotas:*,mesh:read}', true),
    ('super_admin', 'Everything', '{*:*}', true);

ALTER TABLE users.accounts ADD COLUMN permissions text[] NOT NULL DEFAULT '{}';
CREATE INDEX accounts_by_role ON users.accounts USING gin (roles);
