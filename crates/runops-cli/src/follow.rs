//! Following a task's log until the task ends.
//!
//! The log is streamed with `GET /v1/tasks/{id}/logs?follow=true` and written raw to the
//! output as it arrives. When the stream breaks (server restart, proxy timeout), it is
//! reopened from the number of bytes already written, so nothing is printed twice or
//! lost. The stream ends with the ended task itself (`frames=true`); from a server that
//! predates that, the task is asked for once the stream ends. A server that cannot
//! stream is polled instead (`get_task` + `task_logs`).

use crate::error::{CliError, CliResult};
use crate::output;
use crate::spinner::Spinner;
use futures_util::StreamExt;
use runops_client::user::LogPiece;
use runops_client::{Client, ClientError};
use runops_proto::api::Task;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Pause before asking again when the server had nothing new to say; short enough
/// that polling feels live, long enough not to load the server.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// First pause after the server could not be reached; doubled on each failure.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Longest pause between two reconnect attempts, so a restarted server is noticed fast.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Stop following after the server has been unreachable this long: the user is told
/// how to resume instead of waiting forever on a server that is gone.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// How following ended.
#[derive(Debug)]
pub(crate) struct Followed {
    /// The task in its final state.
    pub task: Task,
    /// False when the output's last byte was not a newline.
    pub ended_with_newline: bool,
    /// The last bytes written (up to [`TAIL_BYTES`]): where the agent's closing note
    /// with the failure message is, so that it is not printed a second time.
    pub tail: Vec<u8>,
}

/// Bytes of the log's end kept by [`follow_task`]: more than a failure note.
const TAIL_BYTES: usize = 8 * 1024;

/// Tracks an outage of the server while following: backs off, warns once, gives up
/// after [`GIVE_UP_AFTER`].
struct Outage {
    task_id: i64,
    since: Option<Instant>,
    delay: Duration,
}

impl Outage {
    fn new(task_id: i64) -> Outage {
        Outage {
            task_id,
            since: None,
            delay: FIRST_RETRY_DELAY,
        }
    }

    fn recovered(&mut self) {
        self.since = None;
        self.delay = FIRST_RETRY_DELAY;
    }

