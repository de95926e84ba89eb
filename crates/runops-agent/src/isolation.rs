//! Keeping tasks away from the agent, from each other, and from outliving themselves.
//!
//! At start-up ([`Isolation::start`]) the agent
//! - makes itself non-dumpable (`PR_SET_DUMPABLE` 0): its `/proc/<pid>/environ`, `mem`,
//!   `maps`, `fd/` become root's and `ptrace` needs `CAP_SYS_PTRACE`, so a task under
//!   the agent's own uid cannot read its TOKEN, the targets' secrets in its environment
//!   or its memory (a process's `/proc/<pid>/environ` always shows the environment it
//!   started with, whatever it unsets later, so removing variables would not help);
//! - becomes a child subreaper: orphans of tasks are re-parented to the agent instead
//!   of init, so they stay findable (and the agent reaps them);
//! - probes Landlock and cgroup v2 and says in one log line what holds.
//!
//! For each process a task starts ([`Isolation::prepare`]):
//! - Landlock, when the kernel has it and the task runs as a non-root uid: a fresh
//!   domain per process, so it cannot ptrace, read `/proc/<pid>/environ|mem|cwd|fd` of,
//!   or (ABI 6+) signal processes outside it: not the agent, not other tasks. When the
//!   task runs as the agent's own user, the domain also denies every file access under
//!   the agent's data dir (spool, state, other tasks' temp dirs) except the task's own
//!   temp dir. Landlock rules are allow-lists, so "everything but the data dir" is
//!   expressed as a rule for every sibling of every ancestor of the data dir (the
//!   ancestors themselves get no rule: a rule on a directory covers all beneath it).
//! - a cgroup of its own, when cgroup v2 is writable with `cgroup.kill`: when the process
//!   ends (exit, kill, timeout) everything in the cgroup is killed at once.
//! - otherwise ([`Escapees`]): the agent, as subreaper, kills every process that
//!   descends from it and carries the task's `RUNOPS_TASK_ID`, and every re-parented
//!   orphan that carries no marker of another running task.

use crate::limits::{GROUP_CHECK_INTERVAL, GROUP_EXIT_WAIT};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

// ---- Landlock kernel ABI (linux/landlock.h); the libc crate does not carry it. ----

