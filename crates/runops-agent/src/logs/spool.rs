//! The on-disk spool: `<data_dir>/spool/<task_id>/` holds `log` (redacted bytes only),
//! `acked` (how many of them the server has) and `result.json` once the task finished.
//! A task's directory is removed when the server has acknowledged its result, so what
//! is left at start-up is exactly what still has to be reported.

use runops_proto::{FailureReason, TaskStatus};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The message of a task found without a result at start-up.
pub const RESTARTED_MESSAGE: &str = "the agent restarted while the task ran; it was not re-run";

/// A finished task's result, as it will be reported (the session id is added then).
pub use runops_proto::agent::TaskResult;

/// Creates `dir` (and parents) readable by the agent's user only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// How a task's spool log is opened: appended to, created 0600 (readable by the agent's
/// user only) when missing.
fn log_append_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true).mode(0o600);
    options
}

/// The spool directory of an agent.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Opens (creating it 0700) `<data_dir>/spool`.
    pub fn open(data_dir: &Path) -> io::Result<Spool> {
        let root = data_dir.join("spool");
        create_private_dir(&root)?;
        Ok(Spool { root })
    }

    /// `<data_dir>/spool`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn task(&self, task_id: i64) -> TaskSpool {
        TaskSpool {
            task_id,
            dir: self.root.join(task_id.to_string()),
        }
    }

    /// Task ids that still have a spool directory.
    pub async fn pending(&self) -> io::Result<Vec<i64>> {
        let mut ids = Vec::new();
        let mut rd = tokio::fs::read_dir(&self.root).await?;
        while let Some(entry) = rd.next_entry().await? {
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The result to report for a task found in the spool at start-up: its stored one,
    /// or, when it has none (it was running when the agent died), a `failure`/
    /// `agent-error` one saying so, also appended to its log.
    pub async fn recover(&self, task_id: i64) -> io::Result<TaskResult> {
        let task = self.task(task_id);
        if let Some(result) = task.result().await? {
            return Ok(result);
        }
        // Whatever the task left running must not outlive the agent that ran it.
        for pgid in task.groups().await {
            if crate::process::kill_leftover_group(pgid, task_id) {
                tracing::info!(
                    task_id,
                    pgid,
                    "killed processes left by the interrupted task"
                );
            }
        }
        let line = format!("runops: {RESTARTED_MESSAGE}\n");
        let mut file = task.open_log_for_append().await?;
        // A log cut in the middle of a line gets the note on its own line.
        let len = file.metadata().await?.len();
        if len > 0 && task.read_chunk(len - 1, 1).await?.last() != Some(&b'\n') {
            file.write_all(b"\n").await?;
        }
        file.write_all(line.as_bytes()).await?;
        file.flush().await?;
        file.sync_data().await?;
        let result = TaskResult {
            status: TaskStatus::Failure,
            exit_code: None,
            failure_reason: Some(FailureReason::AgentError),
            failure_message: Some(RESTARTED_MESSAGE.to_string()),
            redacted: false,
            log_size: file.metadata().await?.len(),
            elapsed_ms: 0,
            log_location: None,
        };
        task.write_result(&result).await?;
        Ok(result)
    }
}

/// The spool directory of one task.
#[derive(Debug, Clone)]
pub struct TaskSpool {
    task_id: i64,
    dir: PathBuf,
}

impl TaskSpool {
    pub fn task_id(&self) -> i64 {
        self.task_id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Process groups the task started, one id per line.
    pub fn groups_path(&self) -> PathBuf {
        self.dir.join("groups")
    }

    /// The process groups the task recorded.
    pub async fn groups(&self) -> Vec<i32> {
        tokio::fs::read_to_string(self.groups_path())
            .await
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Creates the directory (0700) and an empty log (0600), open for appending, in one
    /// hand-off to a blocking thread (this is on every task's way to its start).
    pub async fn create(&self) -> io::Result<std::fs::File> {
        let (dir, log) = (self.dir.clone(), self.log_path());
        tokio::task::spawn_blocking(move || {
            create_private_dir(&dir)?;
            log_append_options().open(log)
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn open_log_for_append(&self) -> io::Result<tokio::fs::File> {
        tokio::fs::OpenOptions::from(log_append_options())
            .open(self.log_path())
            .await
    }

    pub async fn log_len(&self) -> io::Result<u64> {
        Ok(tokio::fs::metadata(self.log_path()).await?.len())
    }

    /// Up to `max` bytes of the log from `offset`.
    pub async fn read_chunk(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        self.log_reader().await?.read_chunk(offset, max).await
    }

    /// Opens the log for reading chunks (the uploader keeps it open while the task runs).
    pub async fn log_reader(&self) -> io::Result<LogReader> {
        let path = self.log_path();
        let file = tokio::task::spawn_blocking(move || std::fs::File::open(path))
            .await
            .map_err(io::Error::other)??;
        Ok(LogReader {
            file: std::sync::Arc::new(file),
        })
    }

    /// How many log bytes the server has acknowledged (0 when unknown: resending is safe).
    pub async fn acked(&self) -> u64 {
        match tokio::fs::read_to_string(self.dir.join("acked")).await {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Records the server's stored size. Not synced: the offset only spares a resend
    /// after a restart (resends are harmless), so a value lost in a crash costs nothing,
    /// where a sync per uploaded chunk cost a disk flush per MiB of log.
    pub async fn set_acked(&self, stored: u64) -> io::Result<()> {
        write_replacing(&self.dir, "acked", stored.to_string().as_bytes(), false).await
    }

    /// The stored result; `None` when there is none or it is unreadable.
    pub async fn result(&self) -> io::Result<Option<TaskResult>> {
        match tokio::fs::read(self.dir.join("result.json")).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn write_result(&self, result: &TaskResult) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(result).map_err(io::Error::other)?;
        write_replacing(&self.dir, "result.json", &bytes, true).await
    }

    /// Deletes the task's directory (its result was acknowledged).
    pub async fn remove(&self) -> io::Result<()> {
        match tokio::fs::remove_dir_all(&self.dir).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A task's spool log open for reading: one file descriptor for all the chunks of an
/// upload instead of an open, a seek and buffered reads per chunk.
#[derive(Debug)]
pub struct LogReader {
    file: std::sync::Arc<std::fs::File>,
}

impl LogReader {
    /// Up to `max` bytes of the log from `offset`, read straight into a buffer of that
    /// size (fewer at the end of the file). `&mut`: the reads share the file's position.
    pub async fn read_chunk(&mut self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek};
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = &*file;
            file.seek(io::SeekFrom::Start(offset))?;
            let mut buf = Vec::with_capacity(max);
            file.take(max as u64).read_to_end(&mut buf)?;
            Ok(buf)
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Writes `dir/name` so that a crash leaves the old content, the new one, or (when not
/// `durable`, the file is a hint) possibly neither; a durable write is synced before it
/// replaces the old one.
async fn write_replacing(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .await?;
    file.write_all(bytes).await?;
    // tokio's File writes in the background and reports a failed write (a full disk)
    // only to the next write or flush, never to `sync_data`: without this flush a
    // truncated file would be renamed into place as if complete.
    file.flush().await?;
    if durable {
        file.sync_data().await?;
    }
    drop(file);
    tokio::fs::rename(&tmp, dir.join(name)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(log_size: u64) -> TaskResult {
        TaskResult {
            status: TaskStatus::Success,
            exit_code: Some(0),
            failure_reason: None,
            failure_message: None,
            redacted: true,
            log_size,
            elapsed_ms: 12,
            log_location: None,
        }
    }

    #[tokio::test]
    async fn spool_keeps_log_acked_offset_and_result() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let task = spool.task(5);
        let mut f = tokio::fs::File::from_std(task.create().await.unwrap());
        f.write_all(b"hello world").await.unwrap();
        f.flush().await.unwrap();
        assert_eq!(task.read_chunk(6, 100).await.unwrap(), b"world");
        assert_eq!(task.acked().await, 0);
        task.set_acked(6).await.unwrap();
        assert_eq!(task.acked().await, 6);
        assert_eq!(task.result().await.unwrap(), None);
        task.write_result(&result(11)).await.unwrap();
        assert_eq!(task.result().await.unwrap(), Some(result(11)));
        let mode = std::fs::metadata(task.log_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(task.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(spool.pending().await.unwrap(), vec![5]);
        task.remove().await.unwrap();
        assert!(spool.pending().await.unwrap().is_empty());
    }

    /// Set in the child process of [`a_result_that_does_not_fit_on_disk_is_an_error`].
    const SMALL_DISK_CHILD: &str = "RUNOPS_TEST_SPOOL_FSIZE_CHILD";

    /// Regression (chaos soak, spool disk full): a result that could not be written
    /// whole was renamed into place truncated, `write_result` said Ok, and the task's
    /// uploader later found no readable result and never reported the task, which then
    /// stayed `running` on the server for good. The disk is made "full" for a child
    /// process by a file size limit (RLIMIT_FSIZE), so the write fails like ENOSPC.
    #[test]
    fn a_result_that_does_not_fit_on_disk_is_an_error() {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new(exe);
        child
            .args([
                "--exact",
                "logs::spool::tests::small_disk_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SMALL_DISK_CHILD, "1");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            child.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 4096,
                    rlim_max: 4096,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Writes beyond the limit fail with EFBIG instead of killing the child.
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
        let out = child.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("small disk checked"),
            "the child did not run: {text}"
        );
    }

    #[tokio::test]
    async fn small_disk_child() {
        if std::env::var_os(SMALL_DISK_CHILD).is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let task = spool.task(9);
        task.create().await.unwrap();
        let mut big = result(1);
        big.failure_message = Some("x".repeat(10_000));
        let e = task.write_result(&big).await;
        assert!(
            e.is_err(),
            "a result larger than the disk was stored: {e:?}"
        );
        // Nothing truncated took the result's place.
        assert_eq!(task.result().await.unwrap(), None);
        assert!(!task.dir().join("result.json").exists());
        // What fits is stored.
        task.write_result(&result(1)).await.unwrap();
        assert_eq!(task.result().await.unwrap(), Some(result(1)));
        println!("small disk checked");
    }

    #[tokio::test]
    async fn recover_keeps_a_finished_result_and_fails_an_interrupted_task() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        // Finished before the restart: reported as it was.
        let done = spool.task(1);
        done.create().await.unwrap();
        done.write_result(&result(0)).await.unwrap();
        assert_eq!(spool.recover(1).await.unwrap(), result(0));
        // Running when the agent died: agent-error, the note appended to the log.
        let cut = spool.task(2);
        let mut f = tokio::fs::File::from_std(cut.create().await.unwrap());
        f.write_all(b"partial line").await.unwrap();
        f.flush().await.unwrap();
        let r = spool.recover(2).await.unwrap();
        assert_eq!(r.status, TaskStatus::Failure);
        assert_eq!(r.failure_reason, Some(FailureReason::AgentError));
        assert_eq!(r.failure_message.as_deref(), Some(RESTARTED_MESSAGE));
        let log = String::from_utf8(cut.read_chunk(0, 1000).await.unwrap()).unwrap();
        assert_eq!(log, format!("partial line\nrunops: {RESTARTED_MESSAGE}\n"));
        assert_eq!(r.log_size, log.len() as u64);
        // Recovering again gives the same result and does not append twice.
        assert_eq!(spool.recover(2).await.unwrap(), r);
        assert_eq!(cut.log_len().await.unwrap(), log.len() as u64);
        // A garbage file next to the task dirs is ignored.
        std::fs::write(dir.path().join("spool").join("notes.txt"), "x").unwrap();
        assert_eq!(spool.pending().await.unwrap(), vec![1, 2]);
    }
}
