//! [`TaskLog`]: the single destination of a task's output. Every byte (stdout, stderr,
//! the agent's own `runops: ...` notes) goes through the task's redactor, and only the
//! redacted bytes are appended to the spool file, in arrival order.
//!
//! stdout and stderr each have their own redactor stream: a secret printed in two
//! halves on stdout with stderr bytes between them (a progress line) is whole in its
//! own stream, so it is caught; one stream over the merged bytes would see it split.
//! What a stream holds back (a tail that may still begin a secret) is written when
//! that stream decides it, after whatever the other stream wrote meanwhile. Notes are
//! complete lines from the agent and are redacted at once.
//!
//! Output is live: the redactor releases complete lines at once, and a background
//! flusher releases an incomplete line once it has waited [`HOLD_RELEASE_AFTER`]
//! (a prompt, a progress bar): only the shortest tail that could still begin a secret
//! in one of its spellings stays until more output decides it.
//!
//! Redacted output gathers in memory into spool writes of [`SPOOL_WRITE_BYTES`], each
//! one a hand-off to a blocking thread; a second flusher writes what gathered
//! [`SPOOL_WRITE_AFTER`] after it came, so a line is on disk (and uploaded) a few
//! milliseconds after the task printed it.

use crate::limits::{SPOOL_WRITE_AFTER, SPOOL_WRITE_BYTES};
use runops_redact::{Redactor, StreamRedactor};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify, watch};

/// How long output the redactor holds back may wait before it is released anyway
/// (all but a possible secret's start): well under the 1 s a watching human notices.
pub const HOLD_RELEASE_AFTER: Duration = Duration::from_millis(250);

/// How much of a task's log is on disk, and whether more can come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogProgress {
    /// Redacted bytes in the spool file.
    pub written: u64,
    /// The log is complete and the task's result is stored.
    pub done: bool,
}

/// Where output comes from: each source has its own redactor stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stdout,
    Stderr,
}

pub struct TaskLog {
    shared: Arc<Shared>,
    /// The two flushers: held-back output, gathered output.
    flushers: [tokio::task::AbortHandle; 2],
}

struct Shared {
    inner: Mutex<Inner>,
    progress: watch::Sender<LogProgress>,
    /// A write left bytes held back: the held-back flusher releases them after a pause.
    held: Arc<Notify>,
    /// A write left redacted bytes gathered in `buf`: written out shortly.
    gathered: Arc<Notify>,
}

struct Inner {
    redactor: Redactor,
    stdout: StreamRedactor,
    stderr: StreamRedactor,
    /// The spool log, written from blocking threads (shared with the one in flight).
    file: Arc<std::fs::File>,
    written: u64,
    /// Redacted bytes ready to be written (reused between writes).
    buf: Vec<u8>,
    /// The first write error; the task fails with it.
    error: Option<String>,
    finished: bool,
}

impl Drop for TaskLog {
    fn drop(&mut self) {
        for flusher in &self.flushers {
            flusher.abort();
        }
    }
}

