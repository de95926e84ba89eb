-- Reviews and approvals (issue 13).

-- A target's review rule beyond `review` and `reviewers_json` (already there):
-- `min_approvals` NULL is the default (every group for `team`, one user for `anyone`);
-- how long a task waits for its reviews, and an approved task for its creator.
ALTER TABLE targets ADD COLUMN min_approvals INTEGER;
ALTER TABLE targets ADD COLUMN approval_ttl_secs INTEGER NOT NULL DEFAULT 86400;
ALTER TABLE targets ADD COLUMN review_ttl_secs INTEGER NOT NULL DEFAULT 604800;

-- A task snapshots the rule it was created under, and the SHA-256 of what is reviewed
-- (script, type, target settings). `approved_at`: the rule was met; `run_requested_at`:
-- its creator ran it (the agent compares the creator's identity token with this time).
ALTER TABLE tasks ADD COLUMN review TEXT NOT NULL DEFAULT 'none';
ALTER TABLE tasks ADD COLUMN reviewers_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN min_approvals INTEGER;
ALTER TABLE tasks ADD COLUMN approval_ttl_secs INTEGER NOT NULL DEFAULT 86400;
ALTER TABLE tasks ADD COLUMN review_ttl_secs INTEGER NOT NULL DEFAULT 604800;
ALTER TABLE tasks ADD COLUMN review_sha256 TEXT;
ALTER TABLE tasks ADD COLUMN approved_at INTEGER;
ALTER TABLE tasks ADD COLUMN run_requested_at INTEGER;
-- The reaper's and the inbox's scans: tasks waiting for reviews or for their creator.
CREATE INDEX tasks_in_review ON tasks (status, id) WHERE status IN ('pending-review', 'approved');

-- Each approval or rejection: who, for which of their groups, when, why, and the digest
-- of the task they saw. Rows are only ever inserted.
CREATE TABLE task_reviews (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    org_id      INTEGER NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id     INTEGER,
    user_email  TEXT NOT NULL,
    groups_json TEXT NOT NULL DEFAULT '[]',
    verdict     TEXT NOT NULL CHECK (verdict IN ('approved', 'rejected')),
    comment     TEXT,
    forced      INTEGER NOT NULL DEFAULT 0,
    sha256      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (task_id, user_email)
);
CREATE INDEX task_reviews_task ON task_reviews (task_id, id);

CREATE TRIGGER task_reviews_append_only_update BEFORE UPDATE ON task_reviews
BEGIN
    SELECT RAISE(ABORT, 'a review cannot be changed once recorded');
END;

-- An approval binds the exact task: what a task runs, where and as whom never changes
-- after its creation, whatever code asks (the store refuses it).
CREATE TRIGGER tasks_immutable_after_creation
BEFORE UPDATE OF org_id, target_name, tags, tag_key, kind, script, message, user_id, user_email,
    user_groups_json, secret_provider, secret_path, secret_mapping, redact, custom_command,
    timeout_secs, redact_keys_json, public_keys_json, review, reviewers_json, min_approvals,
    approval_ttl_secs, review_ttl_secs, review_sha256, created_at ON tasks
BEGIN
    SELECT RAISE(ABORT, 'a task cannot be changed after its creation');
END;
