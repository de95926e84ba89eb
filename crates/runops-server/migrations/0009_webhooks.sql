-- Webhooks (issue 13, notifications): an organisation's receivers of task and review
-- events, the events (an outbox) and one delivery row per (event, webhook), so a
-- restart or a receiver that is down loses nothing. Times in ms since the epoch.

-- `secret_sealed`: the HMAC key, sealed with the server's key (see sealed.rs); the
-- server needs it back to sign, so it cannot be only hashed.
CREATE TABLE webhooks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id        INTEGER NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    url           TEXT NOT NULL,
    format        TEXT NOT NULL CHECK (format IN ('generic', 'slack')),
    events_json   TEXT NOT NULL,
    secret_sealed BLOB NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX webhooks_org ON webhooks (org_id, id);

-- The payload is a snapshot taken when the event happened (redacted script preview
-- included); every format is rendered from it at delivery time.
CREATE TABLE webhook_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       INTEGER NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    task_id      INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
-- A task finishes once: a second `task.finished` for it is not recorded.
CREATE UNIQUE INDEX webhook_events_task_finished ON webhook_events (task_id) WHERE kind = 'task.finished';

-- `task_id` is copied from the event: deliveries of one task to one webhook go out in
-- id order, each only after the one before it is delivered (or given up).
-- A claimed (in-flight) delivery stays `pending` with `next_attempt_at` pushed past the
-- attempt's timeout, so a crash mid-attempt only means one more attempt later.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id        INTEGER NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
    task_id         INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_chain ON webhook_deliveries (webhook_id, task_id, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);
