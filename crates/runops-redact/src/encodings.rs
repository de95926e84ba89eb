//! The forms a secret value can take in output: itself, each of its lines, its base64
//! (also wrapped into lines as `base64` and PEM tools print it), URL-encoded and
//! JSON-escaped spellings, and the quoted spellings bash prints (`set -x`, `printf %q`,
//! `declare -p`). Every form is a plain literal that the secrets matcher searches for.

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
    for form in shell_forms(value) {
        add(form.into_bytes(), min_encoded);
    }
    forms
}

/// Line widths base64 encoders wrap at: 76 (`base64`, MIME, Python `encodebytes`) and
/// 64 (PEM, `openssl base64`).
pub const BASE64_WRAP_WIDTHS: [usize; 2] = [76, 64];

/// Longest base64 run whose wrapped spellings are searched for: a run has about
/// `2 x width` wrapped spellings of its own length, so longer values (keys,
/// certificates) would cost megabytes of patterns; their unwrapped forms still count.
pub const MAX_WRAPPED_RUN: usize = 1024;

/// The base64 runs of `value` (see [`base64_forms`]) as wrapped output shows them: a
/// line break (`\n`) after any of their characters, and from there every line width of
/// [`BASE64_WRAP_WIDTHS`]. Each item is `(form, line breaks in it)`. Only runs of at
/// least `max(min_len, MIN_ENCODED_FORM_LEN)` bytes before wrapping are kept, and a
/// value too short to redact gets none.
pub fn wrapped_base64_forms(value: &str, min_len: usize) -> Vec<(Vec<u8>, usize)> {
    let mut forms: Vec<(Vec<u8>, usize)> = Vec::new();
    if value.chars().count() < min_len {
        return forms;
    }
    let min_encoded = min_len.max(MIN_ENCODED_FORM_LEN);
    let mut seen = std::collections::HashSet::new();
    for run in base64_inner_runs(value.as_bytes()) {
        if run.len() < min_encoded || run.len() > MAX_WRAPPED_RUN {
            continue;
        }
        for width in BASE64_WRAP_WIDTHS {
            // The first break falls after 1..=width characters of the run; the next
            // ones follow every `width` characters.
            for first in 1..run.len().min(width + 1) {
                let mut form = Vec::with_capacity(run.len() + run.len() / width + 1);
                let mut breaks = 0;
                for (i, &c) in run.iter().enumerate() {
                    if i >= first && (i - first) % width == 0 {
                        form.push(b'\n');
                        breaks += 1;
                    }
                    form.push(c);
                }
                if seen.insert(form.clone()) {
                    forms.push((form, breaks));
                }
            }
        }
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
    }
    forms.extend(base64_inner_runs(value));
    forms.sort();
    forms.dedup();
    forms
}

