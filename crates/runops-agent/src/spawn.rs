//! Starting a task's process without copying the agent: `clone(CLONE_VM | CLONE_VFORK)`
//! with the confinement and the user switch done in the child, then `execve`.
//!
//! The standard library can start a process with `posix_spawn` (no copy of the parent's
//! page tables) only when nothing has to happen between fork and exec; a task that runs
//! as another user, joins a cgroup or enters a Landlock domain needs a full `fork` of
//! the agent there, which was most of the agent's CPU per task (see BENCHMARKS.md,
//! issue 20). [`spawn`] does what glibc's `posix_spawn` does, plus those steps: the
//! child shares the agent's memory and runs on a stack of its own until `execve`
//! replaces its memory, while the thread that called `clone` waits (`CLONE_VFORK`).
//!
//! # Why the child is safe
//!
//! The child shares the agent's memory, and the agent's other threads keep running, so
//! everything it does before `execve` must be safe there:
//! - It allocates nothing and takes no lock: the parent prepares every string, pointer
//!   array and descriptor ([`ChildPlan`]) before `clone`, and the child only reads them
//!   (the calling thread is stopped, so they cannot change or be freed under it).
//! - It makes system calls only, and the credential changes are raw `syscall`s:
//!   glibc's `setgroups`/`setgid`/`setuid` change the credentials of *every thread of the
//!   process* by signalling the threads in glibc's thread list, which in a `CLONE_VM`
//!   child is the agent's list: they would switch the agent's own threads. The raw
//!   system calls change the calling task's credentials only; the kernel keeps them per
//!   task, so the agent keeps its own.
//! - No signal handler of the agent runs in it: the parent blocks every signal around
//!   `clone`; the child resets every caught signal to its default and only then restores
//!   an empty mask (as `std` does for its children), right before `execve`.
//! - It reports a failure by storing the `errno` in an atomic of the plan and exits with
//!   `_exit` (no atexit handlers, no stdio flushing); the parent reads it once `clone`
//!   returns, which is after the child's `execve` or exit.
//! - It touches only its own stack, a fresh mapping with a guard page below it.
//!
//! The steps are those of `std`'s `Command` with the agent's `pre_exec` hooks, in the same
//! order: standard streams, working directory (still as root), own process group,
//! cgroup, Landlock, then supplementary groups, gid and uid (after `setresuid` to a
//! non-root uid the kernel clears every capability), and `execve` with exactly the
//! task's environment. The program is the path [`crate::process`] found on the child's
//! PATH; a name without a `/` was not found there and fails as "not found".
//!
//! # Born in its cgroup
//!
//! A task's process starts inside its own cgroup: on x86-64, [`spawn`] uses `clone3`
//! with `CLONE_INTO_CGROUP` (Linux 5.7+). Moving a running process into a cgroup
//! instead (writing to `cgroup.procs`) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period: measured
//! here at 5–24 ms per task (p50 12 ms) when tasks come one at a time, during which the
//! agent's thread waited in `clone` and the task had not started (see BENCHMARKS.md,
//! "Born in its cgroup"). A kernel or seccomp policy without `clone3` (`ENOSYS`,
//! `E2BIG`, `EINVAL`, `EPERM`) gets the `clone` above, with the child writing `0` to
//! `cgroup.procs` as before; other architectures always do.
//!
//! The agent waits for the child through a pidfd (`CLONE_PIDFD`, readable when the
//! process exits) registered with tokio, and reaps it with `waitpid`. Kernels without
//! pidfds (before Linux 5.3), or where seccomp refuses them, keep the standard
//! library's spawn ([`supported`] is false).

use crate::run_as::RunAs;
use std::ffi::{CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use tokio::io::unix::AsyncFd;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

/// Size of the child's stack. It runs a few system calls in one frame (the largest
/// local is a `sigaction`); 64 KiB leaves a wide margin even in debug builds.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Highest signal number to reset in the child (glibc's `_NSIG` - 1 on Linux).
const MAX_SIGNAL: c_int = 64;

/// What a task's process needs besides its command line and environment.
pub struct TaskCommand<'a> {
    /// Absolute (or relative with a `/`) path of the program.
    pub program: &'a Path,
    pub args: &'a [String],
    /// The whole environment of the child, nothing inherited.
    pub env: Vec<(&'a str, &'a str)>,
    pub cwd: &'a Path,
    /// A pipe for stdin (else `/dev/null`).
    pub stdin_piped: bool,
    /// The task's cgroup: its directory (the child is born there with `clone3`) and its
    /// `cgroup.procs`, open for writing (without `clone3`, the child writes `0` to it).
    pub cgroup: Option<CgroupFds>,
    /// A Landlock ruleset the child enters.
    pub landlock: Option<RawFd>,
    /// Set `no_new_privs` before entering the Landlock domain (needed without root).
    pub no_new_privs: bool,
    /// Who the child becomes (the agent is root).
    pub user: Option<&'a RunAs>,
}

