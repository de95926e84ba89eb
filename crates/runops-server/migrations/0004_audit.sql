-- Audit log (issue: identity and trust): who did what, when, from where.
-- `actor_email` is NULL for agents and the server itself; `detail_json` never holds
-- secret values (a target's config: keys only). Rows are only ever inserted.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id INTEGER NOT NULL REFERENCES orgs(id),
    at INTEGER NOT NULL,
    actor_email TEXT,
    actor_kind TEXT NOT NULL CHECK (actor_kind IN ('user', 'agent', 'system')),
    action TEXT NOT NULL,
    object_kind TEXT,
    object_id TEXT,
    remote_addr TEXT,
    detail_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_org_id ON audit_events (org_id, id);