const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1 << 0;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
/// Rights ABI 1 knows: EXECUTE up to MAKE_SYM.
const FS_ABI1: u64 = (1 << 13) - 1;
const FS_REFER: u64 = 1 << 13;
const FS_TRUNCATE: u64 = 1 << 14;
const FS_IOCTL_DEV: u64 = 1 << 15;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version of the running kernel, `None` when it has no Landlock (too
/// old, or not in the `lsm=` list).
pub fn landlock_abi() -> Option<u32> {
    // SAFETY: the documented version query: no attribute pointer, size 0.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).ok().filter(|v| *v >= 1)
}

/// Every filesystem right the kernel's ABI knows (all handled, so all denied unless a
/// rule grants them).
fn fs_rights(abi: u32) -> u64 {
    let mut r = FS_ABI1;
    if abi >= 2 {
        r |= FS_REFER;
    }
    if abi >= 3 {
        r |= FS_TRUNCATE;
    }
    if abi >= 5 {
        r |= FS_IOCTL_DEV;
    }
    r
}

/// The rights a rule on a non-directory may carry.
fn file_rights(abi: u32) -> u64 {
    fs_rights(abi) & (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV)
}

/// A Landlock ruleset being built (the fd is close-on-exec).
struct Ruleset {
    fd: OwnedFd,
    abi: u32,
}

impl Ruleset {
    fn new(abi: u32) -> io::Result<Ruleset> {
        let attr = RulesetAttr {
            handled_access_fs: fs_rights(abi),
            handled_access_net: 0,
            // ABI 6: signals only within the domain (not to the agent, not to other tasks).
            scoped: if abi >= 6 { SCOPE_SIGNAL } else { 0 },
        };
        // Older kernels take the shorter struct; the tail is zero for them anyway.
        let size = if abi >= 6 {
            std::mem::size_of::<RulesetAttr>()
        } else {
            std::mem::size_of::<u64>()
        };
        // SAFETY: a valid attribute struct of `size` bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                size,
                0u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this fd to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(Ruleset { fd, abi })
    }

    /// Grants every right on `path` and beneath (a file: the file rights). Symlinks
    /// get no rule: what they point to has its own (or is hidden).
    fn allow(&self, path: &Path) -> io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        let meta = file.metadata()?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let attr = PathBeneathAttr {
            allowed_access: if meta.is_dir() {
                fs_rights(self.abi)
            } else {
                file_rights(self.abi)
            },
            parent_fd: file.as_raw_fd(),
        };
        // SAFETY: a valid, packed rule struct and our own ruleset fd.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                LANDLOCK_RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Allows everything except `hidden` and what lies beneath: a rule for each entry
    /// of `dir` (an ancestor of `hidden`), descending into the entries that are
    /// themselves ancestors of it.
    fn allow_all_but(&self, dir: &Path, hidden: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path == hidden {
                continue;
            }
            let res = if hidden.starts_with(&path) {
                self.allow_all_but(&path, hidden)
            } else {
                self.allow(&path)
            };
            match res {
                Ok(()) => {}
                // Gone since the listing, or not ours to open: the task cannot use it
                // either way.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Sets no_new_privs when needed and enters the ruleset's domain. Runs in the child
/// between fork and exec: system calls only.
fn restrict_self(fd: RawFd, need_no_new_privs: bool) -> io::Result<()> {
    // SAFETY: plain system calls on integers.
    unsafe {
        if need_no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

// ---- cgroup v2 ----

/// Where the agent makes one cgroup per task process: its own cgroup v2 directory.
#[derive(Debug, Clone)]
struct CgroupBase {
    dir: PathBuf,
    /// `runops-<hash of the data dir>-`: the cgroups of this agent (and of its earlier
    /// runs on the same data dir), not of other agents in the same cgroup.
    prefix: String,
}

/// Longest a task cgroup may take to empty after `cgroup.kill` before it is left behind
/// (the kill is synchronous in the kernel; exiting takes a moment).
const CGROUP_EMPTY_WAIT: std::time::Duration = GROUP_EXIT_WAIT;

impl CgroupBase {
    /// The agent's own cgroup v2 directory, if a sub-cgroup with `cgroup.kill` can be
    /// made in it (root, or a delegated subtree).
    fn probe(data_dir: &Path) -> Result<CgroupBase, String> {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let rel = cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("no cgroup v2 hierarchy")?
            .trim()
            .to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        // Fields: id parent major:minor root mountpoint options... - fstype source ...
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.split_whitespace().next() == Some("cgroup2"))
                    .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
                    .flatten()
            })
            .ok_or("cgroup v2 is not mounted")?;
        let dir = mount.join(rel.trim_start_matches('/'));
        use sha2::Digest;
        let hash = sha2::Sha256::digest(data_dir.as_os_str().as_bytes());
        let prefix = format!("runops-{}-", hex::encode(&hash[..4]));
        let base = CgroupBase { dir, prefix };
        let probe = base
            .dir
            .join(format!("{}probe-{}", base.prefix, std::process::id()));
        std::fs::create_dir(&probe)
            .map_err(|e| format!("cannot create a cgroup in {}: {e}", base.dir.display()))?;
        let usable = probe.join("cgroup.kill").exists();
        let _ = std::fs::remove_dir(&probe);
        if !usable {
            return Err("the kernel has no cgroup.kill (Linux 5.14+)".into());
        }
        Ok(base)
    }

    /// Kills what the cgroups of an earlier run on this data dir still hold (the agent
    /// was SIGKILLed) and removes them.
    fn clean_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(&self.prefix) {
                let cg = TaskCgroup { dir: entry.path() };
                if cg.populated() {
                    tracing::info!(cgroup = %cg.dir.display(), "killing processes left by an earlier run");
                }
                cg.kill_and_remove_blocking();
            }
        }
    }
}

/// One task process's cgroup.
#[derive(Debug)]
struct TaskCgroup {
    dir: PathBuf,
}

impl TaskCgroup {
    fn populated(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .is_ok_and(|s| s.lines().any(|l| l.trim() == "populated 1"))
    }

    fn kill(&self) {
        if let Err(e) = std::fs::write(self.dir.join("cgroup.kill"), "1")
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot kill cgroup {}: {e}", self.dir.display());
        }
    }

    fn kill_and_remove_blocking(&self) {
        self.kill();
        let deadline = std::time::Instant::now() + CGROUP_EMPTY_WAIT;
        while self.populated() && std::time::Instant::now() < deadline {
            std::thread::sleep(GROUP_CHECK_INTERVAL);
        }
        reap_orphans();
        if let Err(e) = std::fs::remove_dir(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove cgroup {}: {e}", self.dir.display());
        }
    }
}

