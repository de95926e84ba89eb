//! End-to-end: templates from git with the real binary. A bare repository on disk
//! (read through `file://`, and through `git daemon` on loopback) holds the templates;
//! the tests push to it as a team would and watch the server follow: a change is
//! listed after a refresh, within the poll interval or after the git host's webhook;
//! a broken file is reported with its line without hiding the others; a failed pull
//! keeps the last good set; a force-push that removes a template leaves the tasks made
//! from it intact.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const GREET: &str = "#!/bin/bash\n\
# ---\n\
# description: Greets someone\n\
# targets: local\n\
# param who:\n\
#   type: text\n\
#   required: true\n\
#   description: whom to greet\n\
# param times: number\n\
#   default: 1\n\
# ---\n\
for i in $(seq {{times}}); do echo \"hello {{who}}\"; done\n";

const BROKEN: &str = "# ---\n# targets: local\n# colour: red\n# ---\necho never\n";

/// A bare repository and a working clone that pushes to it.
struct Repo {
    bare: PathBuf,
    work: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Repo {
    fn new(sb: &Sandbox) -> Repo {
        let bare = sb.path("origin.git");
        let work = sb.path("work");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::create_dir_all(work.join("templates")).unwrap();
        git(&bare, &["init", "--quiet", "--bare"]);
        git(&work, &["init", "--quiet"]);
        Repo { bare, work }
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.work.join("templates").join(file), text).unwrap();
    }

    /// Commits everything and pushes to `main`; returns the commit SHA.
    fn push(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
        git(
            &self.work,
            &[
                "push",
                "--quiet",
                "--force",
                &self.bare.display().to_string(),
                "HEAD:refs/heads/main",
            ],
        );
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_string()
    }
}

fn list_json(server: &Server) -> Value {
    serde_json::from_str(&server.cli_ok(&["templates", "list", "--json"])).expect("JSON list")
}

