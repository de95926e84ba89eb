-- Agent tokens are scoped to one tag set (issue: trust fixes). NULL is the untagged set:
-- tokens made before this migration keep working, for untagged agents only.
ALTER TABLE tokens ADD COLUMN tags TEXT;
