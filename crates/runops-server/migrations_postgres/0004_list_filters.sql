-- The task list's filters (status, target, user) and the audit log's (action, actor,
-- object) each find their newest rows through an index instead of scanning every row of
-- the organisation: the web app's tasks page stays fast with 100,000 tasks (BENCHMARKS.md).
-- The trailing columns answer a second filter from the index itself (status and
-- target together, say), without reading a row that the filter then drops.
CREATE INDEX tasks_org_status ON tasks (org_id, status, id, target_name, user_email);
CREATE INDEX tasks_org_target ON tasks (org_id, target_name, id, user_email);
CREATE INDEX tasks_org_user ON tasks (org_id, user_email, id);
CREATE INDEX audit_events_org_action ON audit_events (org_id, action, id);
CREATE INDEX audit_events_org_actor ON audit_events (org_id, actor_email, id);
CREATE INDEX audit_events_org_object ON audit_events (org_id, object_id, id);