    /// Waits before the next attempt when `e` is worth retrying; otherwise returns it.
    async fn wait_or_give_up(&mut self, e: ClientError) -> CliResult<()> {
        if !e.is_transport() {
            return Err(e.into());
        }
        let id = self.task_id;
        match self.since {
            None => {
                self.since = Some(Instant::now());
                output::note(&format!(
                    "warning: lost the connection to the server while following task {id}; retrying…"
                ));
            }
            Some(t) if t.elapsed() >= GIVE_UP_AFTER => {
                return Err(CliError::from(e).with_hint(format!(
                    "task {id} may still be running; follow it again with `runops tasks logs {id} -f`"
                )));
            }
            Some(_) => {}
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(MAX_RETRY_DELAY);
        Ok(())
    }
}

/// True when the server answered the follow request in a way that says it cannot
/// stream (rather than "no such task" or "not allowed"): poll instead.
fn cannot_stream(e: &ClientError) -> bool {
    match e {
        ClientError::Api { status, .. } => !matches!(status, 401 | 403 | 404) && *status < 500,
        ClientError::Protocol { status, .. } => *status < 500,
        _ => false,
    }
}

/// Writes the log of task `id` to `out` as it is produced and returns the final task.
/// `spinner`, when given, is stopped (and its line cleared) before the first byte.
pub(crate) async fn follow_task<W: AsyncWrite + Unpin>(
    client: &Client,
    id: i64,
    out: &mut W,
    spinner: Option<Spinner>,
) -> CliResult<Followed> {
    let mut sink = Sink {
        out,
        spinner,
        bytes: 0,
        last: None,
        tail: Vec::new(),
    };
    let mut outage = Outage::new(id);
    let mut streaming = true;
    let task = loop {
        // How the task ended, when the stream said so (no need to ask then).
        let mut ended = None;
        if streaming {
            match client.follow_task_log_pieces(id, sink.bytes).await {
                Ok(stream) => {
                    outage.recovered();
                    let mut stream = std::pin::pin!(stream);
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(LogPiece::Bytes(chunk)) => sink.write(&chunk).await?,
                            Ok(LogPiece::End(task)) => ended = Some(*task),
                            // Broken mid-way: reopen from what was written.
                            Err(_) => break,
                        }
                    }
                }
                Err(e) if cannot_stream(&e) => {
                    streaming = false;
                    continue;
                }
                Err(e) => {
                    outage.wait_or_give_up(e).await?;
                    continue;
                }
            }
        }
        // The stream ended (or we poll): has the task ended?
        let task = match ended.filter(|t| t.status.is_final()) {
            Some(t) => t,
            None => match client.get_task(id).await {
                Ok(t) => t,
                Err(e) => {
                    outage.wait_or_give_up(e).await?;
                    continue;
                }
            },
        };
        outage.recovered();
        let missing = task.status.is_final() && sink.bytes < task.log_size;
        if !streaming || missing {
            // Whatever the stream did not deliver (or all of it when polling). The
            // task was read first, so for a final task this is the complete rest.
            match client.task_logs(id, sink.bytes).await {
                Ok(chunk) => sink.write(&chunk).await?,
                Err(e) if task.status.is_final() && !e.is_transport() => {
                    output::note(&format!(
                        "warning: cannot fetch the rest of the log of task {id}: {}",
                        CliError::from(e).message
                    ));
                }
                Err(e) => {
                    outage.wait_or_give_up(e).await?;
                    continue;
                }
            }
        }
        if task.status.is_final() {
            break task;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    if let Some(s) = sink.spinner.take() {
        s.finish().await;
    }
    Ok(Followed {
        task,
        ended_with_newline: sink.last.is_none_or(|b| b == b'\n'),
        tail: sink.tail,
    })
}

/// The output side of following: counts bytes, stops the spinner before the first one.
struct Sink<'a, W> {
    out: &'a mut W,
    spinner: Option<Spinner>,
    bytes: u64,
    last: Option<u8>,
    tail: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Sink<'_, W> {
    async fn write(&mut self, chunk: &[u8]) -> CliResult<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if let Some(s) = self.spinner.take() {
            s.finish().await;
        }
        self.out.write_all(chunk).await?;
        self.out.flush().await?;
        self.bytes += chunk.len() as u64;
        self.last = chunk.last().copied();
        self.tail
            .extend_from_slice(&chunk[chunk.len().saturating_sub(TAIL_BYTES)..]);
        let excess = self.tail.len().saturating_sub(TAIL_BYTES);
        self.tail.drain(..excess);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Follows a task served by a tiny local HTTP server that breaks the stream in the
    //! middle, then ends the task: the output must hold every byte exactly once.

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    const LOG: &str = "line 1\nline 2\nline 3\nlast line without newline";

    fn task_json(status: &str) -> String {
        serde_json::json!({
            "id": 7, "target": "demo", "type": "bash", "script": "echo",
            "message": null, "status": status, "exit_code": if status == "failure" { serde_json::json!(3) } else { serde_json::Value::Null },
            "failure_reason": if status == "failure" { serde_json::json!("exit-code") } else { serde_json::Value::Null },
            "failure_message": null, "user": "a@b.c", "agent": "h", "redacted": true,
            "log_size": LOG.len(), "log_location": "server", "task_logs": "/v1/tasks/7/logs",
            "created_at": "2026-01-01T00:00:00Z", "started_at": null, "finished_at": null,
            "elapsed_ms": null
        })
        .to_string()
    }

    /// What the fake server does with follow requests.
    #[derive(Clone, Copy)]
    enum Mode {
        /// First follow: half the log then a broken connection; second: the rest.
        BreakThenResume,
        /// Every follow request gets 400: the client must poll.
        NoStreaming,
        /// The follow answer comes in frames, the ended task last: no other request.
        Frames,
    }

    struct Fake {
        url: String,
        /// Requests for the task itself.
        looks: Arc<AtomicUsize>,
        /// Follow requests received.
        follows: Arc<AtomicUsize>,
        /// The offset of each follow request.
        offsets: Arc<Mutex<Vec<u64>>>,
    }

    /// The fake server's shared counters.
    #[derive(Clone, Default)]
    struct Seen {
        follows: Arc<AtomicUsize>,
        looks: Arc<AtomicUsize>,
        offsets: Arc<Mutex<Vec<u64>>>,
    }

