//! `ecs-exec` and `rails-console-ecs`: find a running task of the target's ECS service
//! (a SigV4-signed `ListTasks` call with the target's `ECS_AWS_*` credentials), then
//! `aws ecs execute-command --interactive` in its container.
//!
//! - `ecs-exec`: the script is the command run in the container.
//! - `rails-console-ecs`: the script is written into the container (base64, so no
//!   character of it is interpreted on the way) and run with `bundle exec rails runner`.
//!
//! The credentials reach `aws` as `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
//! `AWS_SESSION_TOKEN` in its environment, never on its command line; `aws` needs the
//! Session Manager plugin. `ECS_ENDPOINT_URL` points both the lookup and `aws` at
//! another endpoint (a VPC endpoint, an emulator).

use super::tool::{Invocation, Tool, run_tool, secret};
use super::{RunContext, RunOutcome, Runner};
use crate::aws::credentials::AwsCredentials;
use crate::aws::sigv4::{SignRequest, host_header, sha256_hex, sign};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use base64::Engine;
use std::time::Duration;

/// Where the "aws not found" message sends the operator.
pub const AWS_INSTALL: &str = "the AWS CLI, https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html, and its Session Manager plugin";

/// One ECS API call: long enough for a slow region, short enough to fail a task clearly.
pub const ECS_API_TIMEOUT: Duration = Duration::from_secs(30);

/// The JSON-protocol target of ECS ListTasks.
const LIST_TASKS_TARGET: &str = "AmazonEC2ContainerServiceV20141113.ListTasks";

/// What the task does in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcsMode {
    Exec,
    RailsConsole,
}

pub struct EcsRunner {
    pub tool: Tool,
    pub mode: EcsMode,
}

/// `aws`, or the binary named by the agent's `AWS_CLI`.
pub fn aws_tool() -> Tool {
    Tool::from_agent_env("aws", "AWS_CLI", AWS_INSTALL)
}

/// Where a task runs and with which credentials.
#[derive(Debug, Clone)]
pub struct EcsTarget {
    pub cluster: String,
    pub service: String,
    pub container: String,
    pub region: String,
    /// `None` is the region's public endpoint.
    pub endpoint: Option<String>,
    pub credentials: AwsCredentials,
}

impl EcsTarget {
    /// The ECS API endpoint.
    pub fn endpoint_url(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://ecs.{}.amazonaws.com", self.region),
        }
    }
}

#[async_trait]
impl Runner for EcsRunner {
    fn required_keys(&self) -> &'static [&'static str] {
        &[
            "ECS_CLUSTER",
            "ECS_SERVICE_NAME",
            "ECS_CONTAINER",
            "ECS_AWS_ACCESS_KEY_ID",
            "ECS_AWS_SECRET_ACCESS_KEY",
            "ECS_AWS_REGION",
        ]
    }

    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        // Before calling AWS: a missing CLI is the likeliest problem.
        self.tool.locate(ctx.env, ctx.kind)?;
        let key = |k: &str| secret(&ctx, k).unwrap_or_default().to_string();
        let target = EcsTarget {
            cluster: key("ECS_CLUSTER"),
            service: key("ECS_SERVICE_NAME"),
            container: key("ECS_CONTAINER"),
            region: key("ECS_AWS_REGION"),
            endpoint: secret(&ctx, "ECS_ENDPOINT_URL").map(str::to_string),
            credentials: AwsCredentials {
                access_key_id: key("ECS_AWS_ACCESS_KEY_ID"),
                secret_access_key: key("ECS_AWS_SECRET_ACCESS_KEY"),
                session_token: secret(&ctx, "ECS_AWS_SESSION_TOKEN").map(str::to_string),
                expires_at: None,
            },
        };
        let task_arn = find_running_task(&target).await?;
        ctx.output
            .note(&format!(
                "running in task {task_arn} (container `{}`)",
                target.container
            ))
            .await;
        let invocation = plan(self.mode, &target, &task_arn, ctx.script, ctx.task_id);
        let creds = &target.credentials;
        let mut vars = vec![
            ("AWS_ACCESS_KEY_ID", creds.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", creds.secret_access_key.clone()),
            ("AWS_REGION", target.region.clone()),
            ("AWS_DEFAULT_REGION", target.region.clone()),
            // Only these credentials: no profile or config file of the agent's user.
            ("AWS_CONFIG_FILE", "/dev/null".to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_string()),
        ];
        if let Some(token) = &creds.session_token {
            vars.push(("AWS_SESSION_TOKEN", token.clone()));
        }
        let env = ctx.env.with_vars(vars);
        run_tool(&ctx, &self.tool, &env, ctx.tmp_dir, vec![invocation]).await
    }
}

