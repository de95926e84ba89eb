-- Identity (issue: identity and trust).
-- A task created with an identity-provider JWT remembers *that* it was (never the token
-- itself, which the control plane holds in memory only until the task starts): after a
-- restart such a task fails `unauthenticated` instead of reaching an agent without it.
ALTER TABLE tasks ADD COLUMN created_with_jwt INTEGER NOT NULL DEFAULT 0;
