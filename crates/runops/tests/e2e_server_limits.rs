//! End-to-end: the server's connection limits. Silent sockets and slow headers are
//! closed by the server and never starve real requests; the connection cap queues
//! and says which flag to raise; the idle timeout never cuts a long-poll or a
//! followed log.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// What a server started from a default shell gets: the soft limit the issue hit.
const LOW_SOFT_NOFILE: u64 = 1024;

/// Raises this test process's soft open-files limit to the hard one (it opens
/// thousands of sockets).
fn raise_own_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// Starts the server with a soft open-files limit of 1024 (hard limit unchanged), as
/// from a default login shell: the server itself must raise it.
fn low_nofile(c: &mut Command) {
    // SAFETY: only async-signal-safe setrlimit between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = LOW_SOFT_NOFILE.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Opens `n` connections that never send a byte.
fn silent_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr(port), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("silent connection {i} of {n} failed: {e}"))
        })
        .collect()
}

/// True once the server closed `s` (EOF, or a reset when it dropped unread bytes);
/// false if it sent data or stayed open for [`WAIT`].
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); (status, body).
fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr(port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read the answer");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn silent_and_slow_header_connections_are_closed_and_never_block_real_work() {
    raise_own_nofile();
    let sb = Sandbox::new();
    let server = Server::start_with(&sb, 10, |c| {
        low_nofile(c);
        c.args(["--header-read-timeout-secs", "15"]);
    });
    // More silent sockets than the soft limit the server was started with.
    let mut silent = silent_connections(server.port, 2000);

    // A client that sends its request line one byte at a time, never finishing.
    let mut slow = TcpStream::connect(addr(server.port)).unwrap();
    let slow_writer = {
        let mut w = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
                .iter()
                .cycle()
            {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // With all of those still open, the server answers and runs a task.
    let (status, body) = wait_for("/healthz with 2000 silent connections open", || {
        http_get(server.port, "/healthz")
    });
    assert_eq!((status, body.trim()), (200, "ok"));
    server.cli_ok(&["targets", "create", "--name", "t", "--type", "bash"]);
    let token = server.create_agent_token();
    let _agent = Agent::start(&sb, "a", &token, None, &[]);
    let out = server.cli_ok(&["tasks", "create", "-t", "t", "-s", "echo ran-through"]);
    assert_eq!(out.trim(), "ran-through");

    // The server closes the slow-header client and every silent socket on its own.
    assert!(
        closed_by_server(&mut slow),
        "the slow-header connection was not closed by the server"
    );
    slow_writer.join().unwrap();
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_server(s),
            "silent connection {i} was not closed by the server"
        );
    }
    // And still serves.
    assert_eq!(http_get(server.port, "/healthz").map(|x| x.0), Some(200));
}

#[test]
fn the_connection_cap_queues_new_connections_and_names_the_flag() {
    raise_own_nofile();
    let sb = Sandbox::new();
    let server = Server::start_with(&sb, 10, |c| {
        c.args(["--max-connections", "50", "--header-read-timeout-secs", "2"]);
    });
    let mut silent = silent_connections(server.port, 200);
    wait_for("the cap to be logged", || {
        let log = server.log();
        (log.contains("connection limit reached") && log.contains("--max-connections"))
            .then_some(())
    });
    // Queued connections are served once the silent ones time out.
    let (status, _) = wait_for("/healthz behind the cap", || {
        http_get(server.port, "/healthz")
    });
    assert_eq!(status, 200);
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(closed_by_server(s), "silent connection {i} stayed open");
    }
    let logged = server.log().matches("connection limit reached").count();
    assert!(
        logged < 10,
        "the cap should be logged once per burst, got {logged} lines"
    );

    // A cap the open-files limit cannot hold is refused, not silently lowered.
    let out = base_command(&sb.home())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(sb.path("refused"))
        .args(["--max-connections", "100000000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--max-connections 100000000") && err.contains("ulimit -n"),
        "{err}"
    );
    assert!(!sb.path("refused").join("runops.db").exists());
}

#[test]
fn the_idle_timeout_closes_kept_alive_connections_but_not_long_polls_or_log_follows() {
    let sb = Sandbox::new();
    let idle = Duration::from_secs(2);
    // Lease 30 s: the agent poll is held 18 s, far beyond the idle timeout.
    let server = Server::start_with(&sb, 30, |c| {
        c.args([
            "--idle-timeout-secs",
            "2",
            "--header-read-timeout-secs",
            "2",
        ]);
    });

    // A kept-alive connection with nothing more to ask is closed.
    let mut ka = TcpStream::connect(addr(server.port)).unwrap();
    write!(ka, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    ka.set_read_timeout(Some(WAIT)).unwrap();
    let n = ka.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_by_server(&mut ka),
        "an idle kept-alive connection stayed open"
    );

    // An agent's long-poll is held well past the idle timeout and answered.
    let token = server.create_agent_token();
    let (status, body) = http(
        server.port,
        "POST",
        "/v1/agent/connect",
        &token,
        &serde_json::json!({
            "tags": null, "hostname": "raw", "version": runops_proto::VERSION,
            "instance_id": "raw-poll-test", "concurrency": 1
        })
        .to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let session: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hold = session["poll_hold_secs"].as_u64().unwrap();
    assert!(hold > 2 * idle.as_secs(), "poll hold {hold}s");
    let poll = serde_json::json!({
        "session_id": session["session_id"], "running": [], "free_slots": 1
    })
    .to_string();
    let started = Instant::now();
    let (status, body) = http(server.port, "POST", "/v1/agent/poll", &token, &poll);
    assert_eq!(status, 200, "the held poll was not answered: {body}");
    assert!(
        started.elapsed() >= idle * 2,
        "the poll should have been held past the idle timeout"
    );
    let bye = serde_json::json!({ "session_id": session["session_id"] }).to_string();
    let (status, body) = http(server.port, "POST", "/v1/agent/disconnect", &token, &bye);
    assert!(status < 300, "{body}");

    // A followed log stays open while the task is quiet for several idle periods, and
    // gets every line (read raw: the CLI would fall back to polling if cut).
    server.cli_ok(&["targets", "create", "--name", "t", "--type", "bash"]);
    let _agent = Agent::start(&sb, "a", &token, None, &[]);
    let id = server.submit("t", "echo first-line; sleep 7; echo last-line");
    server.wait_status(id, "running");
    let (status, body) = http(
        server.port,
        "GET",
        &format!("/v1/tasks/{id}/logs?follow=true"),
        ADMIN_TOKEN,
        "",
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("first-line") && body.contains("last-line") && body.ends_with("0\r\n\r\n"),
        "the follow was cut: {body:?}"
    );
    assert_eq!(server.wait_final(id)["status"], "success");
}
