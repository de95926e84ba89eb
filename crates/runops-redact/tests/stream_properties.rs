//! Properties of streamed redaction: for random text and random chunkings the stream
//! gives exactly the one-shot result, and no secret value survives in any spelling.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use proptest::prelude::*;
use runops_redact::{LINE_CAP, RedactConfig, Redactor};

/// Feeds `input` cut at `cuts` (positions, any order, may repeat) and finishes.
fn stream_in_chunks(r: &Redactor, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut s = r.stream();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        let before = out.len();
        s.push(&input[at..c], &mut out);
        if std::str::from_utf8(input).is_ok() {
            assert!(
                std::str::from_utf8(&out[before..]).is_ok(),
                "a pushed chunk split a character"
            );
        }
        assert!(s.held_back() <= r.max_held_back());
        at = c;
    }
    s.push(&input[at..], &mut out);
    s.finish(&mut out);
    assert_eq!(s.held_back(), 0);
    out
}

/// Pieces random text is built from: words, numbers, separators, personal data,
/// multi-byte characters and key-block markers.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z]{1,12}",
        "[0-9]{1,20}",
        "[ \t\n:.,;/=@+()-]{1,3}",
        Just("\n".to_string()),
        Just("é€😀".to_string()),
        Just("jane.doe@example.com".to_string()),
        Just("+44 20 7946 0958".to_string()),
        Just("(415) 555-0132".to_string()),
        Just("4111-1111-1111-1111".to_string()),
        Just("536-22-1234".to_string()),
        Just("GB82 WEST 1234 5698 7654 32".to_string()),
        Just("10.20.30.40".to_string()),
        Just("2001:db8::8a2e:370:7334".to_string()),
        Just("AKIAIOSFODNN7EXAMPLE".to_string()),
        Just("https://u:pw@host/".to_string()),
        Just("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2ln".to_string()),
        Just("-----BEGIN RSA PRIVATE KEY-----\n".to_string()),
        Just("-----END RSA PRIVATE KEY-----".to_string()),
        // National phone formats, keyed identifiers and SQL tables whose header labels
        // a column: the table state carries across lines.
        Just("020 7946 0958".to_string()),
        Just("(11) 2110-7975".to_string()),
        Just("\"ssn\":\"413161273\"".to_string()),
        Just("phone=5019897824".to_string()),
        Just(" id | phone      | ssn\n".to_string()),
        Just("----+------------+-----------\n".to_string()),
        Just("  1 | 5019897824 | 413161273\n".to_string()),
    ]
}

/// A secret value: no `[`/`]` (which replacement markers contain), at least 6 chars;
/// quotes, shell metacharacters and non-ASCII letters for the quoted and escaped forms.
fn secret_value() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9!@#%&*/+= _.:'\"$`~<>;éß-]{6,24}"
}

/// The spellings of `value` a task could print, each with some text around it.
fn spelled(value: &str, how: u8, prefix: &str) -> String {
    let v = value.as_bytes();
    match how % 12 {
        0 => value.to_string(),
        1 => STANDARD.encode([prefix.as_bytes(), v, b"!"].concat()),
        2 => URL_SAFE.encode([prefix.as_bytes(), v].concat()),
        3 => url_encode(value),
        4 => value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('/', "\\/"),
        // `base64` (76 columns) and PEM (64) wrapping, the value at any offset.
        6 | 7 => {
            let filler = "x".repeat(usize::from(how) % 80);
            let enc = STANDARD.encode([filler.as_bytes(), prefix.as_bytes(), v].concat());
            let width = if how % 12 == 6 { 76 } else { 64 };
            wrap(&enc, width)
        }
        8 => format!("+ echo '{}'", value.replace('\'', "'\\''")),
        9 => printf_q(value),
        10 => format!("declare -x V=\"{}\"", declare_p(value)),
        11 => json_upper(value),
        _ => format!("{prefix}{value}{prefix}"),
    }
}

