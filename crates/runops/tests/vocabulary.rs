//! The server and the agent agree on the vocabularies of a target: every integration
//! type and secret provider the server's validation accepts has a runner or a provider
//! in the agent, and the agent serves nothing the server would refuse. (Both are driven
//! by the enums of `runops_proto::vocab`; this checks the two ends through their own
//! entry points.)

use runops_agent::runners::RunnerRegistry;
use runops_agent::secrets::SecretsRegistry;
use runops_proto::api::TargetCreate;
use runops_proto::vocab::{SecretProvider, TargetType};
use runops_server::validate;

fn target(kind: &str, provider: Option<&str>) -> TargetCreate {
    TargetCreate {
        name: "t".into(),
        kind: kind.into(),
        secret_provider: provider.map(str::to_string),
        secret_path: provider.map(|_| "path".to_string()),
        custom_command: Some("run [[SCRIPT]]".into()),
        ..Default::default()
    }
}

#[test]
fn the_agent_runs_every_target_type_the_server_accepts_and_no_other() {
    let runners = RunnerRegistry::with_defaults();
    for kind in TargetType::NAMES {
        validate::new_target(target(kind, None), chrono::Utc::now())
            .unwrap_or_else(|e| panic!("the server refuses type `{kind}`: {}", e.error));
        assert!(
            runners.resolve(kind).is_ok(),
            "the agent cannot run `{kind}`"
        );
    }
    for kind in runners.supported() {
        assert!(
            validate::new_target(target(kind, None), chrono::Utc::now()).is_ok(),
            "the agent runs `{kind}`, which the server refuses"
        );
    }
    assert!(validate::new_target(target("cobol", None), chrono::Utc::now()).is_err());
    assert!(runners.resolve("cobol").is_err());
}

#[test]
fn the_agent_has_every_secret_provider_the_server_accepts_and_no_other() {
    let secrets = SecretsRegistry::with_defaults();
    let names = secrets.names();
    for p in SecretProvider::NAMES {
        validate::new_target(target("bash", Some(p)), chrono::Utc::now())
            .unwrap_or_else(|e| panic!("the server refuses provider `{p}`: {}", e.error));
        assert!(names.contains(p), "the agent has no provider `{p}`");
    }
    for p in &names {
        assert!(
            validate::new_target(target("bash", Some(p)), chrono::Utc::now()).is_ok(),
            "the agent has provider `{p}`, which the server refuses"
        );
    }
    assert!(validate::new_target(target("bash", Some("gopass")), chrono::Utc::now()).is_err());
}
