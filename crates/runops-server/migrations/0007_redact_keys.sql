-- Which secret keys a target redacts besides the default rule: `redact_keys` are redacted
-- even when their name says where to connect (`PG_HOST`), `public_keys` are not
-- redacted. JSON lists of key names. Tasks keep the target's lists as of their creation.
ALTER TABLE targets ADD COLUMN redact_keys_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE targets ADD COLUMN public_keys_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN redact_keys_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN public_keys_json TEXT NOT NULL DEFAULT '[]';
