-- Browser sessions of the web app. The cookie holds a random secret; only its SHA-256
-- is stored. A session opened with an API token is tied to it: revoking that token (or
-- the session itself, by signing out) ends it. A session opened through the identity
-- provider (SSO) has no token.
CREATE TABLE web_sessions (
    id_hash     BLOB PRIMARY KEY,
    org_id      INTEGER NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_id    INTEGER REFERENCES tokens(id) ON DELETE CASCADE,
    -- Sent in every state-changing form and compared with the one stored here.
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