/// The two descriptors of a task's cgroup, see [`TaskCommand::cgroup`].
#[derive(Clone, Copy)]
pub struct CgroupFds {
    pub dir: RawFd,
    pub procs: RawFd,
}

/// Whether [`spawn`] can be used here: the kernel gives pidfds (Linux 5.3+) and nothing
/// (seccomp) refuses them. Probed once.
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: pidfd_open on our own pid with no flags; the fd is closed right away.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        if fd < 0 {
            return false;
        }
        // SAFETY: the kernel just gave us this fd.
        drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        true
    })
}

/// Everything the child reads, prepared by the parent: raw pointers into the parent's
/// memory, which stays put while the parent waits in `clone` (`CLONE_VFORK`).
struct ChildPlan {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    /// Descriptors that become the child's 0, 1 and 2.
    stdio: [RawFd; 3],
    cgroup_procs: RawFd,
    landlock: RawFd,
    no_new_privs: bool,
    /// `Some` when the child switches users.
    ids: Option<(libc::uid_t, libc::gid_t)>,
    groups: *const libc::gid_t,
    groups_len: usize,
    /// The child's errno when a step failed (0: it reached `execve`, which succeeded).
    error: AtomicI32,
}

/// A started task process: its pid, its pidfd, the parent's ends of its pipes.
pub struct TaskChild {
    pid: libc::pid_t,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

/// Starts `cmd` (see the module docs). Call only when [`supported`].
pub fn spawn(cmd: &TaskCommand) -> io::Result<TaskChild> {
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte"))
    };
    let program_bytes = cmd.program.as_os_str().as_bytes();
    if !program_bytes.contains(&b'/') {
        // Not found on the child's PATH; execve would look in the working directory.
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let program = cstr(program_bytes)?;
    let mut args = vec![program.clone()];
    for a in cmd.args {
        args.push(cstr(a.as_bytes())?);
    }
    let mut vars = Vec::with_capacity(cmd.env.len());
    for (k, v) in &cmd.env {
        vars.push(cstr(format!("{k}={v}").as_bytes())?);
    }
    let argv = null_terminated(&args);
    let envp = null_terminated(&vars);
    let cwd = cstr(cmd.cwd.as_os_str().as_bytes())?;

    let (stdin_parent, stdin_child) = if cmd.stdin_piped {
        let (r, w) = pipe()?;
        (Some(w), r)
    } else {
        let null = std::fs::File::open("/dev/null")?;
        (None, OwnedFd::from(null))
    };
    let (stdout_parent, stdout_child) = pipe()?;
    let (stderr_parent, stderr_child) = pipe()?;

    let groups: &[libc::gid_t] = cmd.user.map(|u| u.groups.as_slice()).unwrap_or(&[]);
    let mut plan = ChildPlan {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        stdio: [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ],
        // Set below when the child has to join its cgroup itself.
        cgroup_procs: -1,
        landlock: cmd.landlock.unwrap_or(-1),
        no_new_privs: cmd.no_new_privs,
        ids: cmd.user.map(|u| (u.uid, u.gid)),
        groups: groups.as_ptr(),
        groups_len: groups.len(),
        error: AtomicI32::new(0),
    };
    let stack = ChildStack::new()?;
    let mut pidfd: c_int = -1;
    let pid = {
        let _blocked = BlockedSignals::all();
        let mut pid = -1;
        if let Some(cg) = cmd.cgroup
            && CLONE3_INTO_CGROUP.load(Ordering::Relaxed)
        {
            // SAFETY: as for `clone_vfork` below; the child is born in `cg.dir` and
            // writes nothing to `cgroup.procs` (`plan.cgroup_procs` is -1).
            pid = unsafe { clone3_into_cgroup(&plan, &stack, cg.dir, &mut pidfd) };
            if pid < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // No clone3, or no CLONE_INTO_CGROUP: never again.
                    Some(libc::ENOSYS | libc::E2BIG) => {
                        CLONE3_INTO_CGROUP.store(false, Ordering::Relaxed);
                        tracing::info!(
                            "no clone3 with CLONE_INTO_CGROUP ({e}): task processes join their cgroup after starting"
                        );
                    }
                    // Refused (a seccomp policy, an unusual cgroup): this time, the old way.
                    Some(libc::EINVAL | libc::EPERM) => {}
                    _ => return Err(e),
                }
            }
        }
        if pid < 0 {
            plan.cgroup_procs = cmd.cgroup.map_or(-1, |cg| cg.procs);
            // SAFETY: see `clone_vfork`.
            pid = unsafe { clone_vfork(&plan, &stack, &mut pidfd) };
        }
        pid
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CLONE_PIDFD gave us this fd (close-on-exec).
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(stack);
    let child_errno = plan.error.load(Ordering::SeqCst);
    if child_errno != 0 {
        // The child exited without exec: reap it (it is gone or about to be) and report.
        let mut status = 0;
        // SAFETY: our own child, not reaped by anyone else (see `isolation::spawn_registered`).
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
        return Err(io::Error::from_raw_os_error(child_errno));
    }
    drop((stdin_child, stdout_child, stderr_child));
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged for as long as it lives.
    let registered =
        unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) };
    let pidfd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            let e = io::Error::from(e);
            // Cannot watch it: do not leave it running unwatched.
            // SAFETY: our own, unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e);
        }
    };
    Ok(TaskChild {
        pid,
        pidfd,
        status: None,
        stdin: match stdin_parent {
            Some(fd) => Some(ChildStdin::from_std(std::process::ChildStdin::from(fd))?),
            None => None,
        },
        stdout: Some(ChildStdout::from_std(std::process::ChildStdout::from(
            stdout_parent,
        ))?),
        stderr: Some(ChildStderr::from_std(std::process::ChildStderr::from(
            stderr_parent,
        ))?),
    })
}

