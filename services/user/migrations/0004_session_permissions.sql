-- Administrators and moderators see and end other accounts' sessions (issue #17):
-- `sessions:read` lists a user's devices, `sessions:revoke` signs one or all of them out.
-- Each is added to the built-in roles unless the role holds it already; nothing is removed.
UPDATE users.roles
SET permissions = permissions || ARRAY(
        SELECT p FROM unnest('{sessions:read,sessions:revoke}'::text[]) AS p
        WHERE p <> ALL(permissions)),
    updated_at = now()
WHERE name = 'moderator'
  AND NOT permissions @> '{sessions:read,sessions:revoke}';

UPDATE users.roles
SET permissions = array_append(permissions, 'sessions:*'), updated_at = now()
WHERE name = 'admin'
  AND NOT permissions && '{sessions:*,*:*}';
