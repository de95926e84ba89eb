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
