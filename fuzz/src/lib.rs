//! Helpers shared by the fuzz targets: the spellings of a secret a task could print
//! (as the redaction property tests build them) and the checks that none survived.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

/// Characters planted secret values are made of: no `[`/`]` (which replacement
/// markers contain) and no newline; quotes, shell metacharacters and non-ASCII letters
/// for the quoted and escaped forms.
pub const SECRET_ALPHABET: &[char] = &[
    'a', 'b', 'c', 'x', 'y', 'z', 'A', 'B', 'Q', 'Z', '0', '1', '7', '9', '!', '@', '#', '%', '&',
    '*', '/', '+', '=', ' ', '_', '.', ':', '\'', '"', '$', '`', '~', '<', '>', ';', 'é', 'ß', '-',
];

/// A secret value of 6 to 24 characters of [`SECRET_ALPHABET`] chosen by `raw`.
pub fn secret_value(raw: &[u8]) -> String {
    let mut v: String = raw
        .iter()
        .take(24)
        .map(|b| SECRET_ALPHABET[usize::from(*b) % SECRET_ALPHABET.len()])
        .collect();
    while v.chars().count() < 6 {
        v.push('k');
    }
    v
}

/// Pieces the text around planted secrets is built from: words, numbers, separators,
/// personal data, multi-byte characters and key-block markers.
pub const PIECES: &[&str] = &[
    "deploy",
    "step",
    "ok",
    "42",
    "20240101",
    " ",
    "\t",
    "\n",
    ":",
    "=",
    "/",
    ", ",
    "é€😀",
    "jane.doe@example.com",
    "+44 20 7946 0958",
    "(415) 555-0132",
    "4111-1111-1111-1111",
    "536-22-1234",
    "GB82 WEST 1234 5698 7654 32",
    "10.20.30.40",
    "2001:db8::8a2e:370:7334",
    "AKIAIOSFODNN7EXAMPLE",
    "https://u:pw@host/",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2ln",
    "-----BEGIN RSA PRIVATE KEY-----\n",
    "-----END RSA PRIVATE KEY-----",
];

/// The spelling number `how` of `value` (plain, base64 with text around it, wrapped
/// base64, URL-encoded, JSON-escaped, bash's quoted forms), with `prefix` around it.
pub fn spelled(value: &str, how: u8, prefix: &str) -> String {
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

/// bash's `printf %q` for printable text.
pub fn printf_q(value: &str) -> String {
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
pub fn declare_p(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if matches!(c, '"' | '$' | '`' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// .NET's default JSON escaping: HTML-sensitive and non-ASCII characters as `\uXXXX`.
pub fn json_upper(value: &str) -> String {
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

pub fn url_encode(value: &str) -> String {
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

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// `out` with every replacement marker (`[REDACTED:KEY]`, `[EMAIL_ADDRESS]`...) turned
/// into one NUL byte, so that a secret's letters inside a marker's name are not taken
/// for a leak and no spelling can span a marker.
pub fn without_markers(out: &[u8]) -> Vec<u8> {
    let mut res = Vec::with_capacity(out.len());
    let mut i = 0;
    while i < out.len() {
        if out[i] == b'[' {
            let len = out[i + 1..]
                .iter()
                .take_while(|b| {
                    b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b'_' || **b == b':'
                })
                .count();
            if len > 0 && out.get(i + 1 + len) == Some(&b']') {
                res.push(0);
                i += len + 2;
                continue;
            }
        }
        res.push(out[i]);
        i += 1;
    }
    res
}

/// Every spelling of `value` that must not appear in redacted output, with `out`'s
/// line breaks removed for the wrapped base64 ones. Returns the first one found.
pub fn surviving_form(out: &[u8], value: &str) -> Option<String> {
    let out = without_markers(out);
    if contains(&out, value.as_bytes()) {
        return Some(value.to_string());
    }
    let quoted = [
        url_encode(value),
        value.replace('"', "\\\"").replace('/', "\\/"),
        value.replace('\'', "'\\''"),
        printf_q(value),
        declare_p(value),
        json_upper(value),
    ];
    for form in quoted {
        if contains(&out, form.as_bytes()) {
            return Some(form);
        }
    }
    let joined: Vec<u8> = out.iter().copied().filter(|&b| b != b'\n').collect();
    for engine in [&STANDARD, &URL_SAFE] {
        let full = engine.encode(value);
        if contains(&out, full.as_bytes()) {
            return Some(full);
        }
        let v = value.as_bytes();
        for align in 0..3usize {
            let padded = [vec![0u8; align], v.to_vec()].concat();
            let enc = engine.encode(&padded);
            let core = &enc.as_bytes()[(8 * align).div_ceil(6)..(8 * (align + v.len())) / 6];
            if contains(&out, core) || contains(&joined, core) {
                return Some(String::from_utf8_lossy(core).into_owned());
            }
        }
    }
    None
}
