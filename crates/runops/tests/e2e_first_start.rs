//! End-to-end: the first admin token cannot be lost (a taken port creates nothing;
//! while the token was never used, each start says how to replace it, and
//! RUNOPS_ADMIN_TOKEN does), and the data dir is private (0700, files 0600).

mod common;

use common::*;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// A `runops server` started without RUNOPS_ADMIN_TOKEN (unless given), output in `log`.
struct Proc {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Proc {
    fn start(sb: &Sandbox, port: u16, n: usize, admin_token: Option<&str>) -> Proc {
        let log = sb.path(&format!("server-{n}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut c = base_command(&sb.home());
        c.args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(sb.path("data"))
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f));
        if let Some(t) = admin_token {
            c.env("RUNOPS_ADMIN_TOKEN", t);
        }
        let p = Proc {
            child: c.spawn().unwrap(),
            log,
            port,
        };
        wait_for("the server to answer /healthz", || {
            http_get(port, "/healthz").filter(|(st, _)| *st == 200)
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `runops ARGS` with `token`; (success, stdout+stderr).
    fn cli(&self, sb: &Sandbox, token: &str, args: &[&str]) -> (bool, String) {
        let out = base_command(&sb.home())
            .args(args)
            .env("RUNOPS_URL", format!("http://127.0.0.1:{}", self.port))
            .env("RUNOPS_TOKEN", token)
            .output()
            .unwrap();
        (out.status.success(), stdout(&out) + &stderr(&out))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RECOVERY: &str = "has never used its API token";

fn printed_token(p: &Proc) -> String {
    wait_for("the first admin token to be printed", || {
        let log = p.log();
        let i = log.find("(shown once):\n")?;
        log[i + "(shown once):\n".len()..]
            .lines()
            .next()
            .map(|l| l.trim().to_string())
    })
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_taken_port_creates_nothing_and_an_unused_first_token_can_be_replaced() {
    let sb = Sandbox::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = base_command(&sb.home())
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(sb.path("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    assert!(!sb.path("data").exists(), "a failed start left a data dir");
    drop(taken);

    // The next start is the first one: it prints the token.
    let first = Proc::start(&sb, port, 1, None);
    let lost = printed_token(&first);
    assert!(!first.log().contains(RECOVERY));
    drop(first);

    // Never used: every start says how to recover.
    let second = Proc::start(&sb, port, 2, None);
    wait_for("the recovery hint", || {
        let log = second.log();
        (log.contains(RECOVERY) && log.contains("RUNOPS_ADMIN_TOKEN=")).then_some(())
    });
    drop(second);

    // Started once with a new value: it replaces the unused token, audited.
    let fresh = "rou_e2e-replacement-admin-token-0123456789abcdefghij";
    let third = Proc::start(&sb, port, 3, Some(fresh));
    let (ok, out) = third.cli(&sb, fresh, &["tasks", "list"]);
    assert!(ok, "{out}");
    let (ok, out) = third.cli(&sb, &lost, &["tasks", "list"]);
    assert!(
        !ok && out.contains("revoked"),
        "the replaced token still works: {out}"
    );
    let (ok, audit) = third.cli(&sb, fresh, &["audit", "list", "--json"]);
    assert!(ok, "{audit}");
    assert!(
        audit.contains("replaced by RUNOPS_ADMIN_TOKEN before its first use"),
        "{audit}"
    );
    drop(third);
    let fourth = Proc::start(&sb, port, 4, None);
    assert!(!fourth.log().contains(RECOVERY), "{}", fourth.log());
}

#[test]
fn a_used_first_token_stops_the_recovery_hint_and_is_never_replaced() {
    let sb = Sandbox::new();
    let port = free_port();
    let first = Proc::start(&sb, port, 1, None);
    let token = printed_token(&first);
    let (ok, out) = first.cli(&sb, &token, &["tasks", "list"]);
    assert!(ok, "{out}");
    drop(first);
    let other = "rou_e2e-second-admin-token-0123456789abcdefghijklmno";
    let second = Proc::start(&sb, port, 2, Some(other));
    assert!(!second.log().contains(RECOVERY), "{}", second.log());
    // A used token is never revoked by a new RUNOPS_ADMIN_TOKEN: both work.
    assert!(second.cli(&sb, &token, &["tasks", "list"]).0);
    assert!(second.cli(&sb, other, &["tasks", "list"]).0);
}

#[test]
fn the_data_dir_is_private() {
    let sb = Sandbox::new();
    // As an older version left it: world-readable.
    std::fs::create_dir_all(sb.path("server-data")).unwrap();
    std::fs::set_permissions(
        sb.path("server-data"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let server = Server::start(&sb, 10);
    server.cli_ok(&["targets", "create", "--name", "t", "--type", "bash"]);
    let dir = &server.data_dir;
    assert_eq!(mode(dir), 0o700);
    for f in ["runops.db", "runops.db-wal", "runops.db-shm"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
}
