//! Integrations: how a task of each `type` runs.
//!
//! Each integration is one module implementing [`Runner`]. [`default_runner`] gives the
//! runner of every [`TargetType`] the server accepts, by an exhaustive `match`: a type
//! added to the vocabulary does not compile until the agent runs it.
//! [`RunnerRegistry::with_defaults`] registers them all; the pipeline only ever sees the
//! trait, so adding an integration touches this file and its own module, nothing else.

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
/// Splitting SQL scripts into statements: shared with the CLI's REPL (`runops-sql`).
pub use runops_sql as sql_script;
pub mod sql_server;
pub mod tool;
pub mod vault;

use crate::env::ChildEnv;
use crate::failure::TaskFailure;
use crate::logs::output::TaskLog;
use crate::secrets::Secrets;
use async_trait::async_trait;
use runops_proto::vocab::TargetType;
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
pub const CUSTOM_COMMAND_TYPE: &str = TargetType::CustomCommand.as_str();

/// The runner of each type.
pub fn default_runner(kind: TargetType) -> Arc<dyn Runner> {
    use TargetType::*;
    use sql_output::Style;
    let script = |program, args| Arc::new(script::ScriptRunner { program, args });
    let kubectl = |mode| {
        Arc::new(k8s::KubectlRunner {
            tool: k8s::kubectl_tool(),
            mode,
        })
    };
    let rails = |console| {
        Arc::new(rails::RailsRunner {
            tool: rails::rails_tool(),
            console,
            default_root: std::env::current_dir().unwrap_or_else(|_| ".".into()),
        })
    };
    let ecs = |mode| {
        Arc::new(ecs::EcsRunner {
            tool: ecs::aws_tool(),
            mode,
        })
    };
    match kind {
        Bash => script("bash", &[]),
        Python => script("python3", &["-"]),
        Node => script("node", &["-"]),
        Elixir => Arc::new(elixir::ElixirRunner {
            tool: elixir::elixir_tool(),
        }),
        Postgres => Arc::new(postgres::PostgresRunner { style: Style::Psql }),
        PostgresCsv => Arc::new(postgres::PostgresRunner { style: Style::Csv }),
        Mysql => Arc::new(mysql::MysqlRunner {
            style: Style::MysqlBatch,
        }),
        MysqlCsv => Arc::new(mysql::MysqlRunner { style: Style::Csv }),
        SqlServer => Arc::new(sql_server::SqlServerRunner),
        Mongodb => Arc::new(mongodb::MongoRunner),
        K8s => kubectl(k8s::K8sMode::Command),
        K8sApply => kubectl(k8s::K8sMode::Apply),
        K8sExec => kubectl(k8s::K8sMode::Exec),
        RailsConsoleK8s => kubectl(k8s::K8sMode::RailsConsole),
        HashicorpVault => Arc::new(vault::VaultRunner {
            tool: vault::vault_tool(),
        }),
        Rails => rails(false),
        RailsConsole => rails(true),
        RailsConsoleEcs => ecs(ecs::EcsMode::RailsConsole),
        EcsExec => ecs(ecs::EcsMode::Exec),
        Heroku => Arc::new(heroku::HerokuRunner {
            tool: heroku::heroku_tool(),
        }),
        CustomCommand => Arc::new(custom_command::CustomCommandRunner),
    }
}

/// The runners of this agent, by task type.
#[derive(Clone, Default)]
pub struct RunnerRegistry {
    runners: BTreeMap<String, Arc<dyn Runner>>,
}

impl RunnerRegistry {
    /// Every integration this agent supports: one runner for each [`TargetType`].
    pub fn with_defaults() -> RunnerRegistry {
        let mut reg = RunnerRegistry::default();
        for &kind in TargetType::ALL {
            reg.register(kind.as_str(), default_runner(kind));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent runs exactly the types the server accepts ([`TargetType`], which the
    /// server's validation parses every target's type with).
    #[test]
    fn the_default_registry_runs_every_target_type_and_nothing_else() {
        let reg = RunnerRegistry::with_defaults();
        for kind in TargetType::ALL {
            assert!(reg.resolve(kind.as_str()).is_ok(), "{kind}");
        }
        for name in reg.supported() {
            assert!(name.parse::<TargetType>().is_ok(), "{name}");
        }
        assert_eq!(reg.supported().len(), TargetType::ALL.len());
    }
}
