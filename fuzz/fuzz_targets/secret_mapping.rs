//! `secret_mapping` of a target: never panics on any text; a refusal is an
//! `invalid-config` failure; an accepted mapping only adds keys (or replaces the
//! value of a key it names) with values the secret already had, and each wanted key
//! gets the value of its source key.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runops_agent::secrets::Secrets;
use runops_agent::secrets::mapping::apply_mapping;
use runops_proto::FailureReason;

#[derive(Debug, Arbitrary)]
struct Input {
    secrets: Vec<(String, String)>,
    text: Option<String>,
    /// (wanted key, index of the source key among the secrets, or a missing key).
    pairs: Vec<(String, u8)>,
}

fuzz_target!(|input: Input| {
    let original: Secrets = input.secrets.iter().cloned().collect();
    let mut s = original.clone();
    match apply_mapping(&mut s, input.text.as_deref()) {
        Err(e) => {
            assert_eq!(e.reason, FailureReason::InvalidConfig);
            assert_eq!(s, original, "a refused mapping changed the secrets");
        }
        Ok(()) => {
            let values: Vec<&String> = original.values().collect();
            for (k, v) in &s {
                assert!(
                    original.get(k) == Some(v) || values.contains(&v),
                    "mapping invented {k}={v:?}"
                );
            }
            for k in original.keys() {
                assert!(s.contains_key(k), "mapping dropped {k}");
            }
        }
    }
    // A structured mapping to fresh keys: each gets its source's value.
    let keys: Vec<&String> = original.keys().collect();
    let mut map = serde_json::Map::new();
    let mut want = Vec::new();
    for (wanted, src) in &input.pairs {
        let wanted = format!("WANTED_{wanted}");
        if original.contains_key(&wanted) || map.contains_key(&wanted) {
            continue;
        }
        let source = keys
            .get(usize::from(*src))
            .map(|k| k.to_string())
            .unwrap_or_else(|| format!("MISSING_{src}"));
        map.insert(wanted.clone(), serde_json::Value::String(source.clone()));
        want.push((wanted, source));
    }
    let text = serde_json::Value::Object(map).to_string();
    let mut s = original.clone();
    apply_mapping(&mut s, Some(&text)).unwrap_or_else(|e| panic!("{text} refused: {}", e.message));
    for (wanted, source) in want {
        assert_eq!(
            s.get(&wanted),
            original.get(&source),
            "{wanted} <- {source}"
        );
    }
});
