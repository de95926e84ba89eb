//! End-to-end: what operators watch. The server's `/metrics` and `/readyz`, the agent's
//! `--health-addr` (`/healthz`, `/metrics`), and `LOG_FORMAT=json`, on the real binary.
//! Every `/metrics` answer goes through a strict Prometheus text parser, and the tests
//! check that the numbers move when tasks run.

mod common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};

// --- a strict Prometheus text-format parser ----------------------------------------------

type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    /// family name → type.
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one series `name{labels}` (labels given must match exactly).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in the exposition"))
    }

    /// A counter that may not exist yet reads 0.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// `{a="x",b="y"}` → labels; strict: no trailing comma, no duplicate, escapes \\ \" \n only.
fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("label without =\"...\" in {s:?}"))?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value in {s:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {s:?}")),
                },
                Some((_, '\n')) => return Err("raw newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice in {s:?}"));
        }
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            if r.is_empty() {
                return Err(format!("trailing comma in {s:?}"));
            }
            rest = r;
        } else if !rest.is_empty() {
            return Err(format!("junk after a label value in {s:?}"));
        }
    }
    Ok(labels)
}

/// The family a sample belongs to: its own name, or a histogram's name for the
/// `_bucket`/`_sum`/`_count` series.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).map(String::as_str) == Some("histogram")
        {
            return Some(base);
        }
    }
    None
}

/// Parses and checks a whole exposition: HELP and TYPE once per family and before its
/// samples, each family's samples together, no duplicate series, counters named
/// `_total` and never negative, histograms with cumulative buckets ending at `+Inf`
/// equal to `_count`, and `_sum` present.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    let mut e = Exposition::default();
    let mut helps = BTreeSet::new();
    let mut closed = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen_series = BTreeSet::new();
    for (no, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", no + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        let family_now = if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            let name = name.ok_or_else(|| at("comment without a metric name".into()))?;
            if !is_metric_name(name) {
                return Err(at("bad metric name".into()));
            }
            match kw {
                Some("HELP") => {
                    if !helps.insert(name.to_string()) {
                        return Err(at("second HELP".into()));
                    }
                    if arg.is_none_or(str::is_empty) {
                        return Err(at("empty HELP".into()));
                    }
                }
                Some("TYPE") => {
                    let kind = arg.ok_or_else(|| at("TYPE without a type".into()))?;
                    if !["counter", "gauge", "histogram"].contains(&kind) {
                        return Err(at(format!("unexpected type {kind}")));
                    }
                    if kind == "counter" && !name.ends_with("_total") {
                        return Err(at("a counter's name must end with _total".into()));
                    }
                    if e.types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("second TYPE".into()));
                    }
                }
                _ => return Err(at("a comment that is neither HELP nor TYPE".into())),
            }
            name.to_string()
        } else {
            let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
            let value = parse_value(value).map_err(at)?;
            let (name, labels) = match series.split_once('{') {
                Some((name, l)) => {
                    let l = l
                        .strip_suffix('}')
                        .ok_or_else(|| at("labels not closed".into()))?;
                    (name, parse_labels(l).map_err(at)?)
                }
                None => (series, Labels::new()),
            };
            if !is_metric_name(name) {
                return Err(at("bad metric name".into()));
            }
            let family = family_of(name, &e.types)
                .ok_or_else(|| at("sample before its TYPE".into()))?
                .to_string();
            if !helps.contains(&family) {
                return Err(at("sample before its HELP".into()));
            }
            if e.types[&family] == "counter" && (value < 0.0 || value.is_nan()) {
                return Err(at("negative counter".into()));
            }
            if !seen_series.insert(format!("{name}{labels:?}")) {
                return Err(at("duplicate series".into()));
            }
            e.samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
            family
        };
        if current.as_deref() != Some(family_now.as_str()) {
            if closed.contains(&family_now) {
                return Err(at(format!("family {family_now} appears in two places")));
            }
            if let Some(prev) = current.replace(family_now) {
                closed.insert(prev);
            }
        }
    }
    for (name, kind) in &e.types {
        if !helps.contains(name) {
            return Err(format!("{name} has a TYPE but no HELP"));
        }
        if kind == "histogram" {
            check_histogram(&e, name)?;
        }
    }
    if let Some(h) = helps.iter().find(|h| !e.types.contains_key(*h)) {
        return Err(format!("{h} has a HELP but no TYPE"));
    }
    Ok(e)
}

