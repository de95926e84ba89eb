-- Initial schema of the Runops control plane (SQLite).
-- Times are integer milliseconds since the Unix epoch (UTC).

CREATE TABLE orgs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    groups_json TEXT NOT NULL DEFAULT '[]',
    role        TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at  INTEGER NOT NULL,
    UNIQUE (org_id, email)
);

-- Only the SHA-256 of a token is stored; `kind` decides which routes it reaches.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'agent')),
    user_id     INTEGER REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT,
    hash        BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE targets (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id          INTEGER NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    description     TEXT,
    tags            TEXT,
    secret_provider TEXT,
    secret_path     TEXT,
    secret_mapping  TEXT,
    runner_provider TEXT,
    redact          TEXT NOT NULL,
    review          TEXT NOT NULL,
    reviewers_json  TEXT NOT NULL DEFAULT '[]',
    custom_command  TEXT,
    timeout_secs    INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE agent_sessions (
    id            TEXT PRIMARY KEY,
    org_id        INTEGER NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    token_id      INTEGER NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    tags          TEXT,
    -- coalesce(tags, ''): lets one index and one equality serve tagged and untagged agents.
    tag_key       TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    version       TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    concurrency   INTEGER NOT NULL,
    connected_at  INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    ended_at      INTEGER,
    end_reason    TEXT
);
-- At most one live agent per (org, tags), enforced by the database itself.
CREATE UNIQUE INDEX agent_sessions_live_tags ON agent_sessions (org_id, tag_key) WHERE ended_at IS NULL;

-- A task keeps a snapshot of its target's settings taken at creation, so that
-- editing or deleting the target later does not change what the task runs.
CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id           INTEGER NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    target_name      TEXT NOT NULL,
    tags             TEXT,
    tag_key          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    script           TEXT NOT NULL,
    message          TEXT,
    user_id          INTEGER,
    user_email       TEXT NOT NULL,
    user_groups_json TEXT NOT NULL DEFAULT '[]',
    secret_provider  TEXT,
    secret_path      TEXT,
    secret_mapping   TEXT,
    redact           TEXT NOT NULL,
    custom_command   TEXT,
    timeout_secs     INTEGER NOT NULL,
    status           TEXT NOT NULL,
    exit_code        INTEGER,
    failure_reason   TEXT,
    failure_message  TEXT,
    session_id       TEXT,
    agent_hostname   TEXT,
    offer_deadline   INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    redacted         INTEGER NOT NULL DEFAULT 0,
    -- bytes acknowledged to the agent (the log's logical size so far)
    log_received     INTEGER NOT NULL DEFAULT 0,
    -- bytes kept in task_log_chunks (at most the cap, plus the truncation note)
    log_kept         INTEGER NOT NULL DEFAULT 0,
    log_truncated    INTEGER NOT NULL DEFAULT 0,
    log_size         INTEGER,
    log_location     TEXT,
    created_at       INTEGER NOT NULL,
    dispatched_at    INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    elapsed_ms       INTEGER
);
-- The claim query: the oldest ready tasks of one (org, tags).
CREATE INDEX tasks_ready ON tasks (org_id, tag_key, id) WHERE status = 'ready';
-- Offers waiting for `start` (reaper) and tasks held by a session.
CREATE INDEX tasks_session ON tasks (session_id, status) WHERE session_id IS NOT NULL;
CREATE INDEX tasks_dispatched ON tasks (offer_deadline) WHERE status = 'dispatched';
CREATE INDEX tasks_org ON tasks (org_id, id);

-- A task's log as contiguous chunks [start_offset, end_offset) of the kept stream.
CREATE TABLE task_log_chunks (
    task_id      INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    start_offset INTEGER NOT NULL,
    end_offset   INTEGER NOT NULL,
    data         BLOB NOT NULL
);
CREATE UNIQUE INDEX task_log_chunks_end ON task_log_chunks (task_id, end_offset);
