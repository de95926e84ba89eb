//! Integrations: how a task of each `type` runs.
//!
//! Each integration is one module implementing [`Runner`] and is registered by type in
//! [`RunnerRegistry::with_defaults`]; the pipeline only ever sees the trait, so adding an
//! integration touches this file and its own module, nothing else.

pub mod argv;
pub mod check;
pub mod custom_command;
pub mod ecs;
pub mod elixir;
pub mod heroku;
pub mod k8s;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod postgres_tls;
pub mod rails;
pub mod script;
pub mod sql_output;
pub mod sql_script;
pub mod sql_server;
pub mod tool;
pub mod vault;

use crate::env::ChildEnv;
use crate::failure::TaskFailure;
use crate::logs::output::TaskLog;
use crate::secrets::Secrets;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Everything a runner gets to run one task. Secrets are already fetched and mapped, the
/// script rendered, the environment built.
pub struct RunContext<'a> {
    pub task_id: i64,
    /// The task's type (one runner may serve several).
    pub kind: &'a str,
    /// The script with its `{{KEY}}` placeholders rendered.
    pub script: &'a str,
    /// The target's `custom_command` (replaces the type's command), if any.
    pub custom_command: Option<&'a str>,
    /// The task's secrets (after mapping), for runners that connect natively.
    pub secrets: &'a Secrets,
    /// The complete environment for any child process.
    pub env: &'a ChildEnv,
    /// A private directory for temp files (0700, removed after the task).
    pub tmp_dir: &'a Path,
    /// Where runners that start processes record their process groups
    /// ([`crate::process::ProcessSpec::group_record`]).
    pub group_record: &'a Path,
    /// Where the task's output goes (redacted on the way).
    pub output: &'a TaskLog,
    /// Fires on timeout or cancel: stop at once (kill what runs) and return.
    pub stop: &'a CancellationToken,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

/// How a task ran (failures to run at all are a [`TaskFailure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// 0 is success; 128 + signal when killed by a signal.
    pub exit_code: i32,
}

/// One integration.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Secret keys a task of this type cannot run without.
    fn required_keys(&self) -> &'static [&'static str] {
        &[]
    }

    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure>;
}

/// The type whose runner runs a target's `custom_command` (whatever the target's type).
pub const CUSTOM_COMMAND_TYPE: &str = "custom_command";

/// The runners of this agent, by task type.
#[derive(Clone, Default)]
pub struct RunnerRegistry {
    runners: BTreeMap<String, Arc<dyn Runner>>,
}

impl RunnerRegistry {
    /// Every integration this agent supports.
    pub fn with_defaults() -> RunnerRegistry {
        let mut reg = RunnerRegistry::default();
        script::register(&mut reg);
        k8s::register(&mut reg);
        vault::register(&mut reg);
        elixir::register(&mut reg);
        rails::register(&mut reg);
        ecs::register(&mut reg);
        heroku::register(&mut reg);
        postgres::register(&mut reg);
        mysql::register(&mut reg);
        mongodb::register(&mut reg);
        sql_server::register(&mut reg);
        custom_command::register(&mut reg);
        reg
    }

    pub fn register(&mut self, kind: &str, runner: Arc<dyn Runner>) {
        self.runners.insert(kind.to_string(), runner);
    }

    /// The runner for `kind`, or an `invalid-config` failure listing what is supported.
    pub fn resolve(&self, kind: &str) -> Result<Arc<dyn Runner>, TaskFailure> {
        self.runners.get(kind).cloned().ok_or_else(|| {
            TaskFailure::invalid_config(format!(
                "type `{kind}` is not supported by this agent (supported: {})",
                self.supported().join(", ")
            ))
        })
    }

    /// The runner for a task: the `custom_command` runner when the target has a custom
    /// command (it replaces the type's command), else the runner of `kind`.
    pub fn resolve_task(
        &self,
        kind: &str,
        custom_command: Option<&str>,
    ) -> Result<Arc<dyn Runner>, TaskFailure> {
        match custom_command {
            Some(_) => self.resolve(CUSTOM_COMMAND_TYPE),
            None => self.resolve(kind),
        }
    }

    /// Supported types, sorted.
    pub fn supported(&self) -> Vec<&str> {
        self.runners.keys().map(String::as_str).collect()
    }
}
