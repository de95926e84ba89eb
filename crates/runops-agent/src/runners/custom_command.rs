//! A target's `custom_command`: it replaces the type's command, whatever the type.
//!
//! The command is split into words like a shell would split it, *then* each word's
//! placeholders are filled in: `[[SCRIPT]]` with the script (its base64 when the secret
//! has `SCRIPT_BASE64_ENCODE=true`) and `[[KEY]]` with the value of the secret (or
//! metadata) key. A value therefore always stays inside the one argument it was put
//! in: quotes, spaces, `;` or `$(...)` in a script or a secret cannot add arguments or
//! commands. The first word is the program, run without a shell (a command that wants
//! a shell says so: `bash -c '[[SCRIPT]]'`). The script is also on the program's stdin.
//! Unknown placeholders stay as they are.

use super::argv::split_words;
use super::tool::{Invocation, Tool, run_tool, secret};
use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use base64::Engine;

/// The placeholder filled with the script.
pub const SCRIPT_PLACEHOLDER: &str = "SCRIPT";

pub struct CustomCommandRunner;

#[async_trait]
impl Runner for CustomCommandRunner {
    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        let Some(command) = ctx.custom_command else {
            return Err(TaskFailure::invalid_config(
                "the target has no custom_command; set one with `runops targets update --name TARGET --custom_command 'PROGRAM ARGS [[SCRIPT]]'`",
            ));
        };
        let base64_script =
            secret(&ctx, "SCRIPT_BASE64_ENCODE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let script_value = if base64_script {
            base64::engine::general_purpose::STANDARD.encode(ctx.script)
        } else {
            ctx.script.to_string()
        };
        let lookup = |key: &str| -> Option<String> {
            if key == SCRIPT_PLACEHOLDER {
                return Some(script_value.clone());
            }
            ctx.secrets.get(key).cloned().or_else(|| {
                key.starts_with("RUNOPS_")
                    .then(|| ctx.env.get(key).map(str::to_string))
                    .flatten()
            })
        };
        let mut argv = plan(command, lookup)?;
        let program = argv.remove(0);
        let tool = Tool {
            program,
            config_var: None,
            install: "it is the program the target's custom_command starts",
        };
        let invocation = Invocation::with_stdin(argv, ctx.script);
        run_tool(&ctx, &tool, ctx.env, ctx.tmp_dir, vec![invocation]).await
    }
}

/// The argument vector of `command` (program first) with its placeholders filled in
/// after splitting (pure: unit-tested).
pub fn plan(
    command: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, TaskFailure> {
    let words = split_words(command).map_err(|e| {
        TaskFailure::invalid_config(format!(
            "cannot split the target's custom_command into arguments: {e}"
        ))
    })?;
    let argv: Vec<String> = words
        .iter()
        .map(|w| fill_placeholders(w, &lookup))
        .collect();
    if argv.first().is_none_or(|p| p.is_empty()) {
        return Err(TaskFailure::invalid_config(
            "the target's custom_command has no program to run; it must start with one (`psql -f -`, `bash -c '[[SCRIPT]]'`)",
        ));
    }
    Ok(argv)
}

/// Replaces each `[[KEY]]` of one word whose key `lookup` knows; values are not
/// scanned again.
pub fn fill_placeholders(word: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    crate::render::render(word, crate::render::COMMAND, lookup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(key: &str) -> Option<String> {
        match key {
            "SCRIPT" => Some("select 1; drop table x; -- $(id) `id` 'q' \"d\"\nline2".into()),
            "PG_HOST" => Some("db.internal --evil".into()),
            "NESTED" => Some("[[PG_HOST]]".into()),
            _ => None,
        }
    }

    #[test]
    fn values_land_inside_the_argument_they_replace() {
        let argv = plan(
            "psql -h [[PG_HOST]] -c '[[SCRIPT]]' --set=x=[[NOPE]]",
            lookup,
        )
        .unwrap();
        assert_eq!(
            argv,
            [
                "psql",
                "-h",
                "db.internal --evil",
                "-c",
                "select 1; drop table x; -- $(id) `id` 'q' \"d\"\nline2",
                "--set=x=[[NOPE]]"
            ]
        );
    }

    #[test]
    fn placeholders_are_filled_once_not_recursively() {
        assert_eq!(
            plan("echo pre[[NESTED]]post", lookup).unwrap(),
            ["echo", "pre[[PG_HOST]]post"]
        );
        assert_eq!(fill_placeholders("[[ SCRIPT ]", lookup), "[[ SCRIPT ]");
        assert_eq!(fill_placeholders("[[a b]] [[]]", lookup), "[[a b]] [[]]");
    }

    #[test]
    fn a_command_without_a_program_is_invalid_config() {
        for cmd in ["", "  ", "'' x", "[[EMPTY]]"] {
            let f = plan(cmd, |k| (k == "EMPTY").then(String::new)).unwrap_err();
            assert_eq!(
                f.reason,
                runops_proto::FailureReason::InvalidConfig,
                "{cmd:?}"
            );
        }
        let f = plan("psql -c 'oops", lookup).unwrap_err();
        assert!(f.message.contains("custom_command"), "{f}");
    }
}
