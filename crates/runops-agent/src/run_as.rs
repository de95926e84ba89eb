//! Least privilege: when the agent runs as root, tasks run as an unprivileged user.
//!
//! The user is `RUN_AS_USER`, or `runops` when that user exists (`RUN_AS_USER=root`
//! keeps root, on purpose). A task's processes get that user's uid, primary gid and
//! supplementary groups, set in the child between fork and exec ([`RunAs::apply`]), and
//! the task's private temp dir is handed over to it just before its first process
//! starts ([`RunAs::hand_over`]). The agent's own files stay the agent's: the spool and
//! data dir are 0700 and owned by root, so a task cannot read other tasks' logs or the
//! agent's lock and state. When the agent does not run as root there is nobody to switch
//! to; a `RUN_AS_USER` naming another user is then an error rather than a silent no-op.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The user tasks run as by default when the agent runs as root and this user exists.
pub const DEFAULT_RUN_AS_USER: &str = "runops";

/// How deep the hand-over walks a task's temp dir (runners write flat files; a deeper
/// tree was not made by the agent).
const HAND_OVER_MAX_DEPTH: usize = 8;

/// The identity a task's processes take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from the group database), primary gid included.
    pub groups: Vec<u32>,
    /// The user's home directory, when it exists (children get it as HOME).
    pub home: Option<PathBuf>,
}

/// Decides who tasks run as, from `RUN_AS_USER` (`configured`) and who the agent is.
/// `None`: tasks run as the agent's own user.
pub fn resolve(configured: Option<&str>) -> anyhow::Result<Option<RunAs>> {
    let euid = nix::unistd::geteuid();
    let me = nix::unistd::User::from_uid(euid).ok().flatten();
    let my_name = me.as_ref().map(|u| u.name.clone()).unwrap_or_default();
    if !euid.is_root() {
        return match configured {
            // `root` means "do not switch", whoever the agent is.
            Some(name) if name != my_name && name != "root" => anyhow::bail!(
                "RUN_AS_USER={name} needs the agent to run as root to switch users, but it runs as `{my_name}` (uid {euid}); unset RUN_AS_USER or start the agent as root"
            ),
            _ => Ok(None),
        };
    }
    let (name, explicit) = match configured {
        Some("root") => {
            tracing::warn!("RUN_AS_USER=root: tasks run as root with the agent's privileges");
            return Ok(None);
        }
        Some(name) => (name, true),
        None => (DEFAULT_RUN_AS_USER, false),
    };
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| anyhow::anyhow!("cannot look up user `{name}`: {e}"))?;
    let Some(user) = user else {
        if explicit {
            anyhow::bail!(
                "RUN_AS_USER names user `{name}`, which does not exist on this machine; create it (`useradd --system {name}`) or unset RUN_AS_USER"
            );
        }
        tracing::warn!(
            "the agent runs as root and there is no `{DEFAULT_RUN_AS_USER}` user: tasks run as root; create one (`useradd --system {DEFAULT_RUN_AS_USER}`) or set RUN_AS_USER"
        );
        return Ok(None);
    };
    if user.uid.is_root() {
        return Ok(None);
    }
    let cname = CString::new(name)
        .map_err(|_| anyhow::anyhow!("RUN_AS_USER `{name}` contains a NUL byte"))?;
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&cname, user.gid)
        .map_err(|e| anyhow::anyhow!("cannot read the groups of user `{name}`: {e}"))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    if !groups.contains(&user.gid.as_raw()) {
        groups.push(user.gid.as_raw());
    }
    let home = Some(user.dir.clone()).filter(|d| d.is_dir());
    tracing::info!(user = %name, uid = user.uid.as_raw(), "tasks run as an unprivileged user");
    Ok(Some(RunAs {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        home,
    }))
}

/// File in the agent's data dir naming the temp root of its last run (to clean it up).
const TMP_ROOT_RECORD: &str = "task-tmp-root";

/// Prefix of the temp roots made by [`shared_tmp_root`].
const TMP_ROOT_PREFIX: &str = "runops-agent-tasks-";

