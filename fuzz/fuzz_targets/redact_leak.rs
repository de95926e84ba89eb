//! Planted secrets never survive redaction in any spelling the engine claims to catch
//! (plain, base64 in any alignment and wrapped at 64/76 columns, URL-encoded,
//! JSON-escaped, bash's quoted forms), whatever the text around them and however the
//! output is chunked, with or without personal-data detection.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runops_fuzz::{PIECES, secret_value, spelled, surviving_form};
use runops_redact::{RedactConfig, Redactor};

#[derive(Debug, Arbitrary)]
struct Input {
    values: Vec<Vec<u8>>,
    /// (which value, which spelling, prefix letters).
    uses: Vec<(u8, u8, Vec<u8>)>,
    filler: Vec<u8>,
    personal_data: bool,
    cuts: Vec<u16>,
}

fuzz_target!(|input: Input| {
    if input.values.is_empty() || input.values.len() > 4 || input.uses.is_empty() {
        return;
    }
    let values: Vec<String> = input.values.iter().map(|v| secret_value(v)).collect();
    let secrets: Vec<(String, String)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("DB_PASSWORD_{i}"), v.clone()))
        .collect();
    let mut text = String::new();
    for (k, (which, how, prefix)) in input.uses.iter().take(12).enumerate() {
        if let Some(f) = input.filler.get(k) {
            text.push_str(PIECES[usize::from(*f) % PIECES.len()]);
        }
        text.push(' ');
        let prefix: String = prefix
            .iter()
            .take(5)
            .map(|b| {
                let letters = b"abcXYZ:";
                letters[usize::from(*b) % letters.len()] as char
            })
            .collect();
        let value = &values[usize::from(*which) % values.len()];
        text.push_str(&spelled(value, *how, &prefix));
        text.push(' ');
    }
    let r = Redactor::new(&RedactConfig {
        secrets,
        personal_data: input.personal_data,
        ..Default::default()
    });
    let bytes = text.as_bytes();
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|c| usize::from(*c) % (bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut s = r.stream();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        s.push(&bytes[at..c], &mut out);
        at = c;
    }
    s.push(&bytes[at..], &mut out);
    s.finish(&mut out);
    for v in &values {
        if let Some(form) = surviving_form(&out, v) {
            panic!(
                "secret {v:?} survived as {form:?} in {:?} (input {text:?})",
                String::from_utf8_lossy(&out)
            );
        }
    }
});