/// For each base64 alphabet and each of the three alignments `value` can have inside a
/// longer encoded text, the run of characters that depends only on the value's bits.
fn base64_inner_runs(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    if value.is_empty() {
        return forms;
    }
    for engine in [&STANDARD, &URL_SAFE] {
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

/// Which characters one JSON encoder writes as `\\uXXXX` besides the control characters.
#[derive(Clone, Copy)]
struct JsonStyle {
    /// `/` as `\\/` (PHP).
    slash: bool,
    /// Every non-ASCII character as `\\uXXXX` (Python's `ensure_ascii`, PHP, .NET).
    non_ascii: bool,
    /// HTML-sensitive ASCII characters as `\\uXXXX`: Go `<>&`, Gson `<>&='`, .NET
    /// `<>&'+\`"`. Encoders that escape these also escape U+2028 and U+2029.
    html: &'static [char],
    /// Hex digits in upper case (.NET, Jackson) or lower case (Python, Go, PHP).
    upper: bool,
}

/// The HTML-escaping sets of [`JsonStyle::html`].
const JSON_HTML_SETS: [&[char]; 4] = [
    &[],
    &['<', '>', '&'],
    &['<', '>', '&', '=', '\''],
    &['<', '>', '&', '\'', '+', '`', '"'],
];

/// JSON string-literal spellings of `value` (without the quotes) by the common encoders:
/// minimal escaping (serde_json, JavaScript), `\\/` for slashes (PHP), `\\uXXXX` for
/// non-ASCII characters (Python's default, PHP, .NET), HTML-sensitive characters as
/// `\\uXXXX` (Go, Gson, .NET); each with lower- and upper-case hex digits.
pub fn json_forms(value: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for slash in [false, true] {
        for non_ascii in [false, true] {
            for html in JSON_HTML_SETS {
                for upper in [false, true] {
                    forms.push(json_escape(
                        value,
                        JsonStyle {
                            slash,
                            non_ascii,
                            html,
                            upper,
                        },
                    ));
                }
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

fn json_escape(value: &str, style: JsonStyle) -> String {
    let mut s = String::with_capacity(value.len() + 8);
    let unit = |s: &mut String, u: u16| {
        if style.upper {
            s.push_str(&format!("\\u{u:04X}"));
        } else {
            s.push_str(&format!("\\u{u:04x}"));
        }
    };
    for c in value.chars() {
        match c {
            c if style.html.contains(&c) => unit(&mut s, c as u16),
            '\u{2028}' | '\u{2029}' if !style.html.is_empty() => unit(&mut s, c as u16),
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '/' if style.slash => s.push_str("\\/"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{8}' => s.push_str("\\b"),
            '\u{c}' => s.push_str("\\f"),
            c if (c as u32) < 0x20 => unit(&mut s, c as u16),
            c if style.non_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    unit(&mut s, *u);
                }
            }
            c => s.push(c),
        }
    }
    s
}

/// Characters `printf %q` (and `${v@Q}`-style backslash quoting) escapes anywhere.
const SHELL_BACKSLASHED: &[u8] = b" \t\n'\"\\|&;()<>!{}*[?]^$`,";

/// The spellings bash prints for `value` when it quotes it: `set -x` and `${v@Q}`
/// (`'...'` with `'` as `'\\''`), `printf %q` (backslashes before metacharacters; `#`
/// and `~` only at the start of a word, `~` also after `=` and `:`), `declare -p`
/// (`"..."` with `\\` before `"`, `$`, `` ` ``, `\\`), and the ANSI-C `$'...'` form
/// used for values with control characters (in a UTF-8 locale, and in the C locale
/// where non-ASCII bytes become octal escapes too). Each form is what appears between
/// the quotes, so a value quoted as part of a longer word is found as well.
pub fn shell_forms(value: &str) -> Vec<String> {
    let mut forms = Vec::new();
    // `set -x`, `${v@Q}`: single quotes, a quote closes, escapes and reopens.
    forms.push(value.replace('\'', "'\\''"));
    // `declare -p`: double quotes.
    let mut dq = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        if matches!(c, '"' | '$' | '`' | '\\') {
            dq.push('\\');
        }
        dq.push(c);
    }
    forms.push(dq);
    // `printf %q`: whether the value's first `#` or `~` is escaped depends on what
    // precedes the value in the word, so both.
    for escape_first in [false, true] {
        let mut bq = String::with_capacity(value.len() * 2);
        let mut prev: Option<char> = None;
        for c in value.chars() {
            let at_start = match prev {
                None => escape_first,
                Some(p) => c == '~' && (p == '=' || p == ':'),
            };
            let escaped = (c.is_ascii() && SHELL_BACKSLASHED.contains(&(c as u8)))
                || (matches!(c, '#' | '~') && at_start);
            if escaped {
                bq.push('\\');
            }
            bq.push(c);
            prev = Some(c);
        }
        forms.push(bq);
    }
    // `$'...'` (ANSI-C quoting).
    for octal_non_ascii in [false, true] {
        let mut ansi = String::with_capacity(value.len() * 2);
        let mut buf = [0u8; 4];
        for c in value.chars() {
            match c {
                '\u{7}' => ansi.push_str("\\a"),
                '\u{8}' => ansi.push_str("\\b"),
                '\u{1b}' => ansi.push_str("\\E"),
                '\u{c}' => ansi.push_str("\\f"),
                '\n' => ansi.push_str("\\n"),
                '\r' => ansi.push_str("\\r"),
                '\t' => ansi.push_str("\\t"),
                '\u{b}' => ansi.push_str("\\v"),
                '\\' => ansi.push_str("\\\\"),
                '\'' => ansi.push_str("\\'"),
                c if c.is_ascii_control() => ansi.push_str(&format!("\\{:03o}", c as u32)),
                c if octal_non_ascii && !c.is_ascii() => {
                    for b in c.encode_utf8(&mut buf).bytes() {
                        ansi.push_str(&format!("\\{b:03o}"));
                    }
                }
                c => ansi.push(c),
            }
        }
        forms.push(ansi);
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

    #[test]
    fn json_forms_cover_upper_case_hex_and_html_escaping() {
        let forms = json_forms("pä<ss>&'+x");
        // .NET's default encoder: HTML-sensitive and non-ASCII characters, upper case.
        assert!(forms.contains(&"p\\u00E4\\u003Css\\u003E\\u0026\\u0027\\u002Bx".to_string()));
        // Go: `<>&` in lower case, non-ASCII kept.
        assert!(forms.contains(&"pä\\u003css\\u003e\\u0026'+x".to_string()));
        // Python with upper-case hex (Jackson's ESCAPE_NON_ASCII).
        assert!(forms.contains(&"p\\u00E4<ss>&'+x".to_string()));
        assert!(json_forms("a\u{1}b").contains(&"a\\u0001b".to_string()));
        assert!(json_forms("\u{1f}ab").contains(&"\\u001Fab".to_string()));
    }

    /// What bash 5.2 prints for `X`, `Z` and `U` below (`set -x; : "$X"`,
    /// `printf '%q'`, `declare -p`), copied from a real run.
    #[test]
    fn shell_forms_are_what_bash_prints() {
        let x = "it's a #p@ss~w0rd \"q\" $HOME `b` \\ ! & * ? [x] {y} (z) < > | ; , = : ^ %";
        let forms = shell_forms(x);
        for printed in [
            // set -x
            r#"it'\''s a #p@ss~w0rd "q" $HOME `b` \ ! & * ? [x] {y} (z) < > | ; , = : ^ %"#,
            // printf %q
            r#"it\'s\ a\ #p@ss~w0rd\ \"q\"\ \$HOME\ \`b\`\ \\\ \!\ \&\ \*\ \?\ \[x\]\ \{y\}\ \(z\)\ \<\ \>\ \|\ \;\ \,\ =\ :\ \^\ %"#,
            // declare -p
            r#"it's a #p@ss~w0rd \"q\" \$HOME \`b\` \\ ! & * ? [x] {y} (z) < > | ; , = : ^ %"#,
        ] {
            assert!(
                forms.contains(&printed.to_string()),
                "{printed}\n{forms:#?}"
            );
        }
        let z = "a\tb\u{1}c'd\\e\u{7f}\u{1b}";
        assert!(shell_forms(z).contains(&r"a\tb\001c\'d\\e\177\E".to_string()));
        let u = "héllo wörld";
        let forms = shell_forms(u);
        assert!(forms.contains(&r"héllo\ wörld".to_string()));
        assert!(forms.contains(&r"h\303\251llo w\303\266rld".to_string()));
        let t = shell_forms("~a=~b:~c#d");
        assert!(t.contains(&r"\~a=\~b:\~c#d".to_string()), "{t:?}");
        assert!(t.contains(&r"~a=\~b:\~c#d".to_string()), "{t:?}");
        assert!(shell_forms("#x").contains(&r"\#x".to_string()));
    }

    #[test]
    fn wrapped_base64_forms_cover_every_break_position() {
        let value = "tok_live_8f3Kq2Lm9Xw7Vb1N";
        let forms = wrapped_base64_forms(value, 6);
        for width in BASE64_WRAP_WIDTHS {
            for prefix_len in 0..(2 * width) {
                let mut text = "a".repeat(prefix_len).into_bytes();
                text.extend_from_slice(value.as_bytes());
                let enc = STANDARD.encode(&text);
                let wrapped: Vec<u8> = enc
                    .as_bytes()
                    .chunks(width)
                    .collect::<Vec<_>>()
                    .join(&b'\n');
                // The run is on one line, or wrapped.
                let found = forms
                    .iter()
                    .any(|(f, _)| wrapped.windows(f.len()).any(|w| w == f.as_slice()))
                    || base64_forms(value.as_bytes())
                        .iter()
                        .any(|f| wrapped.windows(f.len()).any(|w| w == f.as_slice()));
                assert!(found, "width {width}, prefix {prefix_len}");
            }
        }
        assert!(wrapped_base64_forms("short", 6).is_empty());
    }
}
