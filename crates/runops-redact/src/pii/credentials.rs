//! Credentials that have a recognizable shape: private-key blocks, JSON web tokens and
//! AWS access and secret keys.

use super::class::byte;
use super::{Hit, InfoType, Literal};

const BEGIN_BYTES: &[u8] = b"-----BEGIN ";
const END_BYTES: &[u8] = b"-----END ";
pub(super) static BEGIN: Literal = Literal::new(BEGIN_BYTES);
static END: Literal = Literal::new(END_BYTES);
static JWT_START: Literal = Literal::new(b"eyJ");
static AKIA: Literal = Literal::new(b"AKIA");
static ASIA: Literal = Literal::new(b"ASIA");

/// Length of the label in `-----BEGIN <label>-----` when it names a private key
/// (`RSA PRIVATE KEY`, `OPENSSH PRIVATE KEY`, `PGP PRIVATE KEY BLOCK`...).
fn private_key_label(after_marker: &[u8]) -> Option<usize> {
    let len = after_marker
        .iter()
        .take(64)
        .position(|b| !(b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b' '))?;
    let label = &after_marker[..len];
    let names_key = label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK");
    (names_key && after_marker[len..].starts_with(b"-----")).then_some(len + 5)
}

/// Where the first `-----END ... PRIVATE KEY-----` marker in `text` ends.
pub(super) fn private_key_end(text: &[u8]) -> Option<usize> {
    END.find_iter(text).find_map(|at| {
        let label_start = at + END_BYTES.len();
        private_key_label(&text[label_start..]).map(|len| label_start + len)
    })
}

/// `-----BEGIN ... PRIVATE KEY-----` up to its END marker. When the END marker is not in
/// this segment the block runs to the segment's end (its newline included) and the
/// number of bytes taken is returned: the block stays open.
pub(super) fn private_keys(text: &[u8], base: usize, hits: &mut Vec<Hit>) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = BEGIN.find(&text[from..]).map(|p| from + p) {
        let label_start = at + BEGIN_BYTES.len();
        let Some(len) = private_key_label(&text[label_start..]) else {
            from = label_start;
            continue;
        };
        let body = label_start + len;
        match private_key_end(&text[body..]) {
            Some(end) => {
                hits.push(Hit::new(base + at, base + body + end, InfoType::PrivateKey));
                from = body + end;
            }
            None => {
                hits.push(Hit::new(base + at, base + text.len(), InfoType::PrivateKey));
                return Some(text.len() - at);
            }
        }
    }
    None
}

fn base64url_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn base64url_run(text: &[u8], at: usize) -> usize {
    text.get(at..)
        .map_or(0, |t| t.iter().take_while(|b| base64url_char(**b)).count())
}

/// Shortest JWT header we accept: `{"alg":"none"}` already encodes to 20 characters.
const JWT_MIN_HEADER: usize = 16;

/// `eyJ<header>.eyJ<payload>.<signature>`: both JSON parts encode a `{"` prefix as
/// `eyJ`; the signature may be empty (`alg: none`).
pub(super) fn json_web_tokens(text: &[u8], base: usize, hits: &mut Vec<Hit>) {
    let mut from = 0;
    while let Some(at) = JWT_START.find(&text[from..]).map(|p| from + p) {
        from = at + 3;
        if at > 0 && base64url_char(text[at - 1]) {
            continue;
        }
        let header = base64url_run(text, at);
        let dot1 = at + header;
        if header < JWT_MIN_HEADER
            || byte(text, dot1) != b'.'
            || !text[dot1 + 1..].starts_with(b"eyJ")
        {
            continue;
        }
        let dot2 = dot1 + 1 + base64url_run(text, dot1 + 1);
        if byte(text, dot2) != b'.' {
            continue;
        }
        let end = dot2 + 1 + base64url_run(text, dot2 + 1);
        hits.push(Hit::new(base + at, base + end, InfoType::JsonWebToken));
        from = end;
    }
}

/// Characters after the 4-letter prefix of an AWS access key id.
const AWS_KEY_ID_TAIL: usize = 16;

/// `AKIA...`/`ASIA...` followed by 16 upper-case letters or digits.
pub(super) fn aws_access_keys(text: &[u8], base: usize, hits: &mut Vec<Hit>) {
    for prefix in [&AKIA, &ASIA] {
        for at in prefix.find_iter(text) {
            if at > 0 && text[at - 1].is_ascii_alphanumeric() {
                continue;
            }
            let end = at + 4 + AWS_KEY_ID_TAIL;
            let Some(tail) = text.get(at + 4..end) else {
                continue;
            };
            let shaped = tail
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if shaped && !byte(text, end).is_ascii_alphanumeric() {
                hits.push(Hit::new(base + at, base + end, InfoType::AwsAccessKey));
            }
        }
    }
}