/// Whether `clone3` with `CLONE_INTO_CGROUP` is worth trying (false once the kernel said
/// it has neither).
static CLONE3_INTO_CGROUP: AtomicBool = AtomicBool::new(cfg!(target_arch = "x86_64"));

/// `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` running `child_main(plan)` on `stack`;
/// the child's pid, or -1 with errno set.
///
/// # Safety
/// `child_main` runs on `stack` (ours, unused by anyone else) and only reads `plan`,
/// which outlives the call: with CLONE_VFORK this thread waits in `clone` until the
/// child has called execve or exited. CLONE_PIDFD stores the pidfd in `pidfd` (the
/// parent_tid argument; no TLS, no child_tid). Every signal must be blocked on the
/// calling thread. See the module docs for the child's side.
unsafe fn clone_vfork(plan: &ChildPlan, stack: &ChildStack, pidfd: &mut c_int) -> libc::pid_t {
    // SAFETY: see above.
    unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (plan as *const ChildPlan).cast_mut().cast::<c_void>(),
            pidfd as *mut c_int,
            std::ptr::null_mut::<c_void>(),
            std::ptr::null_mut::<c_int>(),
        )
    }
}

/// `struct clone_args` of linux/sched.h, up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[cfg(target_arch = "x86_64")]
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

#[cfg(target_arch = "x86_64")]
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`clone_vfork`] with the child born in the cgroup whose directory is `cgroup_dir`
/// (`clone3` with `CLONE_INTO_CGROUP`); -1 with errno set when the kernel refuses.
///
/// # Safety
/// As for [`clone_vfork`]. glibc exports no `clone3`, so the system call is made here:
/// the kernel starts the child right after the `syscall` instruction with the stack
/// pointer at the top of `stack` (page-aligned) and every other register as the
/// parent's but `rax` (0); the child calls `child_main(plan)` from two callee-saved
/// registers, which never returns (it execs or `_exit`s), and would exit if it did.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_into_cgroup(
    plan: &ChildPlan,
    stack: &ChildStack,
    cgroup_dir: RawFd,
    pidfd: &mut c_int,
) -> libc::pid_t {
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64 | CLONE_INTO_CGROUP,
        pidfd: pidfd as *mut c_int as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.base as u64,
        stack_size: stack.len as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup_dir as u64,
    };
    let entry: extern "C" fn(*mut c_void) -> c_int = child_main;
    let ret: i64;
    // SAFETY: see above. The parent's path through the block is one system call (which
    // clobbers rcx and r11); the child's never leaves it and runs on its own stack.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            // The child: no caller frame; rsp is 16-aligned, as `call` expects.
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") entry,
            in("r13") (plan as *const ChildPlan).cast_mut().cast::<c_void>(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        // SAFETY: glibc's errno location is always valid.
        unsafe { *libc::__errno_location() = (-ret) as c_int };
        return -1;
    }
    ret as libc::pid_t
}