/// The `aws ecs execute-command` of a task (pure: unit-tested).
pub fn plan(
    mode: EcsMode,
    target: &EcsTarget,
    task_arn: &str,
    script: &str,
    task_id: i64,
) -> Invocation {
    let command = match mode {
        EcsMode::Exec => script.trim().to_string(),
        EcsMode::RailsConsole => rails_runner_command(script, task_id),
    };
    let mut args: Vec<String> = [
        "ecs",
        "execute-command",
        "--region",
        &target.region,
        "--cluster",
        &target.cluster,
        "--task",
        task_arn,
        "--container",
        &target.container,
        "--interactive",
        "--command",
        &command,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(endpoint) = &target.endpoint {
        args.extend(["--endpoint-url".to_string(), endpoint.clone()]);
    }
    Invocation::new(args)
}

/// The container-side command of `rails-console-ecs`: the script travels as base64 (one
/// word of `[A-Za-z0-9+/=]`, so nothing in it is interpreted by the container's shell),
/// is decoded into a file, run with `rails runner`, and removed.
pub fn rails_runner_command(script: &str, task_id: i64) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(script);
    let file = format!("/tmp/runops-task-{task_id}.rb");
    format!(
        "sh -c 'echo {b64} | base64 -d > {file} && bundle exec rails runner {file}; rc=$?; rm -f {file}; exit $rc'"
    )
}

/// The ARN of a running task of the target's service (the first ECS lists).
pub async fn find_running_task(target: &EcsTarget) -> Result<String, TaskFailure> {
    let body = serde_json::json!({
        "cluster": target.cluster,
        "serviceName": target.service,
        "desiredStatus": "RUNNING",
    });
    let answer = call_ecs(target, LIST_TASKS_TARGET, &body).await?;
    let arns = answer
        .get("taskArns")
        .and_then(|a| a.as_array())
        .ok_or_else(|| {
            TaskFailure::agent_error(format!(
                "ECS ListTasks answered without `taskArns`: {answer}"
            ))
        })?;
    arns.iter()
        .find_map(|a| a.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            TaskFailure::invalid_config(format!(
                "service `{}` of ECS cluster `{}` has no running task; check ECS_SERVICE_NAME and ECS_CLUSTER, or start the service",
                target.service, target.cluster
            ))
        })
}

/// The URL and every header (signature included) of a JSON-protocol ECS call of
/// `operation` with `body`, signed at `now`.
pub fn signed_request(
    target: &EcsTarget,
    operation: &str,
    body: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(reqwest::Url, Vec<(String, String)>), TaskFailure> {
    let endpoint = target.endpoint_url();
    let url = reqwest::Url::parse(&format!("{endpoint}/")).map_err(|e| {
        TaskFailure::invalid_config(format!("ECS endpoint `{endpoint}` is not a URL: {e}"))
    })?;
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", operation),
    ];
    let payload_sha256 = sha256_hex(body.as_bytes());
    let signed = sign(
        &SignRequest {
            method: "POST",
            url: &url,
            headers: &headers,
            payload_sha256: &payload_sha256,
            region: &target.region,
            service: "ecs",
        },
        &target.credentials,
        now,
    );
    let mut all: Vec<(String, String)> = vec![("host".to_string(), host_header(&url))];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all.extend(signed);
    Ok((url, all))
}