/// The temp root an earlier run recorded (it may hold leftovers of that run).
pub fn previous_tmp_root(data_dir: &Path) -> Option<PathBuf> {
    std::fs::read_to_string(data_dir.join(TMP_ROOT_RECORD))
        .ok()
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| p.is_absolute())
}

/// The parent of the per-task temp dirs when tasks run as another user. The data dir
/// (and its parents) may be closed to that user, so the root is a fresh directory in the
/// system temp dir: owned by the agent, 0711 (the task's user may enter its own task's
/// dir, whose random name it is given, but not list the others). The root of the last
/// run is removed first: it may hold secrets of tasks that ran when the agent died.
pub fn shared_tmp_root(data_dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let record = data_dir.join(TMP_ROOT_RECORD);
    if let Ok(old) = std::fs::read_to_string(&record) {
        let old = PathBuf::from(old.trim());
        let ours = std::fs::symlink_metadata(&old)
            .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw())
            && old
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(TMP_ROOT_PREFIX));
        if ours && let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!(
                "cannot clean the old task temp dirs in {}: {e}",
                old.display()
            );
        }
    }
    let base = std::env::temp_dir();
    for _ in 0..8 {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(io::Error::other)?;
        let name = hex::encode(bytes);
        let root = base.join(format!("{TMP_ROOT_PREFIX}{name}"));
        match std::fs::DirBuilder::new().mode(0o711).create(&root) {
            Ok(()) => {
                std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))?;
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .mode(0o600)
                    .open(&record)
                    .and_then(|mut f| {
                        io::Write::write_all(&mut f, root.to_string_lossy().as_bytes())
                    })?;
                return Ok(root);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "cannot create a fresh directory in {}",
        base.display()
    )))
}

impl RunAs {
    /// Makes `cmd`'s child drop to this user before exec: supplementary groups, then
    /// gid, then uid (in that order: after setuid the others are no longer allowed).
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        let (uid, gid, groups) = (self.uid, self.gid, self.groups.clone());
        let set_ids = move || -> io::Result<()> {
            // SAFETY: only async-signal-safe system calls between fork and exec, on
            // memory allocated before the fork.
            unsafe {
                if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: the closure calls only async-signal-safe functions (see above).
        unsafe {
            cmd.pre_exec(set_ids);
        }
    }

    /// Gives the task's temp dir `dir` and what the agent wrote into it (scripts,
    /// kubeconfigs, certificates) to this user, so that its processes can use them.
    /// Called before any process of the task ran, so everything in there is the agent's
    /// own; symlinks are never followed and hard-linked files are left alone anyway.
    pub fn hand_over(&self, dir: &Path) -> io::Result<()> {
        self.hand_over_entry(dir, 0)
    }

    fn hand_over_entry(&self, path: &Path, depth: usize) -> io::Result<()> {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            // A symlink (ELOOP) or a socket (ENXIO): not ours to hand over.
            Err(e) if depth > 0 => {
                tracing::debug!("not handing over {}: {e}", path.display());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if meta.is_file() && meta.nlink() > 1 {
            return Ok(());
        }
        if meta.uid() != self.uid || meta.gid() != self.gid {
            std::os::unix::fs::fchown(&file, Some(self.uid), Some(self.gid))?;
        }
        if meta.is_dir() && depth < HAND_OVER_MAX_DEPTH {
            for entry in std::fs::read_dir(path)? {
                self.hand_over_entry(&entry?.path(), depth + 1)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_root_only_the_agents_own_user_is_accepted() {
        if nix::unistd::geteuid().is_root() {
            // As root the decision depends on the users of the machine; the end-to-end
            // test covers it.
            return;
        }
        assert_eq!(resolve(None).unwrap(), None);
        assert_eq!(resolve(Some("root")).unwrap(), None);
        let e = resolve(Some("nobody-else-xyz")).unwrap_err().to_string();
        assert!(e.contains("needs the agent to run as root"), "{e}");
    }

    #[test]
    fn as_root_a_missing_explicit_user_is_an_error() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let e = resolve(Some("no-such-user-runops-test"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert_eq!(resolve(Some("root")).unwrap(), None);
    }
}
