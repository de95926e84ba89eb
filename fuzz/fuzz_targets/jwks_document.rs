//! JWKS documents of any shape: parsing them and choosing and using a key never
//! panics (unreadable keys are skipped); a document holding the genuine keys accepts
//! the genuinely signed tokens.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runops_jwt::VerifierConfig;
use runops_jwt::fuzzing::verify_with_jwks;

const JWKS: &str = include_str!("../seeds/jwks.json");
const GOOD: [&str; 2] = [
    include_str!("../seeds/token_es256.txt"),
    include_str!("../seeds/token_rs256.txt"),
];

#[derive(Debug, Arbitrary)]
struct Input {
    which: u8,
    /// A whole document, or the `keys` entries of one.
    raw: Vec<u8>,
    keys: Vec<String>,
    structured: bool,
}

fuzz_target!(|input: Input| {
    let cfg = VerifierConfig {
        jwks_url: "https://idp.example/jwks".into(),
        issuer: None,
        audience: None,
    };
    let token = GOOD[usize::from(input.which) % 2];
    let doc = if input.structured {
        // Arbitrary key objects (those that are JSON) next to the genuine ones.
        let mut keys: Vec<serde_json::Value> = input
            .keys
            .iter()
            .filter_map(|k| serde_json::from_str(k).ok())
            .collect();
        let genuine: serde_json::Value = serde_json::from_str(JWKS).unwrap();
        keys.extend(genuine["keys"].as_array().unwrap().iter().cloned());
        serde_json::json!({ "keys": keys }).to_string().into_bytes()
    } else {
        input.raw.clone()
    };
    let result = verify_with_jwks(token, &doc, &cfg);
    if input.structured {
        // Only another key with a `kid` (the same one, listed first) can get in the way.
        let shadowed = input
            .keys
            .iter()
            .filter_map(|k| serde_json::from_str::<serde_json::Value>(k).ok())
            .any(|v| v.get("kid").is_some());
        assert!(
            shadowed || result.is_ok(),
            "genuine token refused: {result:?}"
        );
    }
});