// ---- the agent's children ----

/// Task processes the agent spawned itself (tokio reaps those); every other zombie
/// child outside the agent's own process group is a re-parented orphan of a task.
static OWN_CHILDREN: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// How many processes each task id has running (for attributing orphans).
static RUNNING_TASKS: Mutex<Option<HashMap<i64, usize>>> = Mutex::new(None);

/// Spawns with `spawn` and records the child's pid as the agent's own, under one lock so
/// that [`reap_orphans`] never takes a status tokio waits for.
pub fn spawn_registered<T>(
    spawn: impl FnOnce() -> io::Result<T>,
    pid: impl Fn(&T) -> Option<u32>,
) -> io::Result<T> {
    let mut own = OWN_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    let child = spawn()?;
    if let Some(p) = pid(&child).and_then(|p| i32::try_from(p).ok()) {
        own.get_or_insert_default().insert(p);
    }
    Ok(child)
}

/// The process `pid` (spawned with [`spawn_registered`]) has been reaped.
pub fn unregister_child(pid: i32) {
    let mut own = OWN_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = own.as_mut() {
        set.remove(&pid);
    }
}

/// One line of `/proc/<pid>/stat`, the parts we use.
#[derive(Debug, Clone, Copy)]
struct ProcStat {
    pid: i32,
    ppid: i32,
    pgid: i32,
    zombie: bool,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: parse after the last `)`.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        ppid,
        pgid,
        zombie: state == "Z" || state == "X",
    })
}

fn all_procs() -> Vec<ProcStat> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// The agent's children: every thread's `/proc/self/task/<tid>/children` (an orphan is
/// re-parented to any thread of its subreaper). `None` when the kernel has no such file
/// (`CONFIG_PROC_CHILDREN`). A child forked or reaped during the read may be missed; the
/// next look finds it.
fn own_children() -> Option<Vec<i32>> {
    static LISTED: OnceLock<bool> = OnceLock::new();
    let listed = *LISTED.get_or_init(|| {
        Path::new(&format!("/proc/self/task/{}/children", std::process::id())).exists()
    });
    if !listed {
        return None;
    }
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread that just exited has no file any more, and no children.
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    Some(pids)
}

