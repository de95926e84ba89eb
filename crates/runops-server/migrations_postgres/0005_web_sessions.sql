-- Browser sessions of the web app, as SQLite's migration 0010. The cookie holds a random
-- secret; only its SHA-256 is stored. A session opened with an API token is tied to it:
-- revoking that token (or the session itself, by signing out) ends it. A session opened
-- through the identity provider (SSO) has no token. Every replica reads the same rows,
-- so a browser may land on any of them.
CREATE TABLE web_sessions (
    id_hash     BYTEA PRIMARY KEY,
    org_id      BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_id    BIGINT REFERENCES tokens(id) ON DELETE CASCADE,
    -- Sent in every state-changing form and compared with the one stored here.
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    -- A session opened through the identity provider keeps the ID token of its sign-in,
    -- sealed with the server key, for the tasks it creates (SQLite's 0013).
    idp_token_sealed     BYTEA,
    idp_token_expires_at BIGINT
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
-- The hourly purge deletes by these.
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);