impl TaskLog {
    /// `file` is the spool log opened for appending (and empty). Must be called within
    /// a tokio runtime (it starts the log's flushers).
    pub fn new(file: std::fs::File, redactor: &Redactor) -> TaskLog {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                redactor: redactor.clone(),
                stdout: redactor.stream(),
                stderr: redactor.stream(),
                file: Arc::new(file),
                written: 0,
                buf: Vec::new(),
                error: None,
                finished: false,
            }),
            progress: watch::channel(LogProgress::default()).0,
            held: Arc::new(Notify::new()),
            gathered: Arc::new(Notify::new()),
        });
        let flusher = |flush: Flush| {
            let notify = match flush {
                Flush::HeldBack => shared.held.clone(),
                Flush::Gathered => shared.gathered.clone(),
            };
            tokio::spawn(flush_after_pause(Arc::downgrade(&shared), notify, flush)).abort_handle()
        };
        let flushers = [flusher(Flush::HeldBack), flusher(Flush::Gathered)];
        TaskLog { shared, flushers }
    }

    /// Follows the log's progress (the uploader does).
    pub fn subscribe(&self) -> watch::Receiver<LogProgress> {
        self.shared.progress.subscribe()
    }

    /// Adds output of the task (its stdout, or output the agent formats for it).
    pub async fn write(&self, bytes: &[u8]) {
        self.write_from(Source::Stdout, bytes).await;
    }

    /// Adds output of the task from `source`.
    pub async fn write_from(&self, source: Source, bytes: &[u8]) {
        let mut inner = self.shared.inner.lock().await;
        if inner.finished {
            return;
        }
        let Inner {
            stdout,
            stderr,
            buf,
            ..
        } = &mut *inner;
        let stream = match source {
            Source::Stdout => stdout,
            Source::Stderr => stderr,
        };
        stream.push(bytes, buf);
        if stream.held_back() > 0 {
            self.shared.held.notify_one();
        }
        if buf.len() >= SPOOL_WRITE_BYTES {
            self.shared.write_out(&mut inner).await;
        } else if !buf.is_empty() {
            self.shared.gathered.notify_one();
        }
    }

    /// Adds a line from the agent itself (`runops: <note>`), on a line of its own.
    pub async fn note(&self, note: &str) {
        let mut inner = self.shared.inner.lock().await;
        if inner.finished {
            return;
        }
        let line = inner
            .redactor
            .redact(format!("runops: {note}\n").as_bytes());
        inner.buf.extend_from_slice(&line);
        self.shared.write_out(&mut inner).await;
    }

    /// The task's own output is over (its process ended): writes what the streams
    /// held back, so that notes written after it follow the output.
    pub async fn end_output(&self) {
        let mut inner = self.shared.inner.lock().await;
        let Inner {
            stdout,
            stderr,
            buf,
            ..
        } = &mut *inner;
        stdout.finish(buf);
        stderr.finish(buf);
        self.shared.write_out(&mut inner).await;
    }

    /// Ends the log: flushes what the redactor held back and syncs the file.
    /// Returns the log's size, or the first write error.
    pub async fn finish(&self) -> Result<u64, String> {
        self.finish_with(true).await
    }

    /// [`TaskLog::finish`] without the sync when `sync` is false: for a result the
    /// uploader reports at once and syncs (log, then `result.json`) only if that report
    /// does not go through (see `crate::logs::stream`).
    pub async fn finish_with(&self, sync: bool) -> Result<u64, String> {
        let mut inner = self.shared.inner.lock().await;
        if !inner.finished {
            let Inner {
                stdout,
                stderr,
                buf,
                ..
            } = &mut *inner;
            stdout.finish(buf);
            stderr.finish(buf);
            self.shared.write_out(&mut inner).await;
            inner.finished = true;
            if sync
                && let Err(e) = sync_data(&inner.file).await
                && inner.error.is_none()
            {
                inner.error = Some(format!("cannot save the task's log: {e}"));
            }
        }
        match &inner.error {
            Some(e) => Err(e.clone()),
            None => Ok(inner.written),
        }
    }

    /// Appends an agent note to a finished log (the S3 upload's outcome is known only
    /// then). `redacted_note` must already have gone through the task's redactor.
    /// Returns the log's new size.
    pub async fn append_note_after_finish(&self, redacted_note: &str) -> u64 {
        let mut inner = self.shared.inner.lock().await;
        inner.buf.clear();
        inner
            .buf
            .extend_from_slice(format!("runops: {redacted_note}\n").as_bytes());
        self.shared.write_out(&mut inner).await;
        let _ = sync_data(&inner.file).await;
        inner.written
    }

    /// Tells the uploader that the log is complete and the result stored.
    pub fn mark_done(&self) {
        self.shared.progress.send_modify(|p| p.done = true);
    }

    /// Bytes written so far.
    pub async fn written(&self) -> u64 {
        self.shared.inner.lock().await.written
    }
}

/// What a flusher writes out.
#[derive(Clone, Copy)]
enum Flush {
    /// After [`HOLD_RELEASE_AFTER`], what the streams no longer need to hold (an
    /// incomplete line; never a possible secret's start), and what gathered.
    HeldBack,
    /// After [`SPOOL_WRITE_AFTER`], the redacted output gathered for a larger write.
    Gathered,
}

impl Flush {
    /// How long the flusher waits after its notification.
    fn pause(self) -> Duration {
        match self {
            Flush::HeldBack => HOLD_RELEASE_AFTER,
            Flush::Gathered => SPOOL_WRITE_AFTER,
        }
    }
}

/// One flusher of a log: each time `notify` fires, waits its pause and writes out what
/// `flush` says. Ends with the log.
async fn flush_after_pause(shared: std::sync::Weak<Shared>, notify: Arc<Notify>, flush: Flush) {
    loop {
        notify.notified().await;
        tokio::time::sleep(flush.pause()).await;
        let Some(log) = shared.upgrade() else { return };
        let mut inner = log.inner.lock().await;
        if inner.finished {
            return;
        }
        if let Flush::HeldBack = flush {
            let Inner {
                stdout,
                stderr,
                buf,
                ..
            } = &mut *inner;
            stdout.flush(buf);
            stderr.flush(buf);
        }
        log.write_out(&mut inner).await;
    }
}

impl Shared {
    /// Appends the redacted bytes in `inner.buf` to the spool file and tells the
    /// uploader.
    async fn write_out(&self, inner: &mut Inner) {
        if inner.buf.is_empty() || inner.error.is_some() {
            inner.buf.clear();
            return;
        }
        // The buffer moves to the blocking thread and back (tokio's `File` would copy
        // it into its own); the write is complete before `written` says the bytes are
        // there, so the uploader, which reads the file separately, finds them.
        let file = inner.file.clone();
        let buf = std::mem::take(&mut inner.buf);
        let result = tokio::task::spawn_blocking(move || {
            let result = (&*file).write_all(&buf);
            (buf, result)
        })
        .await;
        let result = match result {
            Ok((buf, result)) => {
                inner.buf = buf;
                result
            }
            Err(e) => Err(std::io::Error::other(e)),
        };
        match result {
            Ok(()) => {
                inner.written += inner.buf.len() as u64;
                let written = inner.written;
                self.progress.send_modify(|p| p.written = written);
            }
            Err(e) => inner.error = Some(format!("cannot save the task's log: {e}")),
        }
        inner.buf.clear();
    }
}

/// Syncs the spool log to disk (on a blocking thread).
async fn sync_data(file: &Arc<std::fs::File>) -> std::io::Result<()> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || file.sync_data())
        .await
        .map_err(std::io::Error::other)?
}