fn wrap(text: &str, width: usize) -> String {
    text.as_bytes()
        .chunks(width)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// bash's `printf %q` for printable text: `#` and `~` are escaped at the start of the
/// word, `~` also after `=` and `:`.
fn printf_q(value: &str) -> String {
    let mut out = String::new();
    let mut prev = None;
    for c in value.chars() {
        let word_start = match prev {
            None => c == '#' || c == '~',
            Some(p) => c == '~' && (p == '=' || p == ':'),
        };
        if " \t\n'\"\\|&;()<>!{}*[?]^$`,".contains(c) || word_start {
            out.push('\\');
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// bash's `declare -p` between the double quotes.
fn declare_p(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if matches!(c, '"' | '$' | '`' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// .NET's default JSON escaping: HTML-sensitive and non-ASCII characters as upper-case
/// `\\uXXXX`.
fn json_upper(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '<' | '>' | '&' | '\'' | '+' | '`' | '"' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            '\\' => out.push_str("\\\\"),
            c if !c.is_ascii() || c.is_ascii_control() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else if b == b' ' {
                "+".to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn config(secrets: &[(String, String)], personal_data: bool) -> RedactConfig {
    RedactConfig {
        secrets: secrets.to_vec(),
        personal_data,
        ..Default::default()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn stream_equals_one_shot_for_any_chunking(
        pieces in prop::collection::vec(piece(), 0..120),
        secrets in prop::collection::vec(secret_value(), 0..4),
        personal_data in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let secrets: Vec<(String, String)> = secrets
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("SECRET_{i}"), v))
            .collect();
        let mut text = pieces.concat();
        for (_, v) in &secrets {
            text.push_str(v);
            text.push('\n');
        }
        let r = Redactor::new(&config(&secrets, personal_data));
        let whole = r.redact(text.as_bytes());
        prop_assert!(std::str::from_utf8(&whole).is_ok());
        let chunked = stream_in_chunks(&r, text.as_bytes(), &cuts);
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn lines_are_redacted_independently_of_each_other(
        pieces in prop::collection::vec(piece(), 0..150),
        secrets in prop::collection::vec(secret_value(), 0..3),
    ) {
        // Without private-key blocks (the one finding that spans lines) and with short
        // lines, redacting the whole equals redacting line by line.
        let text: String = pieces.concat().replace("-----BEGIN", "-----BEGUN");
        let secrets: Vec<(String, String)> = secrets
            .into_iter()
            .map(|v| ("TOKEN".to_string(), v))
            .collect();
        let r = Redactor::new(&config(&secrets, true));
        let by_line: Vec<u8> = text
            .split_inclusive('\n')
            .flat_map(|line| r.redact(line.as_bytes()))
            .collect();
        let whole = r.redact(text.as_bytes());
        prop_assert_eq!(String::from_utf8_lossy(&whole), String::from_utf8_lossy(&by_line));
    }

    #[test]
    fn no_secret_survives_in_any_spelling(
        values in prop::collection::vec(secret_value(), 1..5),
        uses in prop::collection::vec((0usize..5, any::<u8>(), "[a-zA-Z:]{0,5}"), 1..12),
        filler in prop::collection::vec(piece(), 0..30),
        personal_data in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let secrets: Vec<(String, String)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("DB_PASSWORD_{i}"), v.clone()))
            .collect();
        let mut text = String::new();
        for (k, (which, how, prefix)) in uses.iter().enumerate() {
            text.push_str(&filler.get(k).cloned().unwrap_or_default());
            text.push(' ');
            text.push_str(&spelled(&values[which % values.len()], *how, prefix));
            text.push(' ');
        }
        let r = Redactor::new(&config(&secrets, personal_data));
        let out = stream_in_chunks(&r, text.as_bytes(), &cuts);
        for v in &values {
            prop_assert!(!contains(&out, v.as_bytes()), "{:?} survived in {:?}", v, String::from_utf8_lossy(&out));
            let quoted = [
                url_encode(v),
                v.replace('"', "\\\"").replace('/', "\\/"),
                v.replace('\'', "'\\''"),
                printf_q(v),
                declare_p(v),
                json_upper(v),
            ];
            for form in quoted {
                prop_assert!(!contains(&out, form.as_bytes()), "{:?} survived", form);
            }
            // Wrapped base64: the output with its line breaks removed.
            let joined: Vec<u8> = out.iter().copied().filter(|&b| b != b'\n').collect();
            // The full encoding, and the part of any embedding that only the value decides.
            for engine in [&STANDARD, &URL_SAFE] {
                let full = engine.encode(v);
                prop_assert!(!contains(&out, full.as_bytes()), "{:?} survived", full);
                for align in 0..3usize {
                    let padded = [vec![0u8; align], v.as_bytes().to_vec()].concat();
                    let enc = engine.encode(&padded);
                    let core = &enc.as_bytes()[(8 * align).div_ceil(6)..(8 * (align + v.len())) / 6];
                    prop_assert!(!contains(&out, core), "base64 of {:?} survived", v);
                    prop_assert!(!contains(&joined, core), "wrapped base64 of {:?} survived", v);
                }
            }
        }
    }
}

#[test]
fn over_long_lines_are_cut_the_same_way_in_any_chunking() {
    let r = Redactor::new(&config(
        &[("API_TOKEN".to_string(), "tok-123456".to_string())],
        true,
    ));
    // Three capped segments, an e-mail and a secret right at the first cap, no spaces.
    let mut text = "x".repeat(LINE_CAP - 8);
    text.push_str("jane@example.com-tok-123456-");
    text.push_str(&"é".repeat(LINE_CAP));
    text.push_str("+44 20 7946 0958\n");
    let whole = r.redact(text.as_bytes());
    assert!(std::str::from_utf8(&whole).is_ok());
    assert!(!contains(&whole, b"tok-123456"));
    let mut seed = 7u64;
    for _ in 0..6 {
        let cuts: Vec<usize> = (0..20)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as usize
            })
            .collect();
        assert_eq!(stream_in_chunks(&r, text.as_bytes(), &cuts), whole);
    }
    let byte_by_byte: Vec<usize> = (0..text.len()).step_by(4093).collect();
    assert_eq!(stream_in_chunks(&r, text.as_bytes(), &byte_by_byte), whole);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The agent merges stdout and stderr into one log in arrival order. Each stream
    /// has its own redactor, so a secret whose halves arrive on stdout with stderr
    /// bytes between them in the log is still caught, and each stream's bytes come out
    /// as its own one-shot redaction, whatever the interleaving.
    #[test]
    fn per_stream_redaction_catches_a_secret_split_by_the_other_stream(
        value in secret_value(),
        split in any::<prop::sample::Index>(),
        noise in prop::collection::vec(piece(), 1..6),
        order in prop::collection::vec(any::<bool>(), 0..16),
        personal_data in any::<bool>(),
    ) {
        let r = Redactor::new(&config(&[("API_TOKEN".to_string(), value.clone())], personal_data));
        let cut = {
            let chars: Vec<usize> = value.char_indices().map(|(i, _)| i).skip(1).collect();
            if chars.is_empty() { value.len() } else { chars[split.index(chars.len())] }
        };
        let stdout_chunks = [format!("start {}", &value[..cut]), format!("{} end\n", &value[cut..])];
        let stderr_chunks: Vec<String> = noise;
        let (mut out_s, mut err_s) = (r.stream(), r.stream());
        let mut merged = Vec::new();
        let (mut o, mut e) = (0, 0);
        let mut turns = order.into_iter();
        while o < stdout_chunks.len() || e < stderr_chunks.len() {
            // Stdout's first half always comes before stderr's first chunk.
            let take_out = o == 0 || e >= stderr_chunks.len()
                || (o < stdout_chunks.len() && turns.next().unwrap_or(true));
            if take_out && o < stdout_chunks.len() {
                out_s.push(stdout_chunks[o].as_bytes(), &mut merged);
                o += 1;
            } else {
                err_s.push(stderr_chunks[e].as_bytes(), &mut merged);
                e += 1;
            }
        }
        out_s.finish(&mut merged);
        err_s.finish(&mut merged);
        prop_assert!(!contains(&merged, value.as_bytes()), "{:?} survived in {:?}", value, String::from_utf8_lossy(&merged));
        prop_assert!(contains(&merged, b"[REDACTED:API_TOKEN]"));
    }
}

/// Like [`stream_in_chunks`], with a flush (output paused) after the pushes `flushes`
/// marks.
fn stream_with_pauses(r: &Redactor, input: &[u8], cuts: &[usize], flushes: &[bool]) -> Vec<u8> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut s = r.stream();
    let mut out = Vec::new();
    let mut at = 0;
    for (k, c) in cuts.into_iter().enumerate() {
        s.push(&input[at..c], &mut out);
        if flushes.get(k).copied().unwrap_or(false) {
            s.flush(&mut out);
        }
        assert!(s.held_back() <= r.max_held_back());
        at = c;
    }
    s.push(&input[at..], &mut out);
    s.finish(&mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Flushing when output pauses never releases the start of a secret that later
    /// completes, and without personal data (where flushes cannot cut a finding)
    /// paused streams still equal the one-shot redaction.
    #[test]
    fn flushes_never_release_a_secret_prefix(
        values in prop::collection::vec(secret_value(), 1..4),
        uses in prop::collection::vec((0usize..4, any::<u8>(), "[a-zA-Z:]{0,5}"), 1..8),
        filler in prop::collection::vec(piece(), 0..20),
        personal_data in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
        flushes in prop::collection::vec(any::<bool>(), 0..16),
    ) {
        let secrets: Vec<(String, String)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("API_TOKEN_{i}"), v.clone()))
            .collect();
        let mut text = String::new();
        for (k, (which, how, prefix)) in uses.iter().enumerate() {
            text.push_str(&filler.get(k).cloned().unwrap_or_default());
            text.push(' ');
            text.push_str(&spelled(&values[which % values.len()], *how, prefix));
        }
        let r = Redactor::new(&config(&secrets, personal_data));
        let out = stream_with_pauses(&r, text.as_bytes(), &cuts, &flushes);
        for v in &values {
            prop_assert!(!contains(&out, v.as_bytes()), "{:?} survived in {:?}", v, String::from_utf8_lossy(&out));
        }
        if !personal_data {
            prop_assert_eq!(out, r.redact(text.as_bytes()));
        }
    }
}
