//! Helpers for the end-to-end tests: they start the real `runops` binary as users
//! would (server, agents, CLI), each in its own temporary directory and on free
//! loopback ports, and stop every process they started when dropped.

#![allow(dead_code)]

pub mod guard;
#[allow(unused_imports)]
pub use guard::require;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The admin token every test server is started with.
pub const ADMIN_TOKEN: &str = "rou_e2e-admin-token-0123456789abcdefghijklmnopqrstu";

/// Upper bound for waiting on something that should happen; generous because CI
/// machines are shared and slow. Tests never assert how fast things happen.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn runops_bin() -> &'static str {
    env!("CARGO_BIN_EXE_runops")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A CLI command that runs longer than this is stuck (a task waiting for an agent
/// that never comes): it is killed and the test fails, instead of hanging the suite.
pub const CLI_LIMIT: Duration = Duration::from_secs(300);

/// Runs `cmd` to completion like `Command::output`, but kills it and panics naming
/// `what` when it is still running after `limit`.
pub fn output_within(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the CLI") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "`{what}` was still running after {limit:?}; killed. stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after [`WAIT`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > WAIT {
            panic!("timed out after {WAIT:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTP GET on loopback; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    get_with_headers(port, path, "")
}

/// A GET on loopback with a bearer token; returns (status, body).
pub fn http_get_with_token(port: u16, path: &str, token: &str) -> Option<(u16, String)> {
    get_with_headers(port, path, &format!("Authorization: Bearer {token}\r\n"))
}

/// A GET on loopback with `headers` (each ending in CRLF); returns (status, body).
fn get_with_headers(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

/// A base environment for child processes of the tests: nothing of the test
/// runner's own environment leaks in except PATH.
pub fn base_command(home: &Path) -> Command {
    let mut c = Command::new(runops_bin());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("RUST_BACKTRACE", "1");
    c
}

/// The user running the tests.
pub fn whoami() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Kills a child by PID and reaps it.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One test's sandbox: a temp dir holding the server's data, agents' spools and a HOME.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("runops-e2e-")
                .tempdir()
                .expect("create temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn home(&self) -> PathBuf {
        let h = self.path("home");
        std::fs::create_dir_all(&h).unwrap();
        h
    }
}

/// A running `runops server`.
pub struct Server {
    pub port: u16,
    pub data_dir: PathBuf,
    pub lease_secs: u64,
    home: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts a server with a short agent lease (so lost agents are noticed quickly).
    pub fn start(sb: &Sandbox, lease_secs: u64) -> Server {
        let mut s = Server {
            port: free_port(),
            data_dir: sb.path("server-data"),
            lease_secs,
            home: sb.home(),
            log: sb.path("server.log"),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = base_command(&self.home)
            .args(["server", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUNOPS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUNOPS_AGENT_LEASE_SECS", self.lease_secs.to_string())
            .env("RUNOPS_OFFER_TIMEOUT_SECS", "10")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn runops server");
        self.child = Some(child);
        let port = self.port;
        wait_for("the server to answer /healthz", || {
            http_get(port, "/healthz").filter(|(st, _)| *st == 200)
        });
    }

    /// Like [`Server::start`], with `configure` applied to the command before it is
    /// spawned (extra flags, environment, `pre_exec`). `restart` drops the extras.
    pub fn start_with(
        sb: &Sandbox,
        lease_secs: u64,
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let mut s = Server {
            port: free_port(),
            data_dir: sb.path("server-data"),
            lease_secs,
            home: sb.home(),
            log: sb.path("server.log"),
            child: None,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .unwrap();
        let mut c = base_command(&s.home);
        c.args(["server", "--listen"])
            .arg(format!("127.0.0.1:{}", s.port))
            .arg("--data-dir")
            .arg(&s.data_dir)
            .env("RUNOPS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUNOPS_AGENT_LEASE_SECS", lease_secs.to_string())
            .env("RUNOPS_OFFER_TIMEOUT_SECS", "10")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        configure(&mut c);
        s.child = Some(c.spawn().expect("spawn runops server"));
        let port = s.port;
        wait_for("the server to answer /healthz", || {
            http_get(port, "/healthz").filter(|(st, _)| *st == 200)
        });
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no chance to clean up) and starts it again on the
    /// same port and data dir.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a CLI command as the admin user against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        output_within(
            self.cli_cmd(args),
            CLI_LIMIT,
            &format!("runops {}", args.join(" ")),
        )
    }

    /// Runs a CLI command and asserts it succeeded; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`runops {}` failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn cli_cmd(&self, args: &[&str]) -> Command {
        let mut c = base_command(&self.home);
        c.args(args)
            .env("RUNOPS_URL", self.url())
            .env("RUNOPS_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null());
        c
    }

    /// Creates the user `name`@example.com with `groups` (comma-separated, may be
    /// empty); returns their API token.
    pub fn create_user(&self, name: &str, groups: &str) -> String {
        let email = format!("{name}@example.com");
        let mut args = vec![
            "users", "create", "--name", name, "--email", &email, "--json",
        ];
        if !groups.is_empty() {
            args.extend(["--groups", groups]);
        }
        let out = self.cli_ok(&args);
        let v: serde_json::Value = serde_json::from_str(&out).expect("users create --json");
        v["token"].as_str().expect("a token").to_string()
    }

    /// Runs a CLI command as the holder of `token`.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        let mut c = self.cli_cmd(args);
        c.env("RUNOPS_TOKEN", token);
        output_within(c, CLI_LIMIT, &format!("runops {}", args.join(" ")))
    }

    /// [`Server::cli_as`], asserting success; returns stdout.
    pub fn cli_ok_as(&self, token: &str, args: &[&str]) -> String {
        let out = self.cli_as(token, args);
        assert!(
            out.status.success(),
            "`runops {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A token for untagged agents.
    pub fn create_agent_token(&self) -> String {
        self.cli_ok(&["agents", "create-token"]).trim().to_string()
    }

    /// A token for agents with exactly `tags` (agent tokens are scoped to a tag set).
    pub fn create_agent_token_for(&self, tags: &str) -> String {
        self.cli_ok(&["agents", "create-token", "--tags", tags])
            .trim()
            .to_string()
    }

    /// `runops tasks show ID --json` as JSON.
    pub fn task(&self, id: i64) -> serde_json::Value {
        let out = self.cli_ok(&["tasks", "show", &id.to_string(), "--json"]);
        serde_json::from_str(&out).expect("tasks show --json prints JSON")
    }

    /// Creates a task without waiting; returns its id.
    pub fn submit(&self, target: &str, script: &str) -> i64 {
        let out = self.cli_ok(&["tasks", "create", "-t", target, "-s", script, "--no-wait"]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("--no-wait should print the task id, got {out:?}"))
    }

    /// Waits until the task reaches a final status; returns it.
    pub fn wait_final(&self, id: i64) -> serde_json::Value {
        wait_for(&format!("task {id} to finish"), || {
            let t = self.task(id);
            let st = t["status"].as_str().unwrap_or_default().to_string();
            (st == "success" || st == "failure").then_some(t)
        })
    }

    pub fn wait_status(&self, id: i64, status: &str) -> serde_json::Value {
        wait_for(&format!("task {id} to be {status}"), || {
            let t = self.task(id);
            (t["status"] == status).then_some(t)
        })
    }

    pub fn logs(&self, id: i64) -> String {
        self.cli_ok(&["tasks", "logs", &id.to_string()])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }
}

/// A running `runops agent`.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    /// Starts an agent with only `TOKEN`, optional `TAGS`, and `env` set (plus PATH/HOME).
    pub fn start(
        sb: &Sandbox,
        name: &str,
        token: &str,
        tags: Option<&str>,
        env: &[(&str, &str)],
    ) -> Agent {
        let log = sb.path(&format!("agent-{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut c = base_command(&sb.home());
        c.arg("agent")
            .env("TOKEN", token)
            .env("RUNOPS_AGENT_DATA_DIR", sb.path(&format!("agent-{name}")))
            .env("RUNOPS_KILL_GRACE_SECS", "2")
            // Tasks write into the test's private temp dir: keep the agent's own user even
            // when the machine has a `runops` user (tests of RUN_AS_USER pass their own).
            .env("RUN_AS_USER", whoami())
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f));
        if let Some(t) = tags {
            c.env("TAGS", t);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        Agent {
            child: c.spawn().expect("spawn runops agent"),
            log,
        }
    }

    /// [`Agent::start`], with `customize` applied to the command last (another user
    /// with `CommandExt::uid`, a working directory, a relative `RUNOPS_AGENT_DATA_DIR`).
    pub fn start_with(
        sb: &Sandbox,
        name: &str,
        token: &str,
        env: &[(&str, &str)],
        customize: impl FnOnce(&mut Command),
    ) -> Agent {
        let log = sb.path(&format!("agent-{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut c = base_command(&sb.home());
        c.arg("agent")
            .env("TOKEN", token)
            .env("RUNOPS_AGENT_DATA_DIR", sb.path(&format!("agent-{name}")))
            .env("RUNOPS_KILL_GRACE_SECS", "2")
            .env("RUN_AS_USER", whoami())
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f));
        for (k, v) in env {
            c.env(k, v);
        }
        customize(&mut c);
        Agent {
            child: c.spawn().expect("spawn runops agent"),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cmd` with `input` on its standard input; returns its output.
pub fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runops");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("wait for runops")
}
