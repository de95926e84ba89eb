//! The one place that builds a child process's environment.
//!
//! A child gets only: PATH, HOME, LANG (from the agent, or sane defaults), a private
//! TMPDIR, the task's secrets and the task's metadata. Never the agent's own variables
//! (its TOKEN, API_URL, cloud credentials...): [`ChildEnv::apply`] clears the inherited
//! environment first. When the agent runs as root with a run-as user ([`RunAs`]), the
//! child also takes that user's identity (and HOME) in `apply`.

use crate::isolation::SharedIsolation;
use crate::limits::{DEFAULT_LANG, DEFAULT_PATH};
use crate::run_as::RunAs;
use crate::secrets::Secrets;
use runops_proto::agent::TaskOffer;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The parts of the agent's environment children may see, read once at start, and the
/// user they run as.
#[derive(Debug, Clone)]
pub struct BaseEnv {
    pub path: String,
    pub home: Option<String>,
    pub lang: String,
    /// `Some`: children drop to this user (the agent runs as root).
    pub run_as: Option<RunAs>,
    /// `Some`: children are confined (Landlock, cgroup) and cleaned up after.
    pub isolation: Option<SharedIsolation>,
}

impl BaseEnv {
    pub fn from_process_env() -> BaseEnv {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        BaseEnv {
            path: get("PATH").unwrap_or_else(|| DEFAULT_PATH.to_string()),
            home: get("HOME"),
            lang: get("LANG").unwrap_or_else(|| DEFAULT_LANG.to_string()),
            run_as: None,
            isolation: None,
        }
    }

    /// Children are confined by `isolation`.
    pub fn with_isolation(mut self, isolation: SharedIsolation) -> BaseEnv {
        self.isolation = Some(isolation);
        self
    }

    /// Children run as `run_as` (with its HOME).
    pub fn with_run_as(mut self, run_as: Option<RunAs>) -> BaseEnv {
        self.run_as = run_as;
        self
    }
}

/// The metadata of a task, as environment variables (and placeholder values).
pub fn task_metadata(offer: &TaskOffer) -> Vec<(String, String)> {
    vec![
        ("RUNOPS_TASK_ID".into(), offer.task_id.to_string()),
        ("RUNOPS_TASK_TARGET".into(), offer.target.clone()),
        (
            "RUNOPS_TASK_DESCRIPTION".into(),
            offer.message.clone().unwrap_or_default(),
        ),
        ("RUNOPS_TASK_USER_EMAIL".into(), offer.user_email.clone()),
        ("RUNOPS_USER_GROUPS".into(), offer.user_groups.join(",")),
    ]
}

/// A complete child environment.
#[derive(Debug, Clone, Default)]
pub struct ChildEnv {
    vars: BTreeMap<String, String>,
    /// Secret keys that cannot be environment variables (they stay usable as
    /// `{{KEY}}` placeholders); the pipeline tells the user.
    pub skipped: Vec<String>,
    run_as: Option<RunAs>,
    isolation: Option<SharedIsolation>,
    /// Whether the task's temp dir was handed over to `run_as` (before its first
    /// process); shared by the clones a runner makes.
    handed_over: Arc<AtomicBool>,
}

impl ChildEnv {
    /// Base < secrets < metadata: a secret may override PATH, nothing overrides the metadata.
    pub fn build(
        base: &BaseEnv,
        tmp_dir: &Path,
        secrets: &Secrets,
        metadata: &[(String, String)],
    ) -> ChildEnv {
        let mut env = ChildEnv::default();
        let tmp = tmp_dir.to_string_lossy().into_owned();
        env.vars.insert("PATH".into(), base.path.clone());
        let home = match &base.run_as {
            // Never the agent's (root's) HOME for another user.
            Some(user) => user
                .home
                .as_ref()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|| tmp.clone()),
            None => base.home.clone().unwrap_or_else(|| tmp.clone()),
        };
        env.run_as = base.run_as.clone();
        env.isolation = base.isolation.clone();
        env.vars.insert("HOME".into(), home);
        env.vars.insert("LANG".into(), base.lang.clone());
        env.vars.insert("TMPDIR".into(), tmp);
        for (k, v) in secrets.iter().chain(metadata.iter().map(|(k, v)| (k, v))) {
            if is_valid_env_name(k) && !v.contains('\0') {
                env.vars.insert(k.clone(), v.clone());
            } else {
                env.skipped.push(k.clone());
            }
        }
        env
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// This environment plus (or overriding) `extra`: for integrations that hand a tool
    /// its credentials in the variables it reads (`AWS_ACCESS_KEY_ID` from
    /// `ECS_AWS_ACCESS_KEY_ID`, a normalised `VAULT_ADDR`).
    pub fn with_vars<K, V>(&self, extra: impl IntoIterator<Item = (K, V)>) -> ChildEnv
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut env = self.clone();
        for (k, v) in extra {
            let (k, v) = (k.into(), v.into());
            if is_valid_env_name(&k) && !v.contains('\0') {
                env.vars.insert(k, v);
            }
        }
        env
    }

    /// Replaces `cmd`'s environment with exactly this one, and its user with the
    /// run-as user when there is one.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        cmd.env_clear();
        cmd.envs(&self.vars);
        if let Some(user) = &self.run_as {
            user.apply(cmd);
        }
    }

    /// How children are confined, when they are.
    pub fn isolation(&self) -> Option<&SharedIsolation> {
        self.isolation.as_ref()
    }

    /// The user children run as, when not the agent's own.
    pub fn run_as(&self) -> Option<&RunAs> {
        self.run_as.as_ref()
    }

    /// Before a child starts: the first time, gives the task's temp dir (TMPDIR) to the
    /// run-as user, so that the files the agent prepared there are usable by the task.
    pub async fn prepare_spawn(&self) -> std::io::Result<()> {
        let (Some(user), Some(dir)) = (self.run_as.clone(), self.get("TMPDIR")) else {
            return Ok(());
        };
        if self.handed_over.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let dir = std::path::PathBuf::from(dir);
        tokio::task::spawn_blocking(move || user.hand_over(&dir))
            .await
            .map_err(std::io::Error::other)?
    }
}

fn is_valid_env_name(k: &str) -> bool {
    !k.is_empty() && !k.contains('=') && !k.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_env_has_base_secrets_and_metadata_only() {
        let base = BaseEnv {
            path: "/bin".into(),
            home: None,
            lang: "C.UTF-8".into(),
            run_as: None,
            isolation: None,
        };
        let secrets: Secrets = [
            ("DB_PASS", "x"),
            ("BAD=KEY", "y"),
            ("RUNOPS_TASK_ID", "fake"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let meta = vec![("RUNOPS_TASK_ID".to_string(), "9".to_string())];
        let env = ChildEnv::build(&base, Path::new("/tmp/t9"), &secrets, &meta);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "DB_PASS",
                "HOME",
                "LANG",
                "PATH",
                "RUNOPS_TASK_ID",
                "TMPDIR"
            ]
        );
        assert_eq!(env.get("HOME"), Some("/tmp/t9"));
        assert_eq!(env.get("RUNOPS_TASK_ID"), Some("9"));
        assert_eq!(env.skipped, ["BAD=KEY"]);
    }
}
