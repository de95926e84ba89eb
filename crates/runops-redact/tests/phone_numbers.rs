//! Phone numbers that libphonenumber validates for a default region, printed in its
//! standard formats (national, international, E.164), are redacted inside arbitrary log
//! text. The numbers are random valid numbers of each of the 30 default regions, drawn
//! and formatted by libphonenumber (its Python port) into
//! `tests/corpus/generated/phone_formats.tsv` by `scripts/redact/gen_corpus.py`.

use proptest::prelude::*;
use runops_redact::{DEFAULT_PHONE_REGIONS, RedactConfig, Redactor};

fn numbers() -> Vec<(String, String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/generated/phone_formats.tsv"
    );
    std::fs::read_to_string(path)
        .expect("phone_formats.tsv exists")
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.splitn(3, '\t').collect();
            assert_eq!(cols.len(), 3, "{l:?}");
            (
                cols[0].to_string(),
                cols[1].to_string(),
                cols[2].to_string(),
            )
        })
        .collect()
}

fn redactor() -> Redactor {
    Redactor::new(&RedactConfig {
        personal_data: true,
        ..Default::default()
    })
}

#[test]
fn every_default_region_and_format_is_in_the_fixture() {
    let all = numbers();
    for region in DEFAULT_PHONE_REGIONS {
        for format in ["NATIONAL", "INTERNATIONAL", "E164"] {
            assert!(
                all.iter().any(|(r, f, _)| r == region && f == format),
                "{region} {format}"
            );
        }
    }
}

#[test]
fn each_number_in_each_format_is_redacted() {
    let r = redactor();
    let mut missed = Vec::new();
    for (region, format, number) in numbers() {
        let line = format!("2026-03-01T12:34:56Z INFO callback to {number} requested\n");
        let out = r.redact_str(&line);
        if out != "2026-03-01T12:34:56Z INFO callback to [PHONE_NUMBER] requested\n" {
            missed.push(format!("{region} {format} {number:?} -> {out:?}"));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

#[test]
fn regions_outside_the_list_are_read_only_with_a_plus() {
    let r = Redactor::new(&RedactConfig {
        personal_data: true,
        phone_regions: Some(vec!["US".into()]),
        ..Default::default()
    });
    assert_eq!(r.redact_str("tel 020 7946 0958"), "tel 020 7946 0958");
    assert_eq!(r.redact_str("tel +44 20 7946 0958"), "tel [PHONE_NUMBER]");
    assert_eq!(r.redact_str("tel (415) 555-0132"), "tel [PHONE_NUMBER]");
}

/// Text around a number: anything, then a word and a separator, so that the number is
/// not glued to another number (`570 230 392 679` is a sequence, not a phone number).
fn before() -> impl Strategy<Value = String> {
    (
        "[a-zA-Z0-9 ,;:=\"{}\n\t-]{0,40}",
        "[a-zA-Z]{1,10}",
        prop_oneof![
            Just(" "),
            Just(": "),
            Just("="),
            Just("\t"),
            Just("\":\""),
            Just(" | ")
        ],
    )
        .prop_map(|(text, word, sep)| format!("{text} {word}{sep}"))
}

/// A separator, then anything that does not go on with a digit after a space (`0412 345
/// 678 5` is a sequence whose extent is a guess).
fn after() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(" "),
            Just(", "),
            Just(".\n"),
            Just("\n"),
            Just("\"}"),
            Just(")"),
            Just(" | ")
        ],
        "([a-zA-Z\"{}=;][a-zA-Z0-9 ,;:=\"{}\n\t-]{0,39})?",
    )
        .prop_map(|(sep, text)| format!("{sep}{text}"))
}

proptest! {
    #[test]
    fn valid_numbers_are_redacted_inside_arbitrary_text(
        k in any::<prop::sample::Index>(),
        pre in before(),
        post in after(),
        cut in any::<prop::sample::Index>(),
    ) {
        let all = numbers();
        let (region, format, number) = &all[k.index(all.len())];
        let text = format!("{pre}{number}{post}");
        let r = redactor();
        let out = r.redact_str(&text);
        prop_assert!(!out.contains(number.as_str()), "{region} {format}: {text:?} -> {out:?}");
        prop_assert!(out.contains("[PHONE_NUMBER]"), "{region} {format}: {text:?} -> {out:?}");
        // Streamed in two chunks, the same.
        let at = cut.index(text.len() + 1);
        let mut s = r.stream();
        let mut streamed = Vec::new();
        s.push(&text.as_bytes()[..at], &mut streamed);
        s.push(&text.as_bytes()[at..], &mut streamed);
        s.finish(&mut streamed);
        prop_assert_eq!(String::from_utf8_lossy(&streamed), out);
    }
}

#[test]
fn keyed_values_and_labelled_columns_are_redacted_in_any_chunking() {
    let r = redactor();
    let text = "{\"ssn\":\"413161273\",\"phone\":\"5019897824\"} phone=5019897824 id=5019897824\n\
                \x20id | name | phone      |    ssn    | order_no\n\
                ----+------+------------+-----------+------------\n\
                \x20 1 | Jane | 5019897824 | 413161273 | 5019897824\n\
                \x20 2 | Bob  | 2079460958 | 078051120 | 4155550132\n\
                (2 rows)\n\
                System.Data, Version=4.0.0.0, Culture=neutral\n\
                tracking 9400 1118 9922 3197 4284 90\n";
    let whole = r.redact_str(text);
    assert_eq!(
        whole,
        "{\"ssn\":\"[US_SOCIAL_SECURITY_NUMBER]\",\"phone\":\"[PHONE_NUMBER]\"} \
         phone=[PHONE_NUMBER] id=5019897824\n\
         \x20id | name | phone      |    ssn    | order_no\n\
         ----+------+------------+-----------+------------\n\
         \x20 1 | Jane | [PHONE_NUMBER] | [US_SOCIAL_SECURITY_NUMBER] | 5019897824\n\
         \x20 2 | Bob  | [PHONE_NUMBER] | [US_SOCIAL_SECURITY_NUMBER] | 4155550132\n\
         (2 rows)\n\
         System.Data, Version=4.0.0.0, Culture=neutral\n\
         tracking 9400 1118 9922 3197 4284 90\n"
    );
    let bytes = text.as_bytes();
    for cut in 0..=bytes.len() {
        let mut s = r.stream();
        let mut out = Vec::new();
        s.push(&bytes[..cut], &mut out);
        s.push(&bytes[cut..], &mut out);
        s.finish(&mut out);
        assert_eq!(String::from_utf8_lossy(&out), whole, "cut at {cut}");
    }
}
