//! The forms a secret value can take in output: itself, each of its lines, and its
//! base64, URL-encoded and JSON-escaped spellings. Every form is a plain literal that
//! the secrets matcher searches for.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

use crate::MIN_ENCODED_FORM_LEN;

/// Every distinct form of `value` worth searching for, the value itself first.
/// The value and its lines are kept from `min_len` characters on; encoded forms from
/// `max(min_len, MIN_ENCODED_FORM_LEN)` bytes on: shorter ones would match ordinary text.
pub fn secret_forms(value: &str, min_len: usize) -> Vec<Vec<u8>> {
    let mut forms: Vec<Vec<u8>> = Vec::new();
    let mut add = |form: Vec<u8>, min: usize| {
        if !form.is_empty() && form.len() >= min && !forms.contains(&form) {
            forms.push(form);
        }
    };
    let plain = |s: &str| s.chars().count() >= min_len;
    // A value too short to redact is not redacted in any spelling.
    if !plain(value) {
        return forms;
    }
    add(value.as_bytes().to_vec(), 0);
    // Output often splits a multi-line value (keys, certificates) line by line.
    if value.contains('\n') {
        for line in value.lines().map(str::trim) {
            if plain(line) {
                add(line.as_bytes().to_vec(), 0);
            }
        }
    }
    let min_encoded = min_len.max(MIN_ENCODED_FORM_LEN);
    for form in base64_forms(value.as_bytes()) {
        add(form, min_encoded);
    }
    for form in url_forms(value) {
        add(form.into_bytes(), min_encoded);
    }
    for form in json_forms(value) {
        add(form.into_bytes(), min_encoded);
    }
    forms
}

/// Base64 (standard and URL-safe alphabets) spellings of `value`: the whole value
/// encoded alone (with padding), and for each of the three alignments the value can
/// have inside a longer encoded text, the run of characters that depends only on the
/// value's own bits.
pub fn base64_forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    if value.is_empty() {
        return forms;
    }
    for engine in [&STANDARD, &URL_SAFE] {
        forms.push(engine.encode(value).into_bytes());
        for align in 0..3usize {
            // `align` unknown bytes precede the value in its 3-byte group; zeros stand
            // in for them and the characters they touch are cut off.
            let mut buf = vec![0u8; align];
            buf.extend_from_slice(value);
            let encoded = engine.encode(&buf).into_bytes();
            let start = (8 * align).div_ceil(6);
            let end = (8 * (align + value.len())) / 6;
            if end > start && end <= encoded.len() {
                forms.push(encoded[start..end].to_vec());
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

/// How one URL encoder decides which bytes stay literal.
#[derive(Clone, Copy)]
enum UrlStyle {
    /// RFC 3986 unreserved only (`encodeURIComponent` minus `!'()*`, Go `QueryEscape`,
    /// Python `quote(safe='')`).
    Strict,
    /// JavaScript `encodeURIComponent`.
    JsComponent,
    /// Python `quote` with its default `safe='/'`.
    PythonPath,
    /// HTML forms / WHATWG `application/x-www-form-urlencoded`.
    Form,
}

impl UrlStyle {
    fn keeps(self, b: u8) -> bool {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        match self {
            UrlStyle::Strict => unreserved,
            UrlStyle::JsComponent => unreserved || matches!(b, b'!' | b'\'' | b'(' | b')' | b'*'),
            UrlStyle::PythonPath => unreserved || b == b'/',
            UrlStyle::Form => b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'),
        }
    }
}

/// Percent-encoded spellings of `value` by the common encoders, with `%20` or `+`
/// for spaces and upper- or lower-case hex digits.
pub fn url_forms(value: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for style in [
        UrlStyle::Strict,
        UrlStyle::JsComponent,
        UrlStyle::PythonPath,
        UrlStyle::Form,
    ] {
        for plus_for_space in [false, true] {
            for upper in [true, false] {
                let mut s = String::with_capacity(value.len() * 3);
                for &b in value.as_bytes() {
                    if style.keeps(b) {
                        s.push(b as char);
                    } else if b == b' ' && plus_for_space {
                        s.push('+');
                    } else if upper {
                        s.push_str(&format!("%{b:02X}"));
                    } else {
                        s.push_str(&format!("%{b:02x}"));
                    }
                }
                forms.push(s);
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

/// JSON string-literal spellings of `value` (without the quotes): minimal escaping
/// (serde_json, Go without HTML escaping), `\/` for slashes (PHP), and `\uXXXX` for
/// every non-ASCII character (Python's default `ensure_ascii`).
pub fn json_forms(value: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for (escape_slash, ascii_only) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut s = String::with_capacity(value.len() + 8);
        for c in value.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '/' if escape_slash => s.push_str("\\/"),
                '\n' => s.push_str("\\n"),
                '\r' => s.push_str("\\r"),
                '\t' => s.push_str("\\t"),
                '\u{8}' => s.push_str("\\b"),
                '\u{c}' => s.push_str("\\f"),
                c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
                c if ascii_only && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        s.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => s.push(c),
            }
        }
        forms.push(s);
    }
    forms.sort();
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_inner_forms_appear_in_every_alignment() {
        let value = b"GtK23d<ejkLy0ST2";
        let forms = base64_forms(value);
        for prefix in ["", "a", "ab", "abc", "user:"] {
            for suffix in ["", "x", "xy"] {
                let mut text = prefix.as_bytes().to_vec();
                text.extend_from_slice(value);
                text.extend_from_slice(suffix.as_bytes());
                for engine in [&STANDARD, &URL_SAFE] {
                    let enc = engine.encode(&text);
                    assert!(
                        forms
                            .iter()
                            .any(|f| enc.as_bytes().windows(f.len()).any(|w| w == f)),
                        "no form found in {enc} ({prefix:?} + value + {suffix:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn url_forms_cover_plus_and_lower_hex() {
        let forms = url_forms("p@ss w/rd");
        assert!(forms.contains(&"p%40ss%20w%2Frd".to_string()));
        assert!(forms.contains(&"p%40ss+w%2Frd".to_string()));
        assert!(forms.contains(&"p%40ss%20w/rd".to_string()));
        assert!(forms.contains(&"p%40ss%20w%2frd".to_string()));
    }

    #[test]
    fn json_forms_escape_quotes_slashes_and_unicode() {
        let forms = json_forms("a\"b/é\n");
        assert!(forms.contains(&"a\\\"b/é\\n".to_string()));
        assert!(forms.contains(&"a\\\"b\\/é\\n".to_string()));
        assert!(forms.contains(&"a\\\"b/\\u00e9\\n".to_string()));
    }

    #[test]
    fn short_forms_are_dropped() {
        let forms = secret_forms("abc", 3);
        assert!(forms.contains(&b"abc".to_vec()));
        assert!(forms.contains(&b"YWJj".to_vec()));
        assert!(
            forms
                .iter()
                .all(|f| f == b"abc" || f.len() >= MIN_ENCODED_FORM_LEN)
        );
        assert!(secret_forms("ab", 3).is_empty());
    }
}
