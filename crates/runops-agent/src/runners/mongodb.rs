//! `mongodb`: the script runs in `mongosh`, fed on stdin like an interactive session (each
//! expression's result is printed, as users of the Mongo shell expect). The connection
//! URI, which usually holds a password, never goes on the command line (other users can
//! read argv): `mongosh` starts with `--nodb` and connects from its `--eval` with
//! `connect(process.env.MONGO_CONNECTION_URI)`, reading the URI from its own environment,
//! which only the same user can read. An empty prompt keeps the output to the results.

use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use crate::process::{ProcessSpec, run_process};
use async_trait::async_trait;
use std::path::Path;

/// The shell this runner drives.
pub const MONGOSH: &str = "mongosh";
const URI_KEY: &str = "MONGO_CONNECTION_URI";
/// Runs before the script: no prompt, connect with the URI from the environment, and
/// print nothing itself (`void 0`).
const CONNECT_EVAL: &str = "prompt = ''; db = connect(process.env.MONGO_CONNECTION_URI); void 0";

pub struct MongoRunner;

/// The arguments of `mongosh`: no URI, no secret.
pub fn mongosh_args() -> Vec<String> {
    [
        "--nodb",
        "--quiet",
        "--norc",
        "--eval",
        CONNECT_EVAL,
        "--shell",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// True when an executable `program` is in one of the `path` directories.
pub fn on_path(program: &str, path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.split(':').filter(|d| !d.is_empty()).any(|dir| {
        std::fs::metadata(Path::new(dir).join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[async_trait]
impl Runner for MongoRunner {
    fn required_keys(&self) -> &'static [&'static str] {
        &[URI_KEY]
    }

    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        if ctx.env.get(URI_KEY).is_none() {
            return Err(TaskFailure::secrets(format!(
                "{URI_KEY} cannot be passed to `mongosh` (it is not a valid environment value)"
            )));
        }
        if !on_path(MONGOSH, ctx.env.get("PATH").unwrap_or_default()) {
            return Err(TaskFailure::agent_error(format!(
                "`{MONGOSH}` was not found on the agent's PATH; install it with `npm install -g mongosh` to run `mongodb` tasks"
            )));
        }
        let spec = ProcessSpec {
            program: MONGOSH.to_string(),
            args: mongosh_args(),
            stdin: Some(ctx.script.as_bytes().to_vec()),
            cwd: ctx.tmp_dir.to_path_buf(),
            needed_for: "`mongodb` tasks (install it with `npm install -g mongosh`)".to_string(),
            group_record: Some(ctx.group_record.to_path_buf()),
        };
        let exit_code = run_process(&spec, ctx.env, ctx.output, ctx.stop, ctx.kill_grace).await?;
        Ok(RunOutcome { exit_code })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_is_never_an_argument() {
        let args = mongosh_args().join(" ");
        assert!(!args.contains("mongodb://"), "{args}");
        assert!(args.contains("process.env.MONGO_CONNECTION_URI"), "{args}");
    }

    #[test]
    fn on_path_finds_executables_only() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert!(!on_path("tool", &path), "not executable yet");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(on_path("tool", &path));
        assert!(!on_path("other", &path));
    }
}
