-- The template a task was made from (`runops templates run`): its name, the commit it
-- was read at, and the parameter values (a JSON object), kept with the task so that it
-- outlives the template (a later force-push that removes it changes nothing here).
ALTER TABLE tasks ADD COLUMN template_name TEXT;
ALTER TABLE tasks ADD COLUMN template_commit TEXT;
ALTER TABLE tasks ADD COLUMN template_params_json TEXT;

-- Like what the task runs, where it came from never changes after its creation.
CREATE FUNCTION runops_tasks_template_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.template_name, NEW.template_commit, NEW.template_params_json)
       IS DISTINCT FROM
       (OLD.template_name, OLD.template_commit, OLD.template_params_json) THEN
        RAISE EXCEPTION 'a task cannot be changed after its creation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tasks_template_immutable BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION runops_tasks_template_immutable();
