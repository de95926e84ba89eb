-- The write-only config of a target (`runops` secrets provider): the JSON object sealed
-- with ChaCha20-Poly1305 under the server's secret key, and the list of its keys (shown
-- by reads; the values never are).
ALTER TABLE targets ADD COLUMN config_sealed BLOB;
ALTER TABLE targets ADD COLUMN config_keys_json TEXT NOT NULL DEFAULT '[]';
