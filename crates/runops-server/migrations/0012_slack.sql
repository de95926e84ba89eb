-- The Slack app (issue 19): the channel a target's review requests and finished tasks
-- are posted to, and whether an agent session enforces `JWK_URL` (Slack tasks carry no
-- identity token, so they are refused up front for such agents).
ALTER TABLE targets ADD COLUMN channel TEXT;
ALTER TABLE agent_sessions ADD COLUMN verifies_identity INTEGER NOT NULL DEFAULT 0;