/// Other architectures: never called ([`CLONE3_INTO_CGROUP`] is false).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_into_cgroup(
    _plan: &ChildPlan,
    _stack: &ChildStack,
    _cgroup_dir: RawFd,
    _pidfd: &mut c_int,
) -> libc::pid_t {
    // SAFETY: glibc's errno location is always valid.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

impl TaskChild {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// The exit status when the process has ended (it is then reaped), else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        loop {
            // SAFETY: our own child; it stays unreaped (its pid unused) until this succeeds.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) };
            if r == 0 {
                return Ok(None);
            }
            if r == self.pid {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(Some(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Waits for the process to end and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            // The pidfd turns readable when the process exits. Readiness is cleared before
            // looking again, so an exit in between is seen by that look.
            self.pidfd.readable().await?.clear_ready();
        }
    }
}

impl Drop for TaskChild {
    /// Like tokio's `kill_on_drop`: a process nobody waits for any more is killed, and
    /// reaped so that it leaves no zombie.
    fn drop(&mut self) {
        if self.status.is_some() || matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: our own, unreaped child (the pid cannot have been reused).
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
        let pid = self.pid;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                drop(rt.spawn_blocking(move || {
                    // SAFETY: as above; this is the only wait left for it.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                }));
            }
            // SAFETY: as above; SIGKILLed, so this returns once the kernel has torn it down.
            Err(_) => unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            },
        }
    }
}

/// A NULL-terminated array of pointers into `strings` (argv, envp).
fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us these two fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Every signal blocked on the calling thread while this lives (the previous mask is
/// restored on drop), so that no handler of the agent runs in the child before it has
/// reset them.
struct BlockedSignals {
    previous: libc::sigset_t,
}

impl BlockedSignals {
    fn all() -> BlockedSignals {
        // SAFETY: sigset_t is plain data; both sets are valid for the calls.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut previous);
            BlockedSignals { previous }
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `all` on this same thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

/// The child's stack: a private mapping with an inaccessible guard page at its low end
/// (stacks grow down on every architecture Linux runs the agent on).
struct ChildStack {
    base: *mut c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = CHILD_STACK_BYTES + page;
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the first page of our own mapping.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the end of the mapping (page-aligned, so 16-aligned).
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of our mapping, not dereferenced.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the child no longer runs on it (it exec'd or exited
        // before `clone` returned).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

// ---- the child (see "Why the child is safe" above) ----

#[cfg(any(target_arch = "x86", target_arch = "arm"))]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups32;
#[cfg(any(target_arch = "x86", target_arch = "arm"))]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid32;
#[cfg(any(target_arch = "x86", target_arch = "arm"))]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid32;
#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups;
#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid;
#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid;

extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildPlan`, alive and unchanged while we run.
    let plan = unsafe { &*(arg as *const ChildPlan) };
    // SAFETY: see the module docs; `child_steps` returns only when a step failed.
    let errno = unsafe { child_steps(plan) };
    plan.error.store(
        if errno == 0 { libc::EINVAL } else { errno },
        Ordering::SeqCst,
    );
    // SAFETY: ends the child without running anything of the parent's (no atexit).
    unsafe { libc::_exit(127) }
}

/// The calling thread's errno (in the child: the parent thread's errno slot, which the
/// parent does not read after a successful `clone`).
fn errno() -> c_int {
    // SAFETY: glibc's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

/// The child's steps; returns the errno of the first that failed (execve included).
///
/// # Safety
/// Only in the child of [`spawn`]'s `clone`, with `plan` prepared there.
unsafe fn child_steps(plan: &ChildPlan) -> c_int {
    // SAFETY (whole body): system calls on descriptors, strings and arrays the parent
    // prepared; nothing here allocates, locks, or touches the parent's threads.
    unsafe {
        // Standard streams. The agent always has 0, 1 and 2 open (std opens /dev/null on
        // any that are closed), so our descriptors are above 2; dup2 clears close-on-exec.
        for (target, fd) in (0..).zip(plan.stdio) {
            if fd == target {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return errno();
                }
            } else if libc::dup2(fd, target) < 0 {
                return errno();
            }
        }
        if libc::chdir(plan.cwd) != 0 {
            return errno();
        }
        // Its own process group, which the agent kills as a whole.
        if libc::setpgid(0, 0) != 0 {
            return errno();
        }
        // Caught signals back to their default (the handlers are the agent's code); SIGPIPE
        // to its default as std does (Rust programs ignore it). Other ignored signals stay
        // ignored, as with std. Numbers glibc reserves fail with EINVAL: skipped.
        for sig in 1..=MAX_SIGNAL {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if sig == libc::SIGPIPE
                || (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                if libc::sigaction(sig, &dfl, std::ptr::null_mut()) != 0 {
                    return errno();
                }
            }
        }
        // Confinement, while the child still has the privileges to join the cgroup.
        if plan.cgroup_procs >= 0 && libc::write(plan.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            return errno();
        }
        if plan.landlock >= 0 {
            if plan.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return errno();
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, plan.landlock, 0u32) != 0 {
                return errno();
            }
        }
        // The user switch, raw system calls (this task's credentials only): groups, then
        // gid, then uid (after the uid switch the others are no longer allowed).
        if let Some((uid, gid)) = plan.ids
            && (libc::syscall(SYS_SETGROUPS, plan.groups_len, plan.groups) != 0
                || libc::syscall(SYS_SETRESGID, gid, gid, gid) != 0
                || libc::syscall(SYS_SETRESUID, uid, uid, uid) != 0)
        {
            return errno();
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return errno();
        }
        libc::execve(plan.program, plan.argv, plan.envp);
        errno()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn run(cmd: &TaskCommand<'_>, input: &[u8]) -> (ExitStatus, String, String) {
        let mut child = spawn(cmd).expect("spawn");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input).await.unwrap();
        }
        let (mut out, mut err) = (String::new(), String::new());
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (a, b) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        a.unwrap();
        b.unwrap();
        (child.wait().await.unwrap(), out, err)
    }

    fn sh<'a>(script: &'a [String], cwd: &'a Path) -> TaskCommand<'a> {
        TaskCommand {
            program: Path::new("/bin/sh"),
            args: script,
            env: vec![("PATH", "/usr/bin:/bin"), ("ONLY", "this")],
            cwd,
            stdin_piped: false,
            cgroup: None,
            landlock: None,
            no_new_privs: false,
            user: None,
        }
    }

    #[tokio::test]
    async fn a_child_gets_exactly_its_environment_cwd_group_and_pipes() {
        if !supported() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = vec![
            "-c".to_string(),
            "env | sort; pwd; ps -o pgid= -p $$ | tr -d ' '; echo $$; echo oops >&2; grep -E '^(SigBlk|SigCgt)' /proc/self/status; exit 3"
                .to_string(),
        ];
        let cmd = sh(&script, dir.path());
        let mut child = spawn(&cmd).unwrap();
        let pid = child.id();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        let lines: Vec<&str> = out.lines().collect();
        let env: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                l.contains('=')
                    && !l.starts_with("PWD=")
                    && !l.starts_with("SHLVL=")
                    && !l.starts_with('_')
            })
            .collect();
        assert_eq!(env, ["ONLY=this", "PATH=/usr/bin:/bin"], "{out}");
        let cwd = std::fs::canonicalize(dir.path()).unwrap();
        assert!(lines.contains(&cwd.to_str().unwrap()), "{out}");
        // Its own process group, led by itself.
        assert!(lines.contains(&pid.to_string().as_str()), "{out}");
        assert_eq!(
            lines.iter().filter(|l| **l == pid.to_string()).count(),
            2,
            "pgid and pid: {out}"
        );
        // Nothing blocked, no handler of ours.
        assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
        assert_eq!(err, "oops\n");
    }

    #[tokio::test]
    async fn stdin_is_piped_when_asked_and_exit_signals_are_reported() {
        if !supported() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = vec![
            "-c".to_string(),
            "read line; echo got $line; kill -TERM $$".to_string(),
        ];
        let mut cmd = sh(&script, dir.path());
        cmd.stdin_piped = true;
        let (status, out, _) = run(&cmd, b"hello\n").await;
        assert_eq!(out, "got hello\n");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[tokio::test]
    async fn a_missing_program_or_cwd_fails_the_spawn() {
        if !supported() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let args = vec![];
        let mut cmd = sh(&args, dir.path());
        cmd.program = Path::new("/nonexistent/tool");
        let e = spawn(&cmd).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        cmd.program = Path::new("tool-not-on-path");
        let e = spawn(&cmd).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let gone = dir.path().join("gone");
        cmd.program = Path::new("/bin/sh");
        cmd.cwd = &gone;
        let e = spawn(&cmd).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    /// A fresh cgroup v2 directory under this process's own cgroup, or `None` where
    /// cgroup v2 is not mounted or not writable (the test then has nothing to check).
    fn scratch_cgroup() -> Option<PathBuf> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        let root = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_string())
        })?;
        let dir = Path::new(&root)
            .join(rel.trim_start_matches('/'))
            .join(format!("runops-spawn-test-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some(dir)
    }

    #[tokio::test]
    async fn the_child_starts_in_its_cgroup_with_clone3_and_without() {
        if !supported() {
            return;
        }
        let Some(cg) = scratch_cgroup() else {
            eprintln!("no writable cgroup v2 here: nothing to check");
            return;
        };
        let dir_fd = std::fs::File::open(&cg).unwrap();
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(cg.join("cgroup.procs"))
            .unwrap();
        let fds = CgroupFds {
            dir: dir_fd.as_raw_fd(),
            procs: procs.as_raw_fd(),
        };
        let name = cg.file_name().unwrap().to_str().unwrap().to_string();
        let tmp = tempfile::tempdir().unwrap();
        let script = vec!["-c".to_string(), "cat /proc/self/cgroup".to_string()];
        let mut cmd = sh(&script, tmp.path());
        let x86 = cfg!(target_arch = "x86_64");
        for born_there in [x86, false] {
            CLONE3_INTO_CGROUP.store(born_there, Ordering::Relaxed);
            // Born there: no `cgroup.procs` to fall back on, so only clone3 can have put
            // it in.
            cmd.cgroup = Some(CgroupFds {
                procs: if born_there { -1 } else { fds.procs },
                ..fds
            });
            let (status, out, err) = run(&cmd, b"").await;
            assert!(status.success(), "{out}{err}");
            let line = out
                .lines()
                .find(|l| l.starts_with("0::"))
                .unwrap_or_default();
            assert!(
                line.ends_with(&format!("/{name}")),
                "clone3 {born_there}: {out}"
            );
        }
        CLONE3_INTO_CGROUP.store(x86, Ordering::Relaxed);
        std::fs::remove_dir(&cg).unwrap();
    }

    #[tokio::test]
    async fn as_root_the_child_takes_the_users_ids_and_groups_and_no_capability() {
        if !supported() || !nix::unistd::geteuid().is_root() {
            return;
        }
        let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
            return;
        };
        let user = RunAs {
            name: "nobody".into(),
            uid: nobody.uid.as_raw(),
            gid: nobody.gid.as_raw(),
            // A supplementary group besides the primary one.
            groups: vec![nobody.gid.as_raw(), 4242],
            home: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let script = vec![
            "-c".to_string(),
            "id -u; id -g; id -G; grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapAmb)' /proc/self/status".to_string(),
        ];
        let mut cmd = sh(&script, dir.path());
        cmd.user = Some(&user);
        let (status, out, err) = run(&cmd, b"").await;
        assert!(status.success(), "{out}{err}");
        let (u, g) = (user.uid, user.gid);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], u.to_string());
        assert_eq!(lines[1], g.to_string());
        let mut groups: Vec<&str> = lines[2].split(' ').collect();
        groups.sort();
        let mut want = vec![g.to_string(), "4242".to_string()];
        want.sort();
        want.dedup();
        assert_eq!(groups, want, "{out}");
        assert!(out.contains(&format!("Uid:\t{u}\t{u}\t{u}\t{u}")), "{out}");
        assert!(out.contains(&format!("Gid:\t{g}\t{g}\t{g}\t{g}")), "{out}");
        for cap in ["CapPrm", "CapEff", "CapAmb"] {
            assert!(out.contains(&format!("{cap}:\t0000000000000000")), "{out}");
        }
        // The agent (this process, all its threads) is still root.
        assert!(nix::unistd::geteuid().is_root() && nix::unistd::getuid().is_root());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status.contains("Uid:\t0\t0\t0\t0"), "{status}");
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let s = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            assert!(
                s.contains("Uid:\t0\t0\t0\t0") && s.contains("Gid:\t0\t0\t0\t0"),
                "{s}"
            );
        }
    }
}
