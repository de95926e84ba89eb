-- Disk and identities: log quotas, log retention, case-insensitive e-mails.

-- Log bytes kept per organisation (the sum of its tasks' log_kept), maintained by every
-- append and purge so the quota check on the log path is one row read, not a scan.
CREATE TABLE log_usage (
    org_id  INTEGER PRIMARY KEY REFERENCES orgs(id) ON DELETE CASCADE,
    bytes   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO log_usage (org_id, bytes)
    SELECT org_id, coalesce(sum(log_kept), 0) FROM tasks GROUP BY org_id;

-- Set when the retention job replaced the task's log with a note; never purged twice.
ALTER TABLE tasks ADD COLUMN log_purged_at INTEGER;
-- The retention job's scan: finished tasks whose log is still there.
CREATE INDEX tasks_log_retention ON tasks (finished_at) WHERE log_purged_at IS NULL AND finished_at IS NOT NULL;

-- E-mails are unique per organisation whatever their case. Accounts created before this
-- rule that differ only in case keep working: the oldest keeps its address, each later
-- one gets `.duplicate-<id>` appended (an admin can re-create or remove it).
UPDATE users SET email = email || '.duplicate-' || id
WHERE EXISTS (
    SELECT 1 FROM users older
    WHERE older.org_id = users.org_id AND lower(older.email) = lower(users.email) AND older.id < users.id
);
CREATE UNIQUE INDEX users_email_nocase ON users (org_id, lower(email));

-- When a token first authenticated a request; tells a lost first-admin token (never
-- used) from one in use. Only the first admin token is tracked (one write, ever).
ALTER TABLE tokens ADD COLUMN first_used_at INTEGER;
-- Tokens that existed before this column was added may have been used: count them as used.
UPDATE tokens SET first_used_at = created_at;