fn names(list: &Value) -> Vec<String> {
    list["templates"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn start_server(sb: &Sandbox, repo_url: &str, extra: &[&str]) -> Server {
    let (url, extra) = (
        repo_url.to_string(),
        extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    Server::start_with(sb, 10, move |c| {
        c.args(["--templates-repo", &url, "--templates-branch", "main"])
            .args(&extra);
    })
}

/// A raw HTTP POST on loopback with `headers` (each ending in CRLF); returns the status.
fn http_post(port: u16, path: &str, headers: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn templates_run_with_checked_parameters_and_outlive_a_force_push() {
    let sb = Sandbox::new();
    let repo = Repo::new(&sb);
    repo.write("greet.sh", GREET);
    repo.write("broken.sh", BROKEN);
    repo.write("README.md", "not a template\n");
    let first = repo.push("greet and a broken file");
    // A long interval: only the start and `templates refresh` pull here.
    let server = start_server(&sb, &repo.url(), &["--templates-interval-secs", "3600"]);
    server.cli_ok(&["targets", "create", "--name", "local", "--type", "bash"]);
    server.cli_ok(&["targets", "create", "--name", "other", "--type", "bash"]);
    let token = server.create_agent_token();
    let _agent = Agent::start(&sb, "a", &token, None, &[]);

    // Pulled at start: the good template is served, the broken file named with its line.
    let list = wait_for("the first pull", || {
        let l = list_json(&server);
        (l["commit"] == first.as_str()).then_some(l)
    });
    assert_eq!(names(&list), ["greet"]);
    assert_eq!(list["broken"][0]["path"], "templates/broken.sh");
    assert_eq!(list["broken"][0]["line"], 3);
    let out = server.cli(&["templates", "list"]);
    assert!(stdout(&out).contains("greet"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("warning: templates/broken.sh:3: unknown header key `colour`"),
        "{}",
        stderr(&out)
    );
    let shown = server.cli_ok(&["templates", "show", "greet"]);
    assert!(
        shown.contains("who (text, required): whom to greet"),
        "{shown}"
    );
    assert!(shown.contains("times (number, default 1)"), "{shown}");

    // Run: the values go into the script; the output streams; the exit code is the task's.
    let out = server.cli(&[
        "templates",
        "run",
        "greet",
        "-t",
        "local",
        "-p",
        "who=alice",
        "--param",
        "times=2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello alice\nhello alice\n");
    let id: i64 = server
        .cli_ok(&[
            "templates",
            "run",
            "greet",
            "-t",
            "local",
            "-p",
            "who=bob",
            "--no-wait",
        ])
        .trim()
        .parse()
        .expect("--no-wait prints the id");
    let task = server.wait_final(id);
    assert_eq!(task["status"], "success");
    assert_eq!(task["template"]["name"], "greet");
    assert_eq!(task["template"]["commit"], first.as_str());
    assert_eq!(task["template"]["params"]["who"], "bob");
    assert_eq!(task["template"]["params"]["times"], "1");

    // Values are checked on the server; each refusal names the parameter.
    for (args, expected) in [
        (
            vec!["-p", "who=a;rm -rf /"],
            "parameter `who` does not accept",
        ),
        (vec!["-p", "who=a", "-p", "times=many"], "expected a number"),
        (vec!["-p", "whom=a"], "unknown parameter `whom`"),
        (vec![], "parameter `who` is required"),
    ] {
        let mut full = vec!["templates", "run", "greet", "-t", "local"];
        full.extend(args);
        let out = server.cli(&full);
        assert_eq!(out.status.code(), Some(1), "{full:?}");
        assert!(
            stderr(&out).contains(expected),
            "{full:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("hint: see its parameters"),
            "{}",
            stderr(&out)
        );
    }
    let out = server.cli(&["templates", "run", "greet", "-t", "other", "-p", "who=a"]);
    assert!(
        stderr(&out)
            .contains("template `greet` may not run on target `other`: it runs on targets local"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["templates", "run", "broken", "-t", "local"]);
    assert!(
        stderr(&out).contains("templates/broken.sh:3"),
        "{}",
        stderr(&out)
    );

    // A template can ask for review on a target that has none.
    repo.write(
        "guarded.sh",
        "# ---\n# targets: local\n# review: anyone\n# ---\necho guarded\n",
    );
    let second = repo.push("a reviewed template");
    // Pulling on demand is for admins: a plain user is refused, and nothing is pulled.
    let dev = server.create_user("dev", "dev");
    let out = server.cli_as(&dev, &["templates", "refresh"]);
    assert!(
        !out.status.success(),
        "a plain user refreshed the templates"
    );
    assert!(stderr(&out).contains("admin"), "{}", stderr(&out));
    assert_eq!(list_json(&server)["commit"], first.as_str());
    let refreshed: Value =
        serde_json::from_str(&server.cli_ok(&["templates", "refresh", "--json"])).unwrap();
    assert_eq!(refreshed["commit"], second.as_str());
    assert_eq!(names(&refreshed), ["greet", "guarded"]);
    let guarded: i64 = server
        .cli_ok(&["templates", "run", "guarded", "-t", "local", "--no-wait"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(server.task(guarded)["status"], "pending-review");

    // A pull that fails keeps serving the last good set and says why.
    let moved = sb.path("moved.git");
    std::fs::rename(&repo.bare, &moved).unwrap();
    let out = server.cli(&["templates", "refresh"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("greet"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("warning: the last pull failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("git fetch failed"),
        "{}",
        stderr(&out)
    );
    std::fs::rename(&moved, &repo.bare).unwrap();

    // A force-push that removes `greet`: it is gone, the tasks made from it are not.
    git(
        &repo.work,
        &["checkout", "--quiet", "--orphan", "rewritten"],
    );
    git(&repo.work, &["rm", "--quiet", "-r", "--cached", "."]);
    std::fs::remove_file(repo.work.join("templates/greet.sh")).unwrap();
    std::fs::remove_file(repo.work.join("templates/broken.sh")).unwrap();
    repo.push("history rewritten");
    let after: Value =
        serde_json::from_str(&server.cli_ok(&["templates", "refresh", "--json"])).unwrap();
    assert_eq!(names(&after), ["guarded"]);
    assert!(after["warning"].is_null(), "{after}");
    let out = server.cli(&["templates", "run", "greet", "-t", "local", "-p", "who=a"]);
    assert!(
        stderr(&out).contains("template `greet` not found"),
        "{}",
        stderr(&out)
    );
    let task = server.task(id);
    assert_eq!(task["template"]["name"], "greet");
    assert_eq!(task["template"]["commit"], first.as_str());
    let shown = server.cli_ok(&["tasks", "show", &id.to_string()]);
    assert!(shown.contains(&format!("greet at {first}")), "{shown}");
    assert!(shown.contains("times=1 who=bob"), "{shown}");
}

#[test]
fn templates_follow_pushes_within_the_interval() {
    let sb = Sandbox::new();
    let repo = Repo::new(&sb);
    repo.write("greet.sh", GREET);
    repo.push("first");
    let server = start_server(&sb, &repo.url(), &["--templates-interval-secs", "1"]);
    wait_for("the first pull", || {
        (names(&list_json(&server)) == ["greet"]).then_some(())
    });
    repo.write("later.sql", "-- ---\n-- targets: *\n-- ---\nselect 1;\n");
    let sha = repo.push("later");
    let list = wait_for("the pushed template to be listed", || {
        let l = list_json(&server);
        (l["commit"] == sha.as_str()).then_some(l)
    });
    assert_eq!(names(&list), ["greet", "later"]);
}

/// `git daemon` serving `base` on a free loopback port; killed when dropped.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = free_port();
        let child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        wait_for("git daemon to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn templates_over_git_daemon_refresh_on_a_signed_webhook() {
    let sb = Sandbox::new();
    let repo = Repo::new(&sb);
    repo.write("greet.sh", GREET);
    repo.push("first");
    let daemon = GitDaemon::start(repo.bare.parent().unwrap());
    let url = format!("git://127.0.0.1:{}/origin.git", daemon.port);
    let server = start_server(
        &sb,
        &url,
        &[
            "--templates-interval-secs",
            "3600",
            "--templates-webhook-secret",
            "hook-secret",
        ],
    );
    wait_for("the first pull", || {
        (names(&list_json(&server)) == ["greet"]).then_some(())
    });

    repo.write("second.sh", "# ---\n# tags: eu\n# ---\necho second\n");
    let sha = repo.push("second");
    let body = br#"{"ref":"refs/heads/main"}"#;
    // A wrong signature, or none, is refused and pulls nothing.
    let path = "/v1/templates/webhook";
    assert_eq!(
        http_post(
            server.port,
            path,
            "X-Hub-Signature-256: sha256=00ff\r\n",
            body
        ),
        401
    );
    assert_eq!(
        http_post(server.port, path, "X-Gitlab-Token: wrong\r\n", body),
        401
    );
    assert_eq!(http_post(server.port, path, "", body), 401);
    assert_eq!(names(&list_json(&server)), ["greet"]);
    // GitHub's signature: HMAC-SHA256 of the body with the shared secret.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"hook-secret").unwrap();
    mac.update(body);
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let headers = format!("X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={sig}\r\n");
    assert_eq!(http_post(server.port, path, &headers, body), 202);
    let list = wait_for("the webhook's pull", || {
        let l = list_json(&server);
        (l["commit"] == sha.as_str()).then_some(l)
    });
    assert_eq!(names(&list), ["greet", "second"]);
    // GitLab's token header works too.
    assert_eq!(
        http_post(server.port, path, "X-Gitlab-Token: hook-secret\r\n", body),
        202
    );
}

#[test]
fn server_without_templates_repo_says_how_to_configure_one() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let out = server.cli(&["templates", "list"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("--templates-repo"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["templates", "run", "x", "-t", "local"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("this server has no templates repository"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        http_post(server.port, "/v1/templates/webhook", "", b"{}"),
        404
    );
}