/// Reaps zombie children of the agent that are re-parented orphans of tasks (not the
/// agent's own spawns, which tokio reaps, and not in the agent's own process group,
/// where the `--check` probes run). Looks only at the agent's children where the kernel
/// lists them, else at every process (on a busy machine, hundreds of `/proc` reads).
pub fn reap_orphans() {
    let me = std::process::id() as i32;
    // SAFETY: getpgrp cannot fail.
    let my_pgid = unsafe { libc::getpgrp() };
    let candidates = match own_children() {
        Some(pids) => pids.into_iter().filter_map(proc_stat).collect(),
        None => all_procs(),
    };
    let own = OWN_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    for p in candidates {
        if p.ppid == me
            && p.zombie
            && p.pgid != my_pgid
            && !own.as_ref().is_some_and(|s| s.contains(&p.pid))
        {
            // SAFETY: waiting for one specific child of ours, without blocking.
            unsafe {
                libc::waitpid(p.pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
    }
}

fn environ_task_id(pid: i32) -> Option<i64> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0).find_map(|v| {
        std::str::from_utf8(v.strip_prefix(b"RUNOPS_TASK_ID=")?)
            .ok()?
            .parse()
            .ok()
    })
}

/// The processes left by task `task_id` when the agent cannot use cgroups: descendants
/// of the agent carrying the task's `RUNOPS_TASK_ID`, and re-parented orphans (children
/// of the agent that it did not spawn) carrying no marker of another running task, each
/// with everything beneath it.
fn escapees(task_id: i64) -> Vec<i32> {
    let me = std::process::id() as i32;
    // SAFETY: getpgrp cannot fail.
    let my_pgid = unsafe { libc::getpgrp() };
    let procs = all_procs();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in &procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let running: HashSet<i64> = RUNNING_TASKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|m| m.keys().copied().collect())
        .unwrap_or_default();
    let own: HashSet<i32> = OWN_CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    let by_pid: HashMap<i32, ProcStat> = procs.iter().map(|p| (p.pid, *p)).collect();
    let mut found: HashSet<i32> = HashSet::new();
    // Walk the agent's descendants (nothing else can be a task's).
    let mut stack: Vec<(i32, bool)> = vec![(me, false)];
    while let Some((pid, inherited)) = stack.pop() {
        let take = inherited
            || (pid != me && {
                let marker = environ_task_id(pid);
                let orphan = by_pid
                    .get(&pid)
                    .is_some_and(|p| p.ppid == me && p.pgid != my_pgid && !own.contains(&pid));
                marker == Some(task_id)
                    || (orphan && marker.is_none_or(|m| m == task_id || !running.contains(&m)))
            });
        if take && !by_pid.get(&pid).is_some_and(|p| p.zombie) {
            found.insert(pid);
        }
        for c in children.get(&pid).into_iter().flatten() {
            stack.push((*c, take));
        }
    }
    found.into_iter().collect()
}

