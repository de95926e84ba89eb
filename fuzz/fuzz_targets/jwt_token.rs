//! Identity-provider JWTs checked against a fixed key set (an ES256 and an RS256 key):
//! never panics on any token; only the two genuinely signed seed tokens (their header
//! and claims exactly) are ever accepted; a task proof of any shape is parsed without
//! panicking; `cnf` of any claims is read without panicking.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use runops_jwt::fuzzing::verify_with_jwks;
use runops_jwt::proof::{ProofCheck, TaskBinding, verify_task_proof};
use runops_jwt::{VerifierConfig, confirmation_jkt, looks_like_jwt};

const JWKS: &str = include_str!("../seeds/jwks.json");
const GOOD: [&str; 2] = [
    include_str!("../seeds/token_es256.txt"),
    include_str!("../seeds/token_rs256.txt"),
];

#[derive(Debug, Arbitrary)]
struct Input {
    mode: u8,
    raw: String,
    header: String,
    claims: String,
    signature: Vec<u8>,
    issuer: bool,
}

fn signed_part(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(p, _)| p)
}

fuzz_target!(|input: Input| {
    let enc = |s: &[u8]| URL_SAFE_NO_PAD.encode(s);
    let token = match input.mode % 4 {
        0 => input.raw.clone(),
        1 => format!(
            "{}.{}.{}",
            enc(input.header.as_bytes()),
            enc(input.claims.as_bytes()),
            enc(&input.signature)
        ),
        // A genuine header and signature with other claims.
        2 => {
            let good = GOOD[usize::from(input.mode / 4) % 2];
            let parts: Vec<&str> = good.split('.').collect();
            format!("{}.{}.{}", parts[0], enc(input.claims.as_bytes()), parts[2])
        }
        // A genuine token with another signature.
        _ => {
            let good = GOOD[usize::from(input.mode / 4) % 2];
            format!("{}.{}", signed_part(good), enc(&input.signature))
        }
    };
    let cfg = VerifierConfig {
        jwks_url: "https://idp.example/jwks".into(),
        issuer: input.issuer.then(|| "https://idp.example".to_string()),
        audience: input.issuer.then(|| "runops".to_string()),
    };
    let _ = looks_like_jwt(&token);
    if let Ok(v) = verify_with_jwks(&token, JWKS.as_bytes(), &cfg) {
        assert!(
            GOOD.iter()
                .any(|g| signed_part(g) == signed_part(token.trim())),
            "accepted a token that was not signed by the key set: {token:?}"
        );
        assert!(v.claims.contains_key("exp"));
        let _ = v.confirmation_jkt();
        let _ = v.list_claim("groups");
    }
    if let Ok(serde_json::Value::Object(claims)) = serde_json::from_str(&input.claims) {
        let _ = confirmation_jkt(&claims);
    }
    let check = ProofCheck {
        jkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
        token: GOOD[0],
        binding: TaskBinding {
            task_id: 7,
            target: "prod-db",
            kind: "bash",
            script: "echo hi",
        },
        not_before: Some(1_700_000_000),
        max_age_secs: 300,
    };
    let _ = verify_task_proof(&token, &check);
});
