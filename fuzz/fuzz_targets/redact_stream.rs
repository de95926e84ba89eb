//! Redaction of arbitrary bytes: never panics; the stream cut at random places gives
//! exactly the one-shot result; what it holds back stays within its bound; valid UTF-8
//! stays valid and no pushed chunk ends inside a character; without personal data,
//! flushes (output paused) change nothing.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runops_redact::{InfoType, RedactConfig, Redactor, known_phone_regions};

/// Key names of both kinds: secret-looking (short values redacted) and plain.
const KEYS: &[&str] = &["API_TOKEN", "DB_PASSWORD", "PLAIN_VALUE", "X"];

#[derive(Debug, Arbitrary)]
struct Input {
    secrets: Vec<(u8, String)>,
    personal_data: bool,
    /// Bit i: detect `InfoType::ALL[i]`; all of them when `None`.
    info_types: Option<u16>,
    /// Bit i: read the national phone formats of the i-th known region (mod 32); the
    /// default regions when `None`.
    phone_regions: Option<u32>,
    cuts: Vec<u16>,
    flushes: Vec<bool>,
    text: Vec<u8>,
}

fn chunked(r: &Redactor, input: &[u8], cuts: &[u16], flushes: Option<&[bool]>) -> Vec<u8> {
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|c| usize::from(*c) % (input.len() + 1))
        .collect();
    cuts.sort_unstable();
    let utf8 = std::str::from_utf8(input).is_ok();
    let mut s = r.stream();
    let mut out = Vec::new();
    let mut at = 0;
    for (k, c) in cuts.into_iter().enumerate() {
        let before = out.len();
        s.push(&input[at..c], &mut out);
        if let Some(f) = flushes
            && f.get(k).copied().unwrap_or(false)
        {
            s.flush(&mut out);
        }
        if utf8 {
            assert!(
                std::str::from_utf8(&out[before..]).is_ok(),
                "a pushed chunk split a character"
            );
        }
        assert!(s.held_back() <= r.max_held_back(), "held back too much");
        at = c;
    }
    s.push(&input[at..], &mut out);
    s.finish(&mut out);
    assert_eq!(s.held_back(), 0);
    out
}

fuzz_target!(|input: Input| {
    if input.secrets.len() > 4 || input.text.len() > 64 * 1024 {
        return;
    }
    let secrets: Vec<(String, String)> = input
        .secrets
        .iter()
        .map(|(k, v)| {
            (
                KEYS[usize::from(*k) % KEYS.len()].to_string(),
                v.chars().take(200).collect(),
            )
        })
        .collect();
    let info_types = input.info_types.map(|mask| {
        InfoType::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << (i % 16)) != 0)
            .map(|(_, t)| *t)
            .collect()
    });
    let phone_regions = input.phone_regions.map(|mask| {
        known_phone_regions()
            .enumerate()
            .filter(|(i, _)| mask & (1 << (i % 32)) != 0)
            .map(|(_, r)| r.to_string())
            .collect()
    });
    let r = Redactor::new(&RedactConfig {
        secrets,
        personal_data: input.personal_data,
        info_types,
        phone_regions,
    });
    let whole = r.redact(&input.text);
    if std::str::from_utf8(&input.text).is_ok() {
        assert!(
            std::str::from_utf8(&whole).is_ok(),
            "valid UTF-8 became invalid"
        );
    }
    let streamed = chunked(&r, &input.text, &input.cuts, None);
    assert_eq!(streamed, whole, "streamed redaction differs from one-shot");
    let paused = chunked(&r, &input.text, &input.cuts, Some(&input.flushes));
    if !input.personal_data {
        assert_eq!(paused, whole, "flushes changed the redaction");
    }
    let _ = r.find_personal_data(&input.text);
});