/// Kills (SIGKILL) what an earlier run of the agent on this data dir left running (it was
/// SIGKILLed): every process whose `TMPDIR` is a task temp dir under one of `tmp_roots`.
/// Only this agent's tasks get such a TMPDIR, and none of this run has started yet.
/// Returns how many were killed. (With cgroups, [`Isolation::start`] empties the
/// earlier run's cgroups as well.)
pub fn kill_earlier_leftovers(tmp_roots: &[PathBuf]) -> usize {
    let prefixes: Vec<Vec<u8>> = tmp_roots
        .iter()
        .map(|r| {
            let mut p = b"TMPDIR=".to_vec();
            p.extend_from_slice(r.join("task-").as_os_str().as_bytes());
            p
        })
        .collect();
    let me = std::process::id() as i32;
    let mut killed = 0;
    for p in all_procs() {
        if p.pid == me || p.zombie {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{}/environ", p.pid)) else {
            continue;
        };
        let ours = env
            .split(|b| *b == 0)
            .any(|v| prefixes.iter().any(|pre| v.starts_with(pre)));
        // SAFETY: a signal to a process found by its environment, see above.
        if ours && unsafe { libc::kill(p.pid, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    killed
}

// ---- per-process preparation ----

/// What a task's process needs from [`Isolation`] between fork and exec, and the
/// clean-up once it ended. Hold it until [`SpawnGuard::finish`].
pub struct SpawnGuard {
    ruleset: Option<OwnedFd>,
    need_no_new_privs: bool,
    cgroup_procs: Option<std::fs::File>,
    /// The task cgroup's directory, for `clone3`'s `CLONE_INTO_CGROUP`.
    cgroup_dir: Option<std::fs::File>,
    cgroup: Option<TaskCgroup>,
    task_id: Option<i64>,
}

impl SpawnGuard {
    /// Makes the child join the task's cgroup and Landlock domain before exec. Call
    /// before anything that drops privileges (the cgroup move needs them).
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        if self.ruleset.is_none() && self.cgroup_procs.is_none() {
            return;
        }
        let ruleset = self.ruleset.as_ref().map(|f| f.as_raw_fd());
        let procs = self.cgroup_procs.as_ref().map(|f| f.as_raw_fd());
        let nnp = self.need_no_new_privs;
        let enter = move || -> io::Result<()> {
            if let Some(fd) = procs {
                // "0" moves the writing process; only write(2) here.
                // SAFETY: a valid fd and a 1-byte static buffer.
                if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(fd) = ruleset {
                restrict_self(fd, nnp)?;
            }
            Ok(())
        };
        // SAFETY: the closure makes system calls only, on fds opened before the fork.
        unsafe {
            cmd.pre_exec(enter);
        }
    }

    /// The task's cgroup for [`crate::spawn`]: its directory, where the child is born,
    /// and its `cgroup.procs` (open for writing), which the child writes `0` to before
    /// exec where it cannot be born there.
    pub fn cgroup_fds(&self) -> Option<crate::spawn::CgroupFds> {
        Some(crate::spawn::CgroupFds {
            dir: self.cgroup_dir.as_ref()?.as_raw_fd(),
            procs: self.cgroup_procs.as_ref()?.as_raw_fd(),
        })
    }

    /// The Landlock ruleset the child enters before exec ([`crate::spawn`]).
    pub fn landlock_fd(&self) -> Option<RawFd> {
        self.ruleset.as_ref().map(|f| f.as_raw_fd())
    }

    /// Whether the child must set `no_new_privs` before entering the Landlock domain.
    pub fn need_no_new_privs(&self) -> bool {
        self.need_no_new_privs
    }

    /// The process started: the fds are no longer needed in the agent.
    pub fn started(&mut self) {
        self.ruleset = None;
        self.cgroup_procs = None;
        self.cgroup_dir = None;
    }

    /// After the task's main process ended (exit, kill, timeout): kills whatever it
    /// left, in its cgroup or, without one, wherever the agent can find it.
    pub async fn finish(mut self) {
        self.started();
        let cgroup = self.cgroup.take();
        let task_id = self.task_id.take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(id) = task_id {
                leave_running(id);
            }
            match cgroup {
                Some(cg) => cg.kill_and_remove_blocking(),
                None => {
                    if let Some(id) = task_id {
                        kill_escapees_blocking(id);
                    }
                    reap_orphans();
                }
            }
        })
        .await;
    }
}

fn leave_running(task_id: i64) {
    let mut running = RUNNING_TASKS.lock().unwrap_or_else(|e| e.into_inner());
    let map = running.get_or_insert_default();
    if let Some(n) = map.get_mut(&task_id) {
        *n -= 1;
        if *n == 0 {
            map.remove(&task_id);
        }
    }
}

fn kill_escapees_blocking(task_id: i64) {
    let deadline = std::time::Instant::now() + GROUP_EXIT_WAIT;
    loop {
        let left = escapees(task_id);
        if left.is_empty() {
            return;
        }
        for pid in &left {
            // SAFETY: a signal to a process found as a descendant of ours.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        reap_orphans();
        if std::time::Instant::now() >= deadline {
            tracing::warn!(task_id, pids = ?left, "processes of a task survived SIGKILL");
            return;
        }
        std::thread::sleep(GROUP_CHECK_INTERVAL);
    }
}

impl Drop for SpawnGuard {
    fn drop(&mut self) {
        // Not finished (the spawn failed, or the caller gave up): leave no cgroup behind.
        if let Some(cg) = self.cgroup.take() {
            cg.kill_and_remove_blocking();
        }
        if let Some(id) = self.task_id.take() {
            leave_running(id);
        }
    }
}

/// What the agent does to keep tasks in their place; see the module docs.
#[derive(Debug, Default)]
pub struct Isolation {
    /// Landlock ABI, when tasks are put in Landlock domains.
    landlock: Option<u32>,
    /// Hidden from tasks by Landlock (the data dir, when tasks share the agent's uid).
    hidden: Option<PathBuf>,
    /// Tasks run as root with the agent's privileges: not restricted further.
    need_no_new_privs: bool,
    cgroups: Option<CgroupBase>,
}

/// When and how tasks run, for [`Isolation::start`].
pub enum TaskUser {
    /// Tasks run as the agent's own, non-root user.
    AgentsOwn,
    /// The agent is root and tasks drop to another, non-root user.
    Other,
    /// Tasks run as root (the agent is root and `RUN_AS_USER=root` or no user to drop to).
    Root,
}

impl Isolation {
    /// The start-up half (see the module docs); `data_dir` must be absolute and exist.
    pub fn start(data_dir: &Path, tasks: TaskUser) -> Isolation {
        // SAFETY: prctl on the calling process with integer arguments.
        let dumpable = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0;
        // SAFETY: as above.
        let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
        let abi = landlock_abi();
        let cgroups = CgroupBase::probe(data_dir);
        if let Ok(base) = &cgroups {
            base.clean_leftovers();
        }
        let (landlock, hidden, nnp) = match (abi, &tasks) {
            (Some(abi), TaskUser::AgentsOwn) => (Some(abi), Some(data_dir.to_path_buf()), true),
            (Some(abi), TaskUser::Other) => (Some(abi), None, false),
            _ => (None, None, false),
        };
        let landlock_says = match (abi, &tasks) {
            (None, _) => "no Landlock on this kernel: tasks under the agent's uid can read other tasks' /proc and the data dir".to_string(),
            (Some(v), TaskUser::Root) => format!("Landlock ABI {v} available but unused: tasks run as root"),
            (Some(v), TaskUser::AgentsOwn) => format!("Landlock ABI {v}: tasks are kept out of the data dir and other processes' /proc{}", if v >= 6 { " and cannot signal them" } else { "" }),
            (Some(v), TaskUser::Other) => format!("Landlock ABI {v}: tasks are kept out of other processes' /proc{}", if v >= 6 { " and cannot signal them" } else { "" }),
        };
        let cgroups_say = match &cgroups {
            Ok(b) => format!("a cgroup per task process under {}", b.dir.display()),
            Err(why) => format!(
                "no cgroups ({why}): leftover processes are found by the task's RUNOPS_TASK_ID among the agent's descendants (it is their subreaper)"
            ),
        };
        tracing::info!(
            "task isolation: agent non-dumpable: {}; subreaper: {}; {landlock_says}; {cgroups_say}",
            if dumpable { "yes" } else { "NO" },
            if subreaper { "yes" } else { "NO" },
        );
        Isolation {
            landlock,
            hidden,
            need_no_new_privs: nnp,
            cgroups: cgroups.ok(),
        }
    }

    /// Prepares one process of task `task_id` whose private temp dir is `tmp_dir`
    /// (blocking: lists directories, makes a cgroup).
    pub fn prepare(&self, task_id: Option<i64>, tmp_dir: Option<&Path>) -> io::Result<SpawnGuard> {
        let mut guard = SpawnGuard {
            ruleset: None,
            need_no_new_privs: self.need_no_new_privs,
            cgroup_procs: None,
            cgroup_dir: None,
            cgroup: None,
            task_id: None,
        };
        if let Some(id) = task_id {
            let mut running = RUNNING_TASKS.lock().unwrap_or_else(|e| e.into_inner());
            *running.get_or_insert_default().entry(id).or_default() += 1;
            guard.task_id = Some(id);
        }
        if let Some(abi) = self.landlock {
            let rs = Ruleset::new(abi)?;
            match &self.hidden {
                Some(hidden) => {
                    rs.allow_all_but(Path::new("/"), hidden)?;
                    if let Some(tmp) = tmp_dir.filter(|t| t.starts_with(hidden)) {
                        rs.allow(tmp)?;
                    }
                }
                None => rs.allow(Path::new("/"))?,
            }
            guard.ruleset = Some(rs.fd);
        }
        if let Some(base) = &self.cgroups {
            let mut rnd = [0u8; 6];
            getrandom::fill(&mut rnd).map_err(io::Error::other)?;
            let name = format!(
                "{}task-{}-{}",
                base.prefix,
                task_id.unwrap_or_default(),
                hex::encode(rnd)
            );
            let dir = base.dir.join(name);
            std::fs::create_dir(&dir)?;
            let cg = TaskCgroup { dir };
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(cg.dir.join("cgroup.procs"));
            let dir = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&cg.dir);
            guard.cgroup = Some(cg);
            guard.cgroup_procs = Some(procs?);
            guard.cgroup_dir = Some(dir?);
        }
        Ok(guard)
    }
}

/// A shared [`Isolation`] (tests and embedders build `BaseEnv` without one).
pub type SharedIsolation = Arc<Isolation>;
