//! End-to-end: several `runops server` replicas on one PostgreSQL database (issue 16),
//! real binaries, real PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust auth; each
//! test creates a database of its own and drops it). Under CI a missing PostgreSQL fails
//! the test; elsewhere it is skipped with a reason.
//!
//! `RUNOPS_E2E_REPLICA_TASKS` sets how many tasks the round-robin test creates (default
//! 300; `scripts/replicas-2000.sh` runs it with 2,000).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

/// Base64 of 32 bytes: the key every replica of a test shares.
const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OTHER_KEY: &str = "HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

fn psql(database: &str, sql: &str) -> Option<String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A database of this test, dropped when the test ends (even when it fails).
struct Database {
    name: String,
}

impl Database {
    /// `None` when PostgreSQL is not reachable (and not under CI).
    fn create(tag: &str) -> Option<Database> {
        let up = psql("postgres", "select 1").is_some();
        if !require("PostgreSQL on 127.0.0.1:5432 with `psql`", up) {
            return None;
        }
        let name = format!("runops_e2e_{tag}_{}", std::process::id());
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        psql("postgres", &format!("CREATE DATABASE {name}")).expect("create the test database");
        Some(Database { name })
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A replica of the control plane on `db` (each in a sandbox of its own: log, HOME).
fn replica(sb: &Sandbox, db: &Database) -> Server {
    let url = db.url();
    Server::start_with(sb, 10, |c| {
        c.env("RUNOPS_DATABASE_URL", &url)
            .env("RUNOPS_SECRET_KEY", SECRET_KEY)
            .env("RUNOPS_LOG", "info");
    })
}

fn task_count() -> usize {
    std::env::var("RUNOPS_E2E_REPLICA_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Every task's final status, from `tasks list --json` on `server`.
fn statuses(server: &Server, limit: usize) -> BTreeMap<i64, String> {
    let mut out = BTreeMap::new();
    let mut before: Option<i64> = None;
    loop {
        let mut args = vec![
            "tasks".to_string(),
            "list".into(),
            "--json".into(),
            "--limit".into(),
            "1000".into(),
        ];
        if let Some(b) = before {
            args.extend(["--before".into(), b.to_string()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let list: serde_json::Value = serde_json::from_str(&server.cli_ok(&refs)).unwrap();
        let tasks = list.as_array().cloned().unwrap_or_default();
        if tasks.is_empty() {
            break;
        }
        for t in &tasks {
            out.insert(
                t["id"].as_i64().unwrap(),
                t["status"].as_str().unwrap_or_default().to_string(),
            );
        }
        before = tasks.last().and_then(|t| t["id"].as_i64());
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// Three replicas on one database, an agent on each of two of them, tasks created
/// round-robin on all three: every task runs exactly once (its marker file has one
/// line) and none is lost.
#[test]
fn tasks_created_on_any_replica_run_exactly_once_on_agents_of_other_replicas() {
    let Some(db) = Database::create("rr") else {
        return;
    };
    let sbs: Vec<Sandbox> = (0..3).map(|_| Sandbox::new()).collect();
    let replicas: Vec<Server> = sbs.iter().map(|sb| replica(sb, &db)).collect();
    let markers = sbs[0].path("markers");
    std::fs::create_dir_all(&markers).unwrap();
    // Two tag sets, each served by one agent connected to a different replica.
    replicas[0].cli_ok(&[
        "targets", "create", "--name", "a", "--type", "bash", "--tags", "a",
    ]);
    replicas[1].cli_ok(&[
        "targets", "create", "--name", "b", "--type", "bash", "--tags", "b",
    ]);
    let token_a = replicas[0].create_agent_token_for("a");
    let token_b = replicas[1].create_agent_token_for("b");
    let _agent_a = Agent::start(&sbs[0], "a", &token_a, Some("a"), &[("CONCURRENCY", "8")]);
    let _agent_b = Agent::start(&sbs[1], "b", &token_b, Some("b"), &[("CONCURRENCY", "8")]);
    wait_for("both agents to connect", || {
        let out = replicas[2].cli_ok(&["agents", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (v.as_array()?.len() == 2).then_some(())
    });

    let n = task_count();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let server = &replicas[i % 3];
        let target = if i % 2 == 0 { "a" } else { "b" };
        let marker = markers.join(format!("task-{i}"));
        let script = format!("echo \"run {i}\" >> '{}'; echo done {i}", marker.display());
        ids.push((server.submit(target, &script), i));
    }
    let done = wait_for("every task to finish", || {
        let st = statuses(&replicas[1], n);
        let finished = st
            .values()
            .filter(|s| *s == "success" || *s == "failure")
            .count();
        (finished >= n).then_some(st)
    });
    assert_eq!(done.len(), n, "every created task is listed");
    let failed: Vec<_> = done.iter().filter(|(_, s)| *s != "success").collect();
    assert!(failed.is_empty(), "tasks that did not succeed: {failed:?}");
    for (id, i) in &ids {
        let marker = markers.join(format!("task-{i}"));
        let text = std::fs::read_to_string(&marker)
            .unwrap_or_else(|e| panic!("task {id}: no marker {}: {e}", marker.display()));
        assert_eq!(text, format!("run {i}\n"), "task {id} ran exactly once");
    }
    // Any replica serves any task's log.
    let (id, i) = ids[n - 1];
    assert_eq!(replicas[0].logs(id).trim(), format!("done {i}"));
}

/// A log follower on one replica sees the output an agent uploads to another one, as
/// it comes (`tasks logs -f` ends when the task ends, on the other replica).
#[test]
fn logs_follow_on_one_replica_shows_what_the_agent_sends_to_another() {
    let Some(db) = Database::create("follow") else {
        return;
    };
    let sbs: Vec<Sandbox> = (0..2).map(|_| Sandbox::new()).collect();
    let replicas: Vec<Server> = sbs.iter().map(|sb| replica(sb, &db)).collect();
    replicas[0].cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let token = replicas[0].create_agent_token();
    let _agent = Agent::start(&sbs[0], "a", &token, None, &[]);
    let gate = sbs[0].path("gate");
    let script = format!(
        "echo first; while [ ! -e '{}' ]; do sleep 0.05; done; echo second",
        gate.display()
    );
    let id = replicas[0].submit("sh", &script);
    replicas[0].wait_status(id, "running");
    // Follow on the replica the agent does not talk to.
    let mut follow = replicas[1]
        .cli_cmd(&["tasks", "logs", &id.to_string(), "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => seen.extend_from_slice(&buf[..k]),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    wait_for(
        "the follower to be attached and the first line stored",
        || replicas[1].logs(id).contains("first").then_some(()),
    );
    std::fs::write(&gate, "").unwrap();
    let status = wait_for("the follower to end with the task", || {
        follow.try_wait().ok().flatten()
    });
    assert!(
        status.success(),
        "tasks logs -f exits 0 when the task succeeds"
    );
    let seen = reader.join().unwrap();
    assert_eq!(seen, "first\nsecond\n");
}

/// A replica given another RUNOPS_SECRET_KEY than the database's refuses to start.
#[test]
fn a_replica_with_another_secret_key_refuses_to_start() {
    let Some(db) = Database::create("key") else {
        return;
    };
    let sb = Sandbox::new();
    let _first = replica(&sb, &db);
    let other = Sandbox::new();
    let out = output_within(
        {
            let mut c = base_command(&other.home());
            c.args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
                .env("RUNOPS_DATABASE_URL", db.url())
                .env("RUNOPS_SECRET_KEY", OTHER_KEY);
            c
        },
        WAIT,
        "runops server with another key",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("RUNOPS_SECRET_KEY is not the key this database was set up with"),
        "{err}"
    );
    // And without any key: a clear error too, not a key file of its own.
    let out = output_within(
        {
            let mut c = base_command(&other.home());
            c.args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
                .env("RUNOPS_DATABASE_URL", db.url());
            c
        },
        WAIT,
        "runops server without a key",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("set RUNOPS_SECRET_KEY"),
        "{}",
        stderr(&out)
    );
}

/// `runops server migrate` applies the migrations and exits; a second run has nothing
/// to do.
#[test]
fn server_migrate_applies_the_migrations_and_exits() {
    let Some(db) = Database::create("migrate") else {
        return;
    };
    let sb = Sandbox::new();
    let run = || {
        let mut c = base_command(&sb.home());
        c.args(["server", "migrate"])
            .env("RUNOPS_DATABASE_URL", db.url());
        output_within(c, WAIT, "runops server migrate")
    };
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("applied migration(s) 1"),
        "{}",
        stdout(&out)
    );
    let tables = psql(&db.name, "select count(*) from tasks").expect("the schema exists");
    assert_eq!(tables.trim(), "0");
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
}

/// The replica an agent talks to is SIGKILLed while a task runs: the agent, given every
/// replica's URL (`API_URL=a,b`), moves to the other one, and the task ends there with
/// its whole log.
#[test]
fn an_agent_moves_to_another_replica_when_its_replica_is_killed_mid_task() {
    let Some(db) = Database::create("kill") else {
        return;
    };
    let sbs: Vec<Sandbox> = (0..2).map(|_| Sandbox::new()).collect();
    let mut replicas: Vec<Server> = sbs.iter().map(|sb| replica(sb, &db)).collect();
    replicas[1].cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let token = replicas[1].create_agent_token();
    let urls = format!("{},{}", replicas[0].url(), replicas[1].url());
    let agent = Agent::start(&sbs[1], "a", &token, None, &[("API_URL", &urls)]);
    let gate = sbs[1].path("gate");
    let script = format!(
        "for i in $(seq 1 50); do echo before $i; done; while [ ! -e '{}' ]; do sleep 0.05; done; for i in $(seq 1 50); do echo after $i; done",
        gate.display()
    );
    let id = replicas[1].submit("sh", &script);
    replicas[1].wait_status(id, "running");
    wait_for("the first half of the log on the server", || {
        replicas[1].logs(id).contains("before 50").then_some(())
    });
    // SIGKILL the replica the agent uses (the first of its URLs).
    let killed = replicas.remove(0);
    drop(killed);
    std::fs::write(&gate, "").unwrap();
    let survivor = &replicas[0];
    let t = survivor.wait_final(id);
    assert_eq!(t["status"], "success", "{t}\nagent log:\n{}", agent.log());
    let expected: String = (1..=50)
        .map(|i| format!("before {i}\n"))
        .chain((1..=50).map(|i| format!("after {i}\n")))
        .collect();
    assert_eq!(survivor.logs(id), expected);
    // And the agent keeps taking work on the survivor.
    let next = survivor.submit("sh", "echo still here");
    assert_eq!(survivor.wait_final(next)["status"], "success");
    assert_eq!(survivor.logs(next), "still here\n");
}

/// A TCP relay between a replica and PostgreSQL that the test can cut (every
/// connection closed, new ones refused) and restore: the database "goes away" for this
/// replica without touching the PostgreSQL other tests share.
struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut list = conns2.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// While its database is unreachable a replica reports not-ready (`/readyz` 503, still
/// live), and once it is back the replica serves again without a restart: the task
/// created before the outage and one created after both run once.
#[test]
fn a_replica_is_not_ready_while_its_database_is_away_and_recovers_without_a_restart() {
    let Some(db) = Database::create("outage") else {
        return;
    };
    let relay = Relay::start(5432);
    let sb = Sandbox::new();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        relay.port, db.name
    );
    let server = Server::start_with(&sb, 10, |c| {
        c.env("RUNOPS_DATABASE_URL", &url)
            .env("RUNOPS_SECRET_KEY", SECRET_KEY);
    });
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let token = server.create_agent_token();
    let _agent = Agent::start(&sb, "a", &token, None, &[]);
    let marker = sb.path("ran");
    let first = server.submit("sh", &format!("echo 1 >> '{}'", marker.display()));
    assert_eq!(server.wait_final(first)["status"], "success");
    assert_eq!(http_get(server.port, "/readyz").map(|r| r.0), Some(200));

    relay.cut();
    wait_for("/readyz to fail while the database is away", || {
        http_get(server.port, "/readyz")
            .filter(|(status, _)| *status == 503)
            .map(|_| ())
    });
    assert_eq!(
        http_get(server.port, "/healthz").map(|r| r.0),
        Some(200),
        "the process itself is alive"
    );
    relay.restore();
    wait_for("/readyz to pass again", || {
        http_get(server.port, "/readyz")
            .filter(|(status, _)| *status == 200)
            .map(|_| ())
    });
    let second = server.submit("sh", &format!("echo 2 >> '{}'", marker.display()));
    assert_eq!(server.wait_final(second)["status"], "success");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "1\n2\n");
}

/// `runops server copy-store` moves a SQLite installation (targets with a sealed
/// config, tasks and their logs, tokens, audit rows) into PostgreSQL, verified by counts
/// and checksums; a replica on the copy serves the same log bytes, accepts the same
/// tokens and opens the sealed config with the installation's key.
#[test]
fn copy_store_moves_a_sqlite_installation_to_postgresql() {
    let Some(db) = Database::create("copy") else {
        return;
    };
    let sb = Sandbox::new();
    let (ids, agent_token, logs) = {
        let old = Server::start(&sb, 10);
        old.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
        old.cli_ok(&[
            "targets",
            "create",
            "--name",
            "cfg",
            "--type",
            "bash",
            "--secret-provider",
            "runops",
            "--config",
            r#"{"API_USER": "svc-copy-user"}"#,
        ]);
        let agent_token = old.create_agent_token();
        let _agent = Agent::start(&sb, "a", &agent_token, None, &[]);
        let ids: Vec<i64> = (0..3)
            .map(|i| {
                old.submit(
                    "sh",
                    &format!("for j in $(seq 1 200); do echo task {i} line $j; done"),
                )
            })
            .collect();
        let logs: Vec<String> = ids
            .iter()
            .map(|id| {
                assert_eq!(old.wait_final(*id)["status"], "success");
                old.logs(*id)
            })
            .collect();
        (ids, agent_token, logs)
        // The old server and its agent stop here.
    };
    let data_dir = sb.path("server-data");
    let key = std::fs::read_to_string(data_dir.join("secret.key")).unwrap();
    let mut c = base_command(&sb.home());
    c.args(["server", "copy-store", "--from"])
        .arg(format!("sqlite://{}", data_dir.display()))
        .args(["--to", &db.url()]);
    let out = output_within(c, WAIT, "runops server copy-store");
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    for table in [
        "tasks",
        "task_log_chunks",
        "tokens",
        "audit_events",
        "targets",
    ] {
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with(table))
            .unwrap_or_else(|| panic!("{table} in the report:\n{report}"));
        assert!(!line.contains(" 0 rows"), "{line}");
    }
    assert!(report.contains("RUNOPS_SECRET_KEY"), "{report}");

    let sb2 = Sandbox::new();
    let url = db.url();
    let replica = Server::start_with(&sb2, 10, |c| {
        c.env("RUNOPS_DATABASE_URL", &url)
            .env("RUNOPS_SECRET_KEY", key.trim());
    });
    for (id, log) in ids.iter().zip(&logs) {
        assert_eq!(&replica.logs(*id), log, "task {id}: the same log bytes");
    }
    // The same agent token (and the same agent data dir: it resumes its session).
    let _agent = Agent::start(&sb, "a", &agent_token, None, &[("API_URL", &replica.url())]);
    let next = replica.submit(
        "cfg",
        "test \"$API_USER\" = svc-copy-user && echo config opens",
    );
    let t = replica.wait_final(next);
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(replica.logs(next), "config opens\n");
    assert!(
        next > *ids.last().unwrap(),
        "new ids continue after the copied ones"
    );
    // A second copy into the same database is refused.
    let mut c = base_command(&sb.home());
    c.args(["server", "copy-store", "--from"])
        .arg(format!("sqlite://{}", data_dir.display()))
        .args(["--to", &db.url()]);
    let out = output_within(c, WAIT, "runops server copy-store again");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already holds an installation"),
        "{}",
        stderr(&out)
    );
}

/// A PostgreSQL cluster of one test alone: `initdb` in a temp dir, started on a free
/// port of 127.0.0.1 with trust auth, so the test may stop and start it at will (the
/// shared server on 5432 is never touched). Stopped (immediately) when dropped.
struct PrivatePostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// Running as root: `initdb` and `postgres` refuse root, so they run as `postgres`.
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` and `pg_ctl`.
fn postgres_bin_dir() -> Option<std::path::PathBuf> {
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl PrivatePostgres {
    /// `None` when the PostgreSQL server binaries are not installed (and not under CI).
    fn start() -> Option<PrivatePostgres> {
        let bin = postgres_bin_dir();
        if !require(
            "the PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb and pg_ctl)",
            bin.is_some(),
        ) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("runops-pg-")
            .tempdir()
            .expect("create temp dir");
        let as_postgres = nix::unistd::getuid().is_root();
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres").ok().flatten();
            if !require(
                "the `postgres` user (initdb refuses to run as root)",
                user.is_some(),
            ) {
                return None;
            }
            let user = user?;
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .expect("give the cluster's temp dir to the postgres user");
        }
        let pg = PrivatePostgres {
            bin: bin?,
            dir,
            port: free_port(),
            as_postgres,
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start_server();
        Some(pg)
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        let mut c = self.command(tool);
        c.args(args);
        let out = output_within(c, WAIT, tool);
        assert!(
            out.status.success(),
            "{tool} {} failed: {}{}\nserver log:\n{}",
            args.join(" "),
            stdout(&out),
            stderr(&out),
            std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
        );
        stdout(&out)
    }

    /// Starts the server and waits until it accepts connections.
    fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server as an operator's restart does (`-m fast`: sessions are ended,
    /// transactions rolled back) and waits until it is down.
    fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "fast", "-w", "stop"],
        );
    }

    /// `sql`'s output through `psql` (unaligned, tuples only).
    fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut c = self.command("pg_ctl");
        c.args(["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status();
    }
}

/// The marker files written so far: task index → the lines in it.
fn markers_written(dir: &std::path::Path) -> BTreeMap<usize, String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let i = e
                .file_name()
                .to_str()?
                .strip_prefix("task-")?
                .parse()
                .ok()?;
            Some((i, std::fs::read_to_string(e.path()).ok()?))
        })
        .collect()
}

/// PostgreSQL (a private cluster) is restarted while tasks are created on three replicas
/// and run by agents of two of them. While it is down every replica reports not-ready
/// and stays live; once it is back every replica serves again without being restarted,
/// listens for the others' wake-ups again, and every task runs exactly once (its marker
/// file holds one line): none is lost, none runs twice.
#[test]
fn replicas_ride_out_a_postgresql_restart_under_load_without_losing_or_repeating_a_task() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    // Tasks created after the restart, once every replica is ready again.
    const AFTER_RESTART: usize = 20;
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let url = pg.url();
    let sbs: Vec<Sandbox> = (0..3).map(|_| Sandbox::new()).collect();
    // A lease longer than the outage: agents are not declared lost while PostgreSQL is down.
    let replicas: Vec<Server> = sbs
        .iter()
        .map(|sb| {
            Server::start_with(sb, 60, |c| {
                c.env("RUNOPS_DATABASE_URL", &url)
                    .env("RUNOPS_SECRET_KEY", SECRET_KEY)
                    .env("RUNOPS_LOG", "info");
            })
        })
        .collect();
    let markers = sbs[0].path("markers");
    std::fs::create_dir_all(&markers).unwrap();
    replicas[0].cli_ok(&[
        "targets", "create", "--name", "a", "--type", "bash", "--tags", "a",
    ]);
    replicas[1].cli_ok(&[
        "targets", "create", "--name", "b", "--type", "bash", "--tags", "b",
    ]);
    let token_a = replicas[0].create_agent_token_for("a");
    let token_b = replicas[1].create_agent_token_for("b");
    let agent_a = Agent::start(&sbs[0], "a", &token_a, Some("a"), &[("CONCURRENCY", "4")]);
    let agent_b = Agent::start(&sbs[1], "b", &token_b, Some("b"), &[("CONCURRENCY", "4")]);
    wait_for("both agents to connect", || {
        let out = replicas[2].cli_ok(&["agents", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (v.as_array()?.len() == 2).then_some(())
    });
    let listening = || {
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'")
            .trim()
            .to_string()
    };
    assert_eq!(listening(), "3", "every replica listens for wake-ups");

    // index → the id `tasks create` printed, or its error (the database was down).
    let created: Mutex<Vec<(usize, Result<i64, String>)>> = Mutex::new(Vec::new());
    let restarted = AtomicBool::new(false);
    std::thread::scope(|s| {
        let creator = s.spawn(|| {
            let mut after = 0;
            for i in 0.. {
                let marker = markers.join(format!("task-{i}"));
                // Long enough that tasks are running when PostgreSQL goes away.
                let script = format!("echo \"run {i}\" >> '{}'; sleep 0.3", marker.display());
                let target = if i % 2 == 0 { "a" } else { "b" };
                let was_restarted = restarted.load(Ordering::SeqCst);
                let out = replicas[i % 3].cli(&[
                    "tasks",
                    "create",
                    "-t",
                    target,
                    "-s",
                    &script,
                    "--no-wait",
                ]);
                let result = if out.status.success() {
                    Ok(stdout(&out).trim().parse::<i64>().expect("a task id"))
                } else {
                    Err(stderr(&out))
                };
                if was_restarted && result.is_ok() {
                    after += 1;
                }
                created.lock().unwrap().push((i, result));
                if after == AFTER_RESTART {
                    break;
                }
            }
        });
        wait_for("tasks to run before the restart", || {
            (markers_written(&markers).len() >= 10).then_some(())
        });
        pg.stop_server();
        for r in &replicas {
            wait_for(
                "/readyz to fail on every replica while PostgreSQL is down",
                || {
                    http_get(r.port, "/readyz")
                        .filter(|(status, _)| *status == 503)
                        .map(|_| ())
                },
            );
            assert_eq!(
                http_get(r.port, "/healthz").map(|r| r.0),
                Some(200),
                "the replica itself stays alive"
            );
        }
        // What a user creating a task meanwhile sees: a clear error to retry.
        let refusal = wait_for("a creation to be refused while PostgreSQL is down", || {
            let created = created.lock().unwrap();
            created.iter().find_map(|c| c.1.as_ref().err().cloned())
        });
        assert!(
            refusal.contains("cannot reach its database") && refusal.contains("retry"),
            "{refusal}"
        );
        pg.start_server();
        for r in &replicas {
            wait_for("/readyz to pass again on every replica", || {
                http_get(r.port, "/readyz")
                    .filter(|(status, _)| *status == 200)
                    .map(|_| ())
            });
        }
        restarted.store(true, Ordering::SeqCst);
        creator.join().expect("the creating thread");
    });
    wait_for("every replica to LISTEN again", || {
        (listening() == "3").then_some(())
    });

    let created = created.into_inner().unwrap();
    let accepted: Vec<(usize, i64)> = created
        .iter()
        .filter_map(|(i, r)| r.as_ref().ok().map(|id| (*i, *id)))
        .collect();
    let total = created.len();
    let listed = wait_for("every task to finish", || {
        let st = statuses(&replicas[2], total + 1);
        st.values()
            .all(|s| s == "success" || s == "failure")
            .then_some(st)
    });
    let failed: Vec<_> = listed.iter().filter(|(_, s)| *s != "success").collect();
    assert!(
        failed.is_empty(),
        "tasks that did not succeed: {failed:?}\nagent a:\n{}\nagent b:\n{}",
        agent_a.log(),
        agent_b.log()
    );
    let ran = markers_written(&markers);
    for (i, id) in &accepted {
        assert!(
            listed.contains_key(id),
            "task {id} was created and is listed"
        );
        assert_eq!(
            ran.get(i).map(String::as_str),
            Some(format!("run {i}\n").as_str()),
            "task {id} ran exactly once"
        );
    }
    // A creation refused while the database was down may still have been stored (the
    // answer was lost): then it ran once too. Nothing else ran.
    for (i, text) in &ran {
        assert_eq!(text, &format!("run {i}\n"), "task #{i} ran exactly once");
    }
    assert_eq!(
        ran.len(),
        listed.len(),
        "every stored task ran, and only those"
    );
    assert!(
        accepted.len() > AFTER_RESTART,
        "tasks were created before the restart"
    );
    eprintln!(
        "{total} creations: {} accepted, {} refused while PostgreSQL was down; {} tasks stored, each run once",
        accepted.len(),
        total - accepted.len(),
        listed.len()
    );
}

/// A POST of a form on loopback; returns (status, headers and body).
fn http_post_form(port: u16, path: &str, form: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf))
}

/// A GET on loopback with a cookie; returns (status, headers and body).
fn http_get_with_cookie(port: u16, path: &str, cookie: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf))
}

/// The web app signs in on PostgreSQL: a session opened on one replica is honoured by
/// another (a browser behind a load balancer lands on any), and ends on every replica
/// when the API token it was opened with is revoked.
#[test]
fn a_web_session_opened_on_one_replica_is_honoured_by_another() {
    let Some(db) = Database::create("web") else {
        return;
    };
    let sbs: Vec<Sandbox> = (0..2).map(|_| Sandbox::new()).collect();
    let replicas: Vec<Server> = sbs.iter().map(|sb| replica(sb, &db)).collect();
    let out = replicas[0].cli_ok(&["tokens", "create", "--json"]);
    let token: serde_json::Value = serde_json::from_str(&out).expect("tokens create --json");
    let (secret, token_id) = (
        token["token"].as_str().expect("a token").to_string(),
        token["id"].as_i64().expect("a token id"),
    );
    let (status, answer) =
        http_post_form(replicas[0].port, "/sign-in", &format!("token={secret}")).unwrap();
    assert_eq!(status, 303, "signed in and sent to the tasks:\n{answer}");
    let cookie = answer
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("a session cookie:\n{answer}"))
        .to_string();
    let (status, page) = http_get_with_cookie(replicas[1].port, "/tasks", &cookie).unwrap();
    assert_eq!(status, 200, "the other replica knows the session:\n{page}");
    replicas[1].cli_ok(&["tokens", "revoke", &token_id.to_string()]);
    for r in &replicas {
        let (status, page) = http_get_with_cookie(r.port, "/tasks", &cookie).unwrap();
        assert_eq!(status, 303, "the session ended with its token:\n{page}");
    }
}
