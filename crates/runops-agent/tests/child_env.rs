//! A child process sees none of the agent's own environment. This file holds a single
//! test because it changes the test process's environment.

use runops_agent::env::BaseEnv;
use runops_agent::logs::spool::Spool;
use runops_agent::pipeline::{PipelineContext, StopHandle, run_task};
use runops_agent::runners::RunnerRegistry;
use runops_agent::secrets::SecretsRegistry;
use runops_proto::TaskStatus;
use runops_proto::agent::TaskOffer;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test]
async fn child_environment_holds_none_of_the_agents_variables() {
    // SAFETY: this is the only test of this binary and it sets the variables before
    // any thread of its own reads the environment.
    unsafe {
        std::env::set_var("TOKEN", "roa_fake-agent-token");
        std::env::set_var("API_URL", "http://127.0.0.1:1");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "fake-aws-secret");
        std::env::set_var("MY_TARGET", "\"DB_NAME\": \"demo\",");
    }
    let dir = tempfile::tempdir().unwrap();
    let tmp_root = dir.path().join("tmp");
    std::fs::create_dir(&tmp_root).unwrap();
    let ctx = PipelineContext {
        runners: RunnerRegistry::with_defaults(),
        secrets: SecretsRegistry::with_defaults(),
        base_env: BaseEnv::from_process_env(),
        tmp_root,
        kill_grace: Duration::from_secs(1),
        authenticator: None,
        log_store: None,
        redact_info_types: None,
        redact_phone_regions: None,
    };
    let spool = Spool::open(dir.path()).unwrap();
    let offer = TaskOffer {
        task_id: 1,
        target: "local".into(),
        kind: "bash".into(),
        script: "env".into(),
        message: None,
        secret_provider: None,
        secret_path: Some("MY_TARGET".into()),
        secret_mapping: None,
        redact: "none".into(),
        redact_keys: Vec::new(),
        public_keys: Vec::new(),
        custom_command: None,
        timeout_secs: 30,
        user_email: "ana@example.com".into(),
        user_groups: vec![],
        user_jwt: None,
        user_jwt_proof: None,
        created_at_ms: None,
        config: None,
        start_deadline_ms: 1000,
    };
    let task = spool.task(1);
    let result = run_task(&ctx, &offer, &StopHandle::new(), &task, |_| {})
        .await
        .unwrap();
    assert_eq!(result.status, TaskStatus::Success);
    let log = std::fs::read_to_string(task.log_path()).unwrap();
    let keys: BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for leaked in ["TOKEN", "API_URL", "AWS_SECRET_ACCESS_KEY", "MY_TARGET"] {
        assert!(!keys.contains(leaked), "{leaked} reached the child:\n{log}");
    }
    assert!(
        !log.contains("fake-aws-secret") && !log.contains("roa_fake"),
        "{log}"
    );
    // What bash itself adds (PWD, SHLVL, _) is fine; everything else must be ours.
    let allowed: BTreeSet<&str> = [
        "PATH",
        "HOME",
        "LANG",
        "TMPDIR",
        "DB_NAME",
        "RUNOPS_TASK_ID",
        "RUNOPS_TASK_TARGET",
        "RUNOPS_TASK_DESCRIPTION",
        "RUNOPS_TASK_USER_EMAIL",
        "RUNOPS_USER_GROUPS",
        "PWD",
        "SHLVL",
        "_",
    ]
    .into_iter()
    .collect();
    let extra: Vec<&&str> = keys.difference(&allowed).collect();
    assert!(
        extra.is_empty(),
        "unexpected variables {extra:?} in:\n{log}"
    );
    assert!(
        keys.contains("DB_NAME") && keys.contains("RUNOPS_TASK_ID"),
        "{log}"
    );
}