/// Length of an AWS secret access key.
const AWS_SECRET_LEN: usize = 40;

fn base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// A 40-character base64 word with upper- and lower-case letters and a digit or `+`/`/`,
/// on a line that mentions `aws` or `secret` (`context`, case-insensitive). Hex digests
/// (git SHA-1s are 40 characters too) have a single letter case and never match. Only
/// the lines where `context` matches are read.
pub(super) fn aws_secret_keys(
    text: &[u8],
    base: usize,
    hits: &mut Vec<Hit>,
    context: &aho_corasick::AhoCorasick,
) {
    let mut scanned_to = 0;
    for m in context.find_iter(text) {
        if m.start() < scanned_to {
            continue;
        }
        let line_start = memchr::memrchr(b'\n', &text[..m.start()]).map_or(0, |p| p + 1);
        let line_end = memchr::memchr(b'\n', &text[m.end()..]).map_or(text.len(), |p| m.end() + p);
        aws_secret_keys_in_line(&text[line_start..line_end], base + line_start, hits);
        scanned_to = line_end;
    }
}

fn aws_secret_keys_in_line(line: &[u8], base: usize, hits: &mut Vec<Hit>) {
    let mut i = 0;
    while i < line.len() {
        if !base64_char(line[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < line.len() && base64_char(line[i]) {
            i += 1;
        }
        if i - start != AWS_SECRET_LEN {
            continue;
        }
        let word = &line[start..i];
        let upper = word.iter().any(u8::is_ascii_uppercase);
        let lower = word.iter().any(u8::is_ascii_lowercase);
        let other = word.iter().any(|b| !b.is_ascii_alphabetic());
        if upper && lower && other {
            hits.push(Hit::new(base + start, base + i, InfoType::AwsSecretKey));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(detect: fn(&[u8], usize, &mut Vec<Hit>), text: &str) -> Vec<String> {
        let mut hits = Vec::new();
        detect(text.as_bytes(), 0, &mut hits);
        hits.iter()
            .map(|h| text[h.start..h.end].to_string())
            .collect()
    }

    #[test]
    fn private_key_block_on_one_line_is_found_whole() {
        let text =
            "k=\"-----BEGIN RSA PRIVATE KEY-----\\nMIIE\\n-----END RSA PRIVATE KEY-----\\n\"";
        let mut hits = Vec::new();
        assert_eq!(private_keys(text.as_bytes(), 0, &mut hits), None);
        assert_eq!(
            &text[hits[0].start..hits[0].end],
            "-----BEGIN RSA PRIVATE KEY-----\\nMIIE\\n-----END RSA PRIVATE KEY-----"
        );
    }

    #[test]
    fn private_key_block_without_end_stays_open() {
        let text = "x -----BEGIN OPENSSH PRIVATE KEY-----\n";
        let mut hits = Vec::new();
        assert_eq!(
            private_keys(text.as_bytes(), 0, &mut hits),
            Some(text.len() - 2)
        );
        let mut hits = Vec::new();
        assert_eq!(
            private_keys(b"-----BEGIN CERTIFICATE-----\n", 0, &mut hits),
            None
        );
        assert!(hits.is_empty());
    }

    #[test]
    fn json_web_tokens_need_two_json_parts() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl";
        assert_eq!(found(json_web_tokens, &format!("Bearer {jwt}\n")), [jwt]);
        assert!(found(json_web_tokens, "eyJhbGciOiJIUzI1NiJ9 alone").is_empty());
    }

    fn aws_secret_keys_in(text: &str) -> Vec<String> {
        let context = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(["aws", "secret"])
            .expect("context");
        let mut hits = Vec::new();
        aws_secret_keys(text.as_bytes(), 0, &mut hits, &context);
        hits.iter()
            .map(|h| text[h.start..h.end].to_string())
            .collect()
    }

    #[test]
    fn aws_keys_are_found_and_git_shas_are_not() {
        assert_eq!(
            found(aws_access_keys, "id=AKIAIOSFODNN7EXAMPLE,"),
            ["AKIAIOSFODNN7EXAMPLE"]
        );
        assert!(found(aws_access_keys, "XAKIAIOSFODNN7EXAMPLE AKIA123").is_empty());
        assert_eq!(
            aws_secret_keys_in("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]
        );
        assert!(
            aws_secret_keys_in("secret commit 3f786850e387550fdab836ed7e6dc881de23001b").is_empty()
        );
        assert!(aws_secret_keys_in("aws\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n").is_empty());
        assert_eq!(
            aws_secret_keys_in("x\nSecret: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY aws\ny"),
            ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]
        );
    }
}