    async fn fake_server(mode: Mode) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Seen::default();
        let fake = Fake {
            url,
            looks: seen.looks.clone(),
            follows: seen.follows.clone(),
            offsets: seen.offsets.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move { serve(sock, mode, seen).await });
            }
        });
        fake
    }

    async fn serve(sock: TcpStream, mode: Mode, seen: Seen) {
        let Seen {
            follows,
            looks,
            offsets,
        } = seen;
        let mut reader = BufReader::new(sock);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.is_err() {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let offset: u64 = path
            .split("offset=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut sock = reader.into_inner();
        let follow = path.contains("follow=true");
        let reply = |status: &str, ctype: &str, body: &str| {
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let text = if path.starts_with("/v1/tasks/7/logs") && follow {
            let n = follows.fetch_add(1, Ordering::SeqCst);
            offsets.lock().unwrap().push(offset);
            match mode {
                Mode::Frames => {
                    use runops_proto::api::{LOG_FRAME_BYTES, LOG_FRAME_END, log_frame};
                    let mut body = log_frame(LOG_FRAME_BYTES, &LOG.as_bytes()[..10]);
                    body.extend(log_frame(LOG_FRAME_BYTES, &LOG.as_bytes()[10..]));
                    body.extend(log_frame(LOG_FRAME_END, task_json("failure").as_bytes()));
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        runops_proto::api::LOG_FRAMES_CONTENT_TYPE,
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    // In two writes cut inside a frame header: frames span reads.
                    let _ = sock.write_all(&body[..3]).await;
                    let _ = sock.flush().await;
                    let _ = sock.write_all(&body[3..]).await;
                    let _ = sock.shutdown().await;
                    return;
                }
                Mode::NoStreaming => reply(
                    "400 Bad Request",
                    "application/json",
                    r#"{"code":"bad_request","error":"follow is not supported"}"#,
                ),
                Mode::BreakThenResume if n == 0 => {
                    // Promise the whole log, send half, then drop the connection.
                    let half = &LOG[..LOG.len() / 2];
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{half}",
                        LOG.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.flush().await;
                    return;
                }
                Mode::BreakThenResume => reply("200 OK", "text/plain", &LOG[offset as usize..]),
            }
        } else if path.starts_with("/v1/tasks/7/logs") {
            let start = (offset as usize).min(LOG.len());
            reply("200 OK", "text/plain", &LOG[start..])
        } else if path.starts_with("/v1/tasks/7") {
            // The first look finds the task running, the next one finished.
            let status = if looks.fetch_add(1, Ordering::SeqCst) == 0 {
                "running"
            } else {
                "failure"
            };
            reply("200 OK", "application/json", &task_json(status))
        } else {
            reply(
                "404 Not Found",
                "application/json",
                r#"{"code":"not_found","error":"no such route"}"#,
            )
        };
        let _ = sock.write_all(text.as_bytes()).await;
        let _ = sock.shutdown().await;
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest).await;
    }

    #[tokio::test]
    async fn broken_stream_resumes_from_the_bytes_already_written() {
        let fake = fake_server(Mode::BreakThenResume).await;
        let client = Client::new(&fake.url, "rou_test").unwrap();
        let mut out: Vec<u8> = Vec::new();
        let followed = follow_task(&client, 7, &mut out, None).await.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), LOG);
        assert!(!followed.ended_with_newline);
        assert_eq!(followed.task.exit_code, Some(3));
        let offsets = fake.offsets.lock().unwrap().clone();
        assert_eq!(offsets, vec![0, (LOG.len() / 2) as u64]);
    }

    #[tokio::test]
    async fn a_framed_answer_ends_the_follow_without_another_request() {
        let fake = fake_server(Mode::Frames).await;
        let client = Client::new(&fake.url, "rou_test").unwrap();
        let mut out: Vec<u8> = Vec::new();
        let followed = follow_task(&client, 7, &mut out, None).await.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), LOG);
        assert_eq!(followed.task.exit_code, Some(3));
        assert_eq!(fake.follows.load(Ordering::SeqCst), 1);
        assert_eq!(
            fake.looks.load(Ordering::SeqCst),
            0,
            "the task was asked for"
        );
    }

    #[tokio::test]
    async fn server_without_streaming_is_polled_to_the_end() {
        let fake = fake_server(Mode::NoStreaming).await;
        let client = Client::new(&fake.url, "rou_test").unwrap();
        let mut out: Vec<u8> = Vec::new();
        let followed = follow_task(&client, 7, &mut out, None).await.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), LOG);
        assert!(followed.task.status.is_final());
        assert!(fake.follows.load(Ordering::SeqCst) >= 1);
    }

    #[tokio::test]
    async fn unknown_task_is_an_error_not_a_retry_loop() {
        let fake = fake_server(Mode::BreakThenResume).await;
        let client = Client::new(&fake.url, "rou_test").unwrap();
        let mut out: Vec<u8> = Vec::new();
        let err = follow_task(&client, 99, &mut out, None).await.unwrap_err();
        assert_eq!(err.message, "no such route");
    }
}