fn check_histogram(e: &Exposition, name: &str) -> Result<(), String> {
    let bucket_name = format!("{name}_bucket");
    let mut by_series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for s in e.samples.iter().filter(|s| s.name == bucket_name) {
        let mut labels = s.labels.clone();
        let le = labels
            .remove("le")
            .ok_or_else(|| format!("{bucket_name} without le"))?;
        by_series
            .entry(labels)
            .or_default()
            .push((parse_value(&le)?, s.value));
    }
    for s in e
        .samples
        .iter()
        .filter(|s| s.name == format!("{name}_count"))
    {
        by_series.entry(s.labels.clone()).or_default();
    }
    for (labels, buckets) in &by_series {
        let what = format!("{name}{labels:?}");
        if buckets.is_empty() {
            return Err(format!("{what} has a _count but no buckets"));
        }
        for w in buckets.windows(2) {
            if w[0].0.partial_cmp(&w[1].0) != Some(std::cmp::Ordering::Less) {
                return Err(format!("{what}: le not increasing"));
            }
            if w[1].1 < w[0].1 {
                return Err(format!("{what}: buckets not cumulative"));
            }
        }
        let (last_le, last) = buckets[buckets.len() - 1];
        if last_le != f64::INFINITY {
            return Err(format!("{what}: the last bucket is not +Inf"));
        }
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = e
            .get(&format!("{name}_count"), &pairs)
            .ok_or_else(|| format!("{what}: no _count"))?;
        if count != last {
            return Err(format!("{what}: +Inf bucket {last} != _count {count}"));
        }
        if e.get(&format!("{name}_sum"), &pairs).is_none() {
            return Err(format!("{what}: no _sum"));
        }
    }
    Ok(())
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\n\
              # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    let e = parse_exposition(ok).unwrap();
    assert_eq!(e.value("a_total", &[("k", "v\"")]), 1.0);
    for bad in [
        "a_total 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n",
        "# HELP a A.\n# TYPE a counter\na 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n",
        "# HELP g G.\n# TYPE g gauge\ng{a=\"1\",} 1\n",
        "# HELP g G.\n# TYPE g gauge\ng 1\ng 2\n",
        "# HELP g G.\n# TYPE g gauge\ng 1\n# HELP f F.\n# TYPE f gauge\nf 1\ng{x=\"y\"} 1\n",
        "# HELP g G.\n# TYPE g gauge\ng 1",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

// --- helpers -----------------------------------------------------------------------------

fn scrape(port: u16) -> Exposition {
    let (status, body) =
        http_get(port, "/metrics").unwrap_or_else(|| panic!("no answer from :{port}/metrics"));
    assert_eq!(status, 200, "/metrics answered {status}: {body}");
    parse_exposition(&body)
        .unwrap_or_else(|e| panic!("/metrics is not valid Prometheus text: {e}\n{body}"))
}

fn raw_metrics(port: u16) -> String {
    http_get(port, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

fn agent_health(port: u16) -> Option<serde_json::Value> {
    let (status, body) = http_get(port, "/healthz")?;
    assert_eq!(
        status, 200,
        "the agent's /healthz answered {status}: {body}"
    );
    Some(serde_json::from_str(&body).expect("the agent's /healthz is JSON"))
}

fn wait_agent_state(port: u16, connection: &str) -> serde_json::Value {
    wait_for(&format!("the agent to be {connection}"), || {
        agent_health(port).filter(|h| h["connection"] == connection)
    })
}

/// A `runops server` started by hand (for environments `common::Server` does not set).
struct OwnServer {
    child: Child,
    log: std::path::PathBuf,
}

impl OwnServer {
    fn start(sb: &Sandbox, port: u16, data_dir: &Path, env: &[(&str, &str)]) -> OwnServer {
        let log = sb.path(&format!("own-server-{port}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut c = base_command(&sb.home());
        c.args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUNOPS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUNOPS_AGENT_LEASE_SECS", "10")
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f));
        for (k, v) in env {
            c.env(k, v);
        }
        let s = OwnServer {
            child: c.spawn().expect("spawn runops server"),
            log,
        };
        wait_for("the server to answer /healthz", || {
            http_get(port, "/healthz").filter(|(st, _)| *st == 200)
        });
        s
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent_with_health(sb: &Sandbox, name: &str, token: &str) -> (Agent, u16) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(sb, name, token, None, &[("RUNOPS_HEALTH_ADDR", &addr)]);
    wait_for("the agent's /healthz", || agent_health(port));
    (agent, port)
}

// --- tests -------------------------------------------------------------------------------

#[test]
fn server_and_agent_metrics_parse_and_move_when_tasks_run() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    assert_eq!(
        http_get(server.port, "/readyz").map(|(s, _)| s),
        Some(200),
        "/readyz: the store answers"
    );
    let token = server.create_agent_token();
    let (agent, hp) = start_agent_with_health(&sb, "a", &token);
    let health = wait_agent_state(hp, "connected");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["draining"], false);
    server.cli_ok(&["targets", "create", "--name", "local", "--type", "bash"]);
    wait_for("the server to count the agent", || {
        (scrape(server.port).value("runops_agents_connected", &[]) == 1.0).then_some(())
    });

    let s0 = scrape(server.port);
    let a0 = scrape(hp);
    let fin = |e: &Exposition, status: &str, reason: &str| {
        e.value(
            "runops_tasks_finished_total",
            &[("status", status), ("reason", reason)],
        )
    };
    let agent_tasks = |e: &Exposition, outcome: &str| {
        e.counter(
            "runops_agent_tasks_total",
            &[("type", "bash"), ("outcome", outcome)],
        )
    };

    // One success, one non-zero exit.
    let out = server.cli_ok(&[
        "tasks",
        "create",
        "-t",
        "local",
        "-s",
        "echo metrics-marker-7Q",
    ]);
    assert_eq!(out.trim(), "metrics-marker-7Q");
    let out = server.cli(&["tasks", "create", "-t", "local", "-s", "exit 3"]);
    assert!(!out.status.success());

    let s1 = wait_for("the server's finished counters to move", || {
        let e = scrape(server.port);
        (fin(&e, "failure", "exit-code") > fin(&s0, "failure", "exit-code")).then_some(e)
    });
    assert_eq!(
        fin(&s1, "success", "none"),
        fin(&s0, "success", "none") + 1.0
    );
    assert_eq!(
        fin(&s1, "failure", "exit-code"),
        fin(&s0, "failure", "exit-code") + 1.0
    );
    assert_eq!(
        s1.value("runops_dispatch_latency_seconds_count", &[]),
        s0.value("runops_dispatch_latency_seconds_count", &[]) + 2.0
    );
    assert!(
        s1.value("runops_log_bytes_total", &[])
            >= s0.value("runops_log_bytes_total", &[]) + "metrics-marker-7Q\n".len() as f64
    );
    // Requests are labelled with route templates, never raw paths.
    let routes: BTreeSet<&str> = s1
        .samples
        .iter()
        .filter(|s| s.name == "runops_http_request_duration_seconds_count")
        .map(|s| s.labels["route"].as_str())
        .collect();
    assert!(
        s1.get(
            "runops_http_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("route", "/v1/tasks"),
                ("status", "201")
            ]
        )
        .is_some_and(|n| n >= 2.0),
        "{routes:?}"
    );
    assert!(routes.contains("/v1/agent/tasks/{id}/start"), "{routes:?}");
    assert!(
        routes.iter().all(|r| *r == "unmatched"
            || !r
                .split('/')
                .any(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()))),
        "a raw path leaked into the route label: {routes:?}"
    );
    wait_for("the task gauge to show the finished tasks", || {
        let e = scrape(server.port);
        (e.value("runops_tasks", &[("status", "success")]) >= 1.0
            && e.value("runops_tasks", &[("status", "failure")]) >= 1.0)
            .then_some(())
    });

    let a1 = wait_for("the agent's task counters to move", || {
        let e = scrape(hp);
        (agent_tasks(&e, "exit-code") > agent_tasks(&a0, "exit-code")).then_some(e)
    });
    assert_eq!(
        agent_tasks(&a1, "success"),
        agent_tasks(&a0, "success") + 1.0
    );
    assert_eq!(
        a1.value(
            "runops_agent_task_duration_seconds_count",
            &[("type", "bash"), ("outcome", "success")]
        ),
        agent_tasks(&a1, "success")
    );
    a1.value("runops_agent_spool_bytes", &[]);
    assert_eq!(a1.value("runops_agent_reconnects_total", &[]), 0.0);

    // Unauthenticated, so: no task contents and no target names.
    for body in [raw_metrics(server.port), raw_metrics(hp)] {
        assert!(!body.contains("metrics-marker"), "{body}");
        assert!(!body.contains("local"), "{body}");
    }

    // A running task shows on both sides; killing it counts as `cancelled`.
    let id = server.submit("local", "sleep 600");
    wait_for("the agent to report one running task", || {
        (scrape(hp).value("runops_agent_running_tasks", &[]) == 1.0).then_some(())
    });
    wait_for("the server to count one running task", || {
        (scrape(server.port).value("runops_tasks", &[("status", "running")]) == 1.0).then_some(())
    });
    server.cli_ok(&["tasks", "kill", &id.to_string()]);
    server.wait_final(id);
    wait_for("the kill to be counted on both sides", || {
        let (s, a) = (scrape(server.port), scrape(hp));
        (fin(&s, "failure", "cancelled") == fin(&s0, "failure", "cancelled") + 1.0
            && agent_tasks(&a, "cancelled") == 1.0
            && a.value("runops_agent_running_tasks", &[]) == 0.0)
            .then_some(())
    });

    // Draining (first SIGTERM) with a task running: /healthz still answers 200.
    let id = server.submit("local", "sleep 2; echo drained");
    wait_for("the task to run", || {
        (scrape(hp).value("runops_agent_running_tasks", &[]) == 1.0).then_some(())
    });
    kill(Pid::from_raw(agent.pid()), Signal::SIGTERM).expect("SIGTERM the agent");
    let h = wait_for("the agent to say it drains", || {
        agent_health(hp).filter(|h| h["draining"] == true)
    });
    assert_eq!(h["status"], "ok");
    assert_eq!(server.wait_final(id)["status"], "success");
}

#[test]
fn agent_health_stays_ok_while_the_server_is_down_and_counts_the_reconnect() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let (port, data_dir) = (server.port, server.data_dir.clone());
    let token = server.create_agent_token();
    let (_agent, hp) = start_agent_with_health(&sb, "a", &token);
    wait_agent_state(hp, "connected");

    drop(server);
    let h = wait_agent_state(hp, "unreachable");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(scrape(hp).value("runops_agent_reconnects_total", &[]), 0.0);

    let _server = OwnServer::start(&sb, port, &data_dir, &[]);
    wait_agent_state(hp, "connected");
    assert_eq!(scrape(hp).value("runops_agent_reconnects_total", &[]), 1.0);
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let sb = Sandbox::new();
    let port = free_port();
    let server = OwnServer::start(
        &sb,
        port,
        &sb.path("server-data"),
        &[("LOG_FORMAT", "json")],
    );
    let cli = |args: &[&str]| {
        let out = base_command(&sb.home())
            .args(args)
            .env("RUNOPS_URL", format!("http://127.0.0.1:{port}"))
            .env("RUNOPS_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .output()
            .expect("run runops cli");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let token = cli(&["agents", "create-token"]).trim().to_string();
    let agent = Agent::start(&sb, "a", &token, None, &[("LOG_FORMAT", "json")]);
    cli(&["targets", "create", "--name", "local", "--type", "bash"]);
    assert_eq!(
        cli(&["tasks", "create", "-t", "local", "-s", "echo hi"]).trim(),
        "hi"
    );

    let check = |what: &str, log: &str, expect: &str| {
        let mut messages = Vec::new();
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what} log line is not JSON ({e}): {line:?}"));
            assert!(v.is_object(), "{what}: {line}");
            assert!(v["timestamp"].is_string(), "{what}: no timestamp: {line}");
            assert!(v["level"].is_string(), "{what}: no level: {line}");
            messages.push(v["message"].as_str().unwrap_or_default().to_string());
        }
        assert!(
            messages.iter().any(|m| m.contains(expect)),
            "{what}: no {expect:?} in {messages:?}"
        );
    };
    wait_for("the agent to log the finished task", || {
        agent.log().contains("task finished").then_some(())
    });
    check("agent", &agent.log(), "task finished");
    check(
        "server",
        &std::fs::read_to_string(&server.log).unwrap_or_default(),
        "runops server listening",
    );
}
