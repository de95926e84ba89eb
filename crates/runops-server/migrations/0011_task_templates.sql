-- The template a task was made from (`runops templates run`): its name, the commit it
-- was read at, and the parameter values (a JSON object), kept with the task so that it
-- outlives the template (a later force-push that removes it changes nothing here).
ALTER TABLE tasks ADD COLUMN template_name TEXT;
ALTER TABLE tasks ADD COLUMN template_commit TEXT;
ALTER TABLE tasks ADD COLUMN template_params_json TEXT;

-- Like what the task runs, where it came from never changes after its creation.
CREATE TRIGGER tasks_template_immutable
BEFORE UPDATE OF template_name, template_commit, template_params_json ON tasks
BEGIN
    SELECT RAISE(ABORT, 'a task cannot be changed after its creation');
END;
