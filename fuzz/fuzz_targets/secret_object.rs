//! The env-var provider's secret object parser (JSON, or the documentation's brace-less
//! `"KEY": "value",` lines): never panics on any text, every refusal says something,
//! and any set of string pairs written in either form reads back as itself.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runops_agent::secrets::env_var::parse_secret_object;
use std::collections::BTreeMap;

#[derive(Debug, Arbitrary)]
struct Input {
    text: String,
    pairs: Vec<(String, String)>,
    braces: bool,
    trailing_comma: bool,
    /// Spaces/newlines around the entries.
    padding: u8,
}

fuzz_target!(|input: Input| {
    match parse_secret_object(&input.text) {
        Ok(_) => {}
        Err(e) => assert!(
            e.starts_with("is not a JSON object") || e.starts_with("has a value"),
            "unexpected message {e:?}"
        ),
    }
    if input.pairs.is_empty() {
        return;
    }
    let pad = [" ", "\n", "  \n ", "\t", ""][usize::from(input.padding) % 5];
    let mut expected = BTreeMap::new();
    let mut lines = Vec::new();
    for (k, v) in &input.pairs {
        expected.insert(k.clone(), v.clone());
        lines.push(format!(
            "{pad}{}:{pad}{}",
            serde_json::to_string(k).unwrap(),
            serde_json::to_string(v).unwrap()
        ));
    }
    let mut body = lines.join(&format!(",{pad}"));
    if input.trailing_comma {
        body.push(',');
    }
    let text = if input.braces {
        format!("{{{pad}{body}{pad}}}")
    } else {
        format!("{pad}{body}{pad}")
    };
    let parsed = parse_secret_object(&text)
        .unwrap_or_else(|e| panic!("well-formed secret object {text:?} refused: {e}"));
    assert_eq!(parsed, expected, "for {text:?}");
});
