//! `heroku`: `heroku run --no-tty [--size HEROKU_DYNO_SIZE] [--type HEROKU_PROCESS_TYPE]
//! --app HEROKU_APP -- HEROKU_EXEC_COMMAND...` with the script on the one-off dyno's
//! stdin. The API key reaches the CLI as `HEROKU_API_KEY` in its environment, never on
//! its command line; `HEROKU_EXEC_COMMAND` is split like a shell splits words.

use super::argv::split_words;
use super::tool::{Invocation, Tool, run_tool, secret};
use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use async_trait::async_trait;

/// Where the "heroku not found" message sends the operator.
pub const HEROKU_INSTALL: &str =
    "https://devcenter.heroku.com/articles/heroku-cli (`npm install -g heroku`)";

pub struct HerokuRunner {
    pub tool: Tool,
}

/// `heroku`, or the binary named by the agent's `HEROKU_CLI`.
pub fn heroku_tool() -> Tool {
    Tool::from_agent_env("heroku", "HEROKU_CLI", HEROKU_INSTALL)
}

/// The keys a heroku task reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct HerokuKeys<'a> {
    pub app: &'a str,
    pub exec_command: &'a str,
    pub dyno_size: Option<&'a str>,
    pub process_type: Option<&'a str>,
}

#[async_trait]
impl Runner for HerokuRunner {
    fn required_keys(&self) -> &'static [&'static str] {
        &["HEROKU_API_KEY", "HEROKU_APP", "HEROKU_EXEC_COMMAND"]
    }

    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        let keys = HerokuKeys {
            app: secret(&ctx, "HEROKU_APP").unwrap_or_default(),
            exec_command: secret(&ctx, "HEROKU_EXEC_COMMAND").unwrap_or_default(),
            dyno_size: secret(&ctx, "HEROKU_DYNO_SIZE"),
            process_type: secret(&ctx, "HEROKU_PROCESS_TYPE"),
        };
        let invocation = plan(&keys, ctx.script)?;
        let api_key = secret(&ctx, "HEROKU_API_KEY")
            .unwrap_or_default()
            .to_string();
        let env = ctx.env.with_vars([("HEROKU_API_KEY", api_key)]);
        run_tool(&ctx, &self.tool, &env, ctx.tmp_dir, vec![invocation]).await
    }
}

/// The `heroku run` of a task (pure: unit-tested).
pub fn plan(keys: &HerokuKeys<'_>, script: &str) -> Result<Invocation, TaskFailure> {
    let command = split_words(keys.exec_command).map_err(|e| {
        TaskFailure::invalid_config(format!(
            "cannot split HEROKU_EXEC_COMMAND into arguments: {e}"
        ))
    })?;
    if command.is_empty() {
        return Err(TaskFailure::invalid_config(
            "HEROKU_EXEC_COMMAND is empty; set it to the command that reads the script on stdin, e.g. `rails runner -` or `bash`",
        ));
    }
    let mut args = vec!["run".to_string(), "--no-tty".to_string()];
    if let Some(size) = keys.dyno_size {
        args.extend(["--size".to_string(), size.to_string()]);
    }
    if let Some(t) = keys.process_type {
        args.extend(["--type".to_string(), t.to_string()]);
    }
    args.extend(["--app".to_string(), keys.app.to_string(), "--".to_string()]);
    args.extend(command);
    Ok(Invocation::with_stdin(args, script))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heroku_run_argv_has_app_size_type_and_split_command_and_script_on_stdin() {
        let keys = HerokuKeys {
            app: "my-app",
            exec_command: "bundle exec 'rails runner' -",
            dyno_size: Some("standard-2x"),
            process_type: Some("worker"),
        };
        let script = "puts \"$(id)\"; `x`\n";
        let inv = plan(&keys, script).unwrap();
        assert_eq!(
            inv.args,
            [
                "run",
                "--no-tty",
                "--size",
                "standard-2x",
                "--type",
                "worker",
                "--app",
                "my-app",
                "--",
                "bundle",
                "exec",
                "rails runner",
                "-"
            ]
        );
        assert_eq!(inv.stdin.as_deref(), Some(script.as_bytes()));
    }

    #[test]
    fn heroku_without_optional_keys_and_with_an_empty_command() {
        let keys = HerokuKeys {
            app: "a",
            exec_command: "bash",
            ..HerokuKeys::default()
        };
        assert_eq!(
            plan(&keys, "").unwrap().args,
            ["run", "--no-tty", "--app", "a", "--", "bash"]
        );
        let keys = HerokuKeys {
            app: "a",
            exec_command: " '' ",
            ..HerokuKeys::default()
        };
        // An empty quoted word is an argument; only no words at all is an error.
        assert!(plan(&keys, "").is_ok());
        let keys = HerokuKeys {
            app: "a",
            exec_command: "# nothing",
            ..HerokuKeys::default()
        };
        assert!(
            plan(&keys, "")
                .unwrap_err()
                .message
                .contains("HEROKU_EXEC_COMMAND is empty")
        );
    }
}