/// One signed JSON-protocol ECS call (`target` is the `X-Amz-Target` operation).
pub async fn call_ecs(
    target: &EcsTarget,
    operation: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, TaskFailure> {
    let endpoint = target.endpoint_url();
    let body = body.to_string();
    let (url, headers) = signed_request(target, operation, &body, chrono::Utc::now())?;
    let client = reqwest::Client::builder()
        .timeout(ECS_API_TIMEOUT)
        .build()
        .map_err(|e| TaskFailure::agent_error(format!("cannot build an HTTP client: {e}")))?;
    let mut req = client.post(url).body(body);
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let op = operation.rsplit('.').next().unwrap_or(operation);
    let resp = req.send().await.map_err(|e| {
        TaskFailure::agent_error(format!(
            "cannot reach the ECS API at {endpoint} for {op}: {e}"
        ))
    })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let kind = json
            .get("__type")
            .and_then(|t| t.as_str())
            .map(|t| t.rsplit('#').next().unwrap_or(t))
            .unwrap_or("error");
        let message = json
            .get("message")
            .or_else(|| json.get("Message"))
            .and_then(|m| m.as_str())
            .unwrap_or(text.trim());
        let failure = format!(
            "ECS {op} failed ({status}, {kind}): {message}; check the target's ECS_* keys and that its credentials may call ecs:{op}"
        );
        return Err(if status.is_client_error() {
            TaskFailure::invalid_config(failure)
        } else {
            TaskFailure::agent_error(failure)
        });
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: Option<&str>) -> EcsTarget {
        EcsTarget {
            cluster: "prod".into(),
            service: "web".into(),
            container: "app".into(),
            region: "eu-west-1".into(),
            endpoint: endpoint.map(str::to_string),
            credentials: AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
                expires_at: None,
            },
        }
    }

    const ARN: &str = "arn:aws:ecs:eu-west-1:123456789012:task/prod/0123abcd";

    #[test]
    fn ecs_exec_argv_carries_the_script_as_one_command_and_no_credentials() {
        let script = "ls -la; echo \"$(id)\" `x`\n";
        let inv = plan(EcsMode::Exec, &target(None), ARN, script, 7);
        assert_eq!(
            inv.args,
            [
                "ecs",
                "execute-command",
                "--region",
                "eu-west-1",
                "--cluster",
                "prod",
                "--task",
                ARN,
                "--container",
                "app",
                "--interactive",
                "--command",
                "ls -la; echo \"$(id)\" `x`"
            ]
        );
        assert!(inv.stdin.is_none());
        let joined = inv.args.join(" ");
        assert!(
            !joined.contains("AKIDEXAMPLE") && !joined.contains("EXAMPLEKEY"),
            "{joined}"
        );
    }

    #[test]
    fn endpoint_override_goes_to_the_cli_too() {
        let inv = plan(
            EcsMode::Exec,
            &target(Some("http://127.0.0.1:5000")),
            ARN,
            "ls",
            7,
        );
        assert_eq!(
            inv.args[inv.args.len() - 2..],
            ["--endpoint-url", "http://127.0.0.1:5000"]
        );
        assert_eq!(
            target(None).endpoint_url(),
            "https://ecs.eu-west-1.amazonaws.com"
        );
    }

    #[test]
    fn rails_console_ecs_sends_the_script_as_base64_into_rails_runner() {
        let script = "puts 'it''s'; `rm -rf /`; $(id)\n";
        let inv = plan(EcsMode::RailsConsole, &target(None), ARN, script, 42);
        let command = inv.args.last().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(script);
        assert_eq!(
            command,
            &format!(
                "sh -c 'echo {b64} | base64 -d > /tmp/runops-task-42.rb && bundle exec rails runner /tmp/runops-task-42.rb; rc=$?; rm -f /tmp/runops-task-42.rb; exit $rc'"
            )
        );
        assert!(
            b64.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        );
    }

    // The expected signature was produced by botocore 1.43's `SigV4Auth` for the same
    // request (with the same `x-amz-content-sha256` header), credentials and time.
    #[test]
    fn list_tasks_request_is_signed_as_botocore_signs_it() {
        use chrono::TimeZone;
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .unwrap();
        let body = r#"{"cluster":"prod","desiredStatus":"RUNNING","serviceName":"web"}"#;
        let (url, headers) = signed_request(&target(None), LIST_TASKS_TARGET, body, now).unwrap();
        assert_eq!(url.as_str(), "https://ecs.eu-west-1.amazonaws.com/");
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/eu-west-1/ecs/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-target, Signature=cacf4e87e317554ef21841347a8da23533b980812bcd11c34d5ee16c39e901c2"
        );
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_an_agent_error_naming_it() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let f = find_running_task(&target(Some(&format!("http://127.0.0.1:{port}"))))
            .await
            .unwrap_err();
        assert_eq!(f.reason, runops_proto::FailureReason::AgentError);
        assert!(f.message.contains(&format!("127.0.0.1:{port}")), "{f}");
    }
    /// A `moto_server` (the AWS emulator, `pip install 'moto[server]'`) on a free port,
    /// killed when dropped.
    struct Moto {
        child: std::process::Child,
        url: String,
    }

    impl Moto {
        fn start() -> Moto {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap();
            let child = std::process::Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("moto_server must be installed for this test: pip install 'moto[server]' (scripts/test.sh does)");
            let start = std::time::Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "moto_server did not start"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Moto {
                child,
                url: format!("http://127.0.0.1:{port}"),
            }
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn list_tasks_against_moto_finds_the_running_task_or_says_why_not() {
        let moto = Moto::start();
        let t = target(Some(&moto.url));
        let call = |op: &'static str, body: serde_json::Value| {
            let t = t.clone();
            async move {
                call_ecs(
                    &t,
                    &format!("AmazonEC2ContainerServiceV20141113.{op}"),
                    &body,
                )
                .await
                .unwrap_or_else(|f| panic!("{op}: {f}"))
            }
        };
        // No such cluster: the ECS error, as invalid-config.
        let f = find_running_task(&t).await.unwrap_err();
        assert_eq!(f.reason, runops_proto::FailureReason::InvalidConfig, "{f}");
        assert!(f.message.contains("ClusterNotFoundException"), "{f}");

        call("CreateCluster", serde_json::json!({"clusterName": "prod"})).await;
        let f = find_running_task(&t).await.unwrap_err();
        assert!(
            f.message
                .contains("service `web` of ECS cluster `prod` has no running task"),
            "{f}"
        );

        call(
            "RegisterTaskDefinition",
            serde_json::json!({"family": "web", "containerDefinitions": [{"name": "app", "image": "ruby", "memory": 128}]}),
        )
        .await;
        call(
            "CreateService",
            serde_json::json!({"cluster": "prod", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
        )
        .await;
        let run = call(
            "RunTask",
            serde_json::json!({"cluster": "prod", "taskDefinition": "web", "count": 1, "launchType": "FARGATE", "startedBy": "ecs-svc/web"}),
        )
        .await;
        let started = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
        assert_eq!(find_running_task(&t).await.unwrap(), started);
    }
}
