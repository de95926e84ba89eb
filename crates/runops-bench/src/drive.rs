//! Driving work through a stack and timing it: create a task and wait for its end (with
//! its log), run N tasks at a given concurrency, time a command, and the simulated
//! agents (real HTTP connect/poll loops of `runops-client`, no processes).

use anyhow::{Context, bail};
use futures_util::StreamExt;
use runops_client::Client;
use runops_client::user::LogPiece;
use runops_proto::TaskStatus;
use runops_proto::agent::{ConnectRequest, PollRequest};
use runops_proto::api::{Task, TaskCreate};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest a single benchmark task may take before the run is declared broken.
const TASK_WAIT: Duration = Duration::from_secs(600);

/// Wall-clock time now in microseconds since the epoch (the clock bash's
/// `$EPOCHREALTIME` reads, so the two can be subtracted).
pub fn realtime_us() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Parses bash's `$EPOCHREALTIME` (`1764277846.123456`; a comma in some locales) into
/// microseconds since the epoch.
pub fn parse_epoch_realtime(text: &str) -> Option<f64> {
    let t = text.trim();
    let (secs, frac) = t.split_once(['.', ',']).unwrap_or((t, "0"));
    let secs: u64 = secs.parse().ok()?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_us = frac.parse::<f64>().ok()? / 10f64.powi(frac.len() as i32) * 1e6;
    Some(secs as f64 * 1e6 + frac_us)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn new_task(target: &str, script: &str) -> TaskCreate {
    TaskCreate {
        target: target.into(),
        script: script.into(),
        ..Default::default()
    }
}

/// Follows task `id`'s log until the task ends; returns the final task and its log.
pub async fn wait_done(client: &Client, id: i64) -> anyhow::Result<(Task, Vec<u8>)> {
    let start = Instant::now();
    let mut log = Vec::new();
    loop {
        // As the CLI does: the stream ends with the ended task (no second request).
        let stream = client.follow_task_log_pieces(id, log.len() as u64).await?;
        let mut stream = std::pin::pin!(stream);
        let mut ended = None;
        while let Some(piece) = stream.next().await {
            match piece? {
                LogPiece::Bytes(chunk) => log.extend_from_slice(&chunk),
                LogPiece::End(task) => ended = Some(*task),
            }
        }
        let task = match ended {
            Some(task) => task,
            None => client.get_task(id).await?,
        };
        if task.status.is_final() {
            if (log.len() as u64) < task.log_size {
                let rest = client.task_logs(id, log.len() as u64).await?;
                log.extend_from_slice(&rest);
            }
            return Ok((task, log));
        }
        if start.elapsed() > TASK_WAIT {
            bail!("task {id} did not end within {TASK_WAIT:?}");
        }
    }
}

/// Waits for task `id` to end by asking for it every `every` (no log download).
pub async fn poll_done(client: &Client, id: i64, every: Duration) -> anyhow::Result<Task> {
    let start = Instant::now();
    loop {
        let task = client.get_task(id).await?;
        if task.status.is_final() {
            return Ok(task);
        }
        if start.elapsed() > TASK_WAIT {
            bail!("task {id} did not end within {TASK_WAIT:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Fails with the task's own explanation unless it succeeded.
pub fn expect_success(task: &Task, log: &[u8]) -> anyhow::Result<()> {
    if task.status != TaskStatus::Success {
        bail!(
            "task {} ended {} ({}): {}; log: {}",
            task.id,
            task.status,
            task.failure_reason.map(|r| r.as_str()).unwrap_or("-"),
            task.failure_message.as_deref().unwrap_or("-"),
            String::from_utf8_lossy(&log[..log.len().min(300)])
        );
    }
    Ok(())
}

/// Runs `total` tasks of `script` on `target`, `concurrency` at a time (each worker
/// creates one and waits for its end); returns the wall time.
pub async fn run_tasks(
    client: &Client,
    target: &str,
    script: &str,
    total: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<JoinHandle<anyhow::Result<()>>> = (0..concurrency.max(1))
        .map(|_| {
            let (client, next) = (client.clone(), next.clone());
            let req = new_task(target, script);
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let task = client.create_task(&req).await?;
                    let (task, log) = wait_done(&client, task.id).await?;
                    expect_success(&task, &log)?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await.context("a bench worker panicked")??;
    }
    Ok(start.elapsed())
}

/// Runs a command to completion with its output discarded; its wall time, or an error
/// naming the command when it fails.
pub fn time_command(cmd: &mut Command) -> anyhow::Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let took = start.elapsed();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(took)
}

/// Runs a command once with its output captured; fails with that output unless it
/// succeeded (to check a command works before timing it).
pub fn check_command(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

/// `bash -c 'true'` spawned `total` times by `concurrency` threads; the rate per second.
pub fn raw_spawn_rate(total: usize, concurrency: usize) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    time_command(Command::new("bash").args(["-c", "true"]))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a spawning thread panicked"))??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Simulated idle agents: each holds its own session (tags `<prefix>-<i>`) and keeps a
/// long poll open, as a real agent with nothing to do does.
pub struct IdleAgents {
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<anyhow::Result<u64>>>,
}

impl IdleAgents {
    /// `admin` mints one agent token per simulated agent (tokens are scoped to tags).
    pub async fn start(url: &str, admin: &Client, n: usize, prefix: &str) -> anyhow::Result<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let mut loops = Vec::with_capacity(n);
        for i in 0..n {
            let token = admin
                .create_agent_token(Some("bench-idle".into()), Some(format!("{prefix}-{i}")))
                .await?
                .token;
            let client = Client::new(url, &token)?;
            let session = client
                .agent_connect(&ConnectRequest {
                    tags: Some(format!("{prefix}-{i}")),
                    hostname: format!("bench-idle-{i}"),
                    version: runops_proto::VERSION.into(),
                    instance_id: format!("bench-{}-{prefix}-{i}", std::process::id()),
                    concurrency: 1,
                    standby: false,
                    restarted: false,
                    spooled: Vec::new(),
                    verifies_identity: false,
                })
                .await
                .with_context(|| format!("simulated agent {i} cannot connect"))?;
            let mut stop_rx = stop_rx.clone();
            loops.push(tokio::spawn(async move {
                let hold = Duration::from_secs(session.poll_hold_secs);
                let req = PollRequest {
                    session_id: session.session_id.clone(),
                    running: Vec::new(),
                    free_slots: 1,
                };
                let mut polls = 0u64;
                loop {
                    tokio::select! {
                        r = client.agent_poll(&req, hold) => { r?; polls += 1; }
                        _ = stop_rx.changed() => break,
                    }
                }
                client.agent_disconnect(&session.session_id).await?;
                Ok(polls)
            }));
        }
        Ok(IdleAgents { stop, loops })
    }

    /// Stops the loops (disconnecting each session); the number of polls answered.
    pub async fn stop(self) -> anyhow::Result<u64> {
        let _ = self.stop.send(true);
        let mut polls = 0;
        for l in self.loops {
            polls += l.await.context("a simulated agent panicked")??;
        }
        Ok(polls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_realtime_is_read_in_microseconds() {
        assert_eq!(
            parse_epoch_realtime("1700000000.000250\n"),
            Some(1_700_000_000_000_250.0)
        );
        assert_eq!(
            parse_epoch_realtime("1700000000,5"),
            Some(1_700_000_000_500_000.0)
        );
        assert_eq!(parse_epoch_realtime("oops"), None);
        assert_eq!(parse_epoch_realtime("1700000000.x"), None);
    }

    #[test]
    fn a_failing_command_is_an_error() {
        assert!(time_command(Command::new("bash").args(["-c", "exit 3"])).is_err());
        assert!(time_command(Command::new("bash").args(["-c", "true"])).is_ok());
    }
}
