//! Task proofs made with a real P-256 key (openssl) and checked like the agent does.

use runops_jwt::proof::*;
use runops_jwt::testing::*;
use serde_json::json;

const SCRIPT: &str = "psql -c 'select 1'";

fn binding(task_id: i64) -> TaskBinding<'static> {
    TaskBinding {
        task_id,
        target: "prod-db",
        kind: "postgres",
        script: SCRIPT,
    }
}

fn check<'a>(jkt: &'a str, token: &'a str, b: TaskBinding<'a>) -> ProofCheck<'a> {
    ProofCheck {
        jkt,
        token,
        binding: b,
        not_before: Some(chrono::Utc::now().timestamp() - 5),
        max_age_secs: 3600,
    }
}

#[test]
fn a_proof_validates_only_for_its_task_script_token_and_key() {
    let holder = TestKey::ec("holder");
    let key = holder.proof_key();
    let jkt = holder.thumbprint();
    assert_eq!(key.thumbprint(), jkt);
    let token = "header.payload.signature";

    let proof = key.sign(token, &binding(42)).unwrap();
    let ok = verify_task_proof(&proof, &check(&jkt, token, binding(42))).unwrap();
    assert!(!ok.jti.is_empty());
    let again = key.sign(token, &binding(42)).unwrap();
    let ok2 = verify_task_proof(&again, &check(&jkt, token, binding(42))).unwrap();
    assert_ne!(ok.jti, ok2.jti, "every proof has its own jti");

    let refuse = |c: ProofCheck, why: &str| {
        let err = verify_task_proof(&proof, &c).unwrap_err();
        assert!(err.to_string().contains(why), "{why:?} not in {err}");
    };
    refuse(check(&jkt, token, binding(43)), "task 42, not task 43");
    let other_script = TaskBinding {
        script: "psql -c 'drop table users'",
        ..binding(42)
    };
    refuse(check(&jkt, token, other_script), "another script");
    let other_target = TaskBinding {
        target: "other-db",
        ..binding(42)
    };
    refuse(check(&jkt, token, other_target), "another target");
    let other_type = TaskBinding {
        kind: "bash",
        ..binding(42)
    };
    refuse(check(&jkt, token, other_type), "another type");
    refuse(
        check(&jkt, "another.jwt.here", binding(42)),
        "another identity token",
    );
    let stranger = TestKey::ec("stranger").thumbprint();
    refuse(
        check(&stranger, token, binding(42)),
        "but the identity token is bound to key",
    );

    // A proof made long ago, or before its task existed.
    let now = chrono::Utc::now().timestamp();
    let old = key.sign_at(token, &binding(42), now - 7200, "j1").unwrap();
    let err = verify_task_proof(&old, &check(&jkt, token, binding(42))).unwrap_err();
    assert!(err.to_string().contains("more than 3600 s ago"), "{err}");
    let mut c = check(&jkt, token, binding(42));
    c.not_before = Some(now + 600);
    c.max_age_secs = 3600;
    let err = verify_task_proof(&proof, &c).unwrap_err();
    assert!(
        err.to_string().contains("before the task was created"),
        "{err}"
    );
    let future = key.sign_at(token, &binding(42), now + 3600, "j2").unwrap();
    let err = verify_task_proof(&future, &check(&jkt, token, binding(42))).unwrap_err();
    assert!(err.to_string().contains("in the future"), "{err}");

    // Altered claims keep the signature: refused.
    let altered = tampered(
        &proof,
        &json!({"task_id": 43, "target": "prod-db", "type": "postgres", "script_sha256": sha256_b64(SCRIPT.as_bytes()), "ath": sha256_b64(token.as_bytes()), "iat": now, "jti": "x"}),
    );
    let err = verify_task_proof(&altered, &check(&jkt, token, binding(43))).unwrap_err();
    assert_eq!(err, ProofError::BadSignature);
}

#[test]
fn proof_headers_are_checked_before_the_signature() {
    let holder = TestKey::ec("holder");
    let jkt = holder.thumbprint();
    let token = "a.b.c";
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"task_id": 42, "target": "prod-db", "type": "postgres", "script_sha256": sha256_b64(SCRIPT.as_bytes()), "ath": sha256_b64(token.as_bytes()), "iat": now, "jti": "j"});
    let mut public = holder.jwk.clone();
    public.as_object_mut().unwrap().remove("kid");
    let sign = |header: serde_json::Value| holder.sign_with_header(&header, &claims);
    let ok = sign(json!({"alg": "ES256", "typ": TASK_PROOF_TYPE, "jwk": public}));
    verify_task_proof(&ok, &check(&jkt, token, binding(42))).unwrap();

    let cases = [
        (
            json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": public}),
            "type `dpop+jwt`",
        ),
        (json!({"alg": "ES256", "jwk": public}), "type `(none)`"),
        (
            json!({"alg": "ES256", "typ": TASK_PROOF_TYPE}),
            "no public key",
        ),
        (
            json!({"alg": "ES256", "typ": TASK_PROOF_TYPE, "jwk": public, "crit": ["exp"]}),
            "as critical",
        ),
        (
            json!({"alg": "ES256", "typ": TASK_PROOF_TYPE, "jwk": {"kty": "EC", "crv": "P-256", "x": public["x"], "y": public["y"], "d": "AAAA"}}),
            "holds a private key",
        ),
        (
            json!({"alg": "HS256", "typ": TASK_PROOF_TYPE, "jwk": public}),
            "algorithm `HS256`",
        ),
    ];
    for (header, why) in cases {
        let err =
            verify_task_proof(&sign(header.clone()), &check(&jkt, token, binding(42))).unwrap_err();
        assert!(
            err.to_string().contains(why),
            "{header}: {why:?} not in {err}"
        );
    }
}
