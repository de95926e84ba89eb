//! Credentials that have a recognizable shape: private-key blocks, JSON web tokens and
//! AWS access and secret keys.

use super::blocks::{BLOCK, Block};
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

/// A 40-character base64 word with upper- and lower-case letters and a digit or `+`/`/`,
/// on a line that mentions `aws` or `secret` (any case). Hex digests (git SHA-1s are 40
/// characters too) have a single letter case and never match. Fed the text's blocks in
/// order, it finds the words from the base64 masks (runs of exactly 40) and reads the
/// line of a candidate only, once per line.
#[derive(Default)]
pub(super) struct AwsSecretScan {
    /// Whether the last byte of the previous block is a base64 character.
    prev_base64: u64,
    /// The line of the last candidate, `(start, end, mentions the context)`.
    line: Option<(usize, usize, bool)>,
}

impl AwsSecretScan {
    /// [`Self::block`] for consecutive blocks: what the walk needs of `text` is set up
    /// once for all of them instead of once per block.
    #[inline(never)]
    pub(super) fn blocks(
        &mut self,
        text: &[u8],
        blocks: &[Block],
        base: usize,
        hits: &mut Vec<Hit>,
    ) {
        for block in blocks {
            self.block(text, block, base, hits);
        }
    }

    #[inline(always)]
    pub(super) fn block(&mut self, text: &[u8], block: &Block, base: usize, hits: &mut Vec<Hit>) {
        let here = block.masks.base64;
        let run_starts = here & !((here << 1) | self.prev_base64);
        self.prev_base64 = here >> (BLOCK - 1);
        if run_starts == 0 {
            return;
        }
        // Bit i of `long` is set when the 40 bytes from i are all base64; the next
        // block's mask supplies the bytes past this one.
        let both = u128::from(here) | (u128::from(block.next.base64) << BLOCK);
        let r2 = both & (both >> 1);
        let r4 = r2 & (r2 >> 2);
        let r8 = r4 & (r4 >> 4);
        let r16 = r8 & (r8 >> 8);
        let r32 = r16 & (r16 >> 16);
        let long = r32 & (r8 >> 32);
        // Only runs of exactly 40: the byte after them is not base64.
        let exact = (long & !(both >> AWS_SECRET_LEN)) as u64;
        let mut words = run_starts & exact;
        while words != 0 {
            let start = block.at + words.trailing_zeros() as usize;
            words &= words - 1;
            let end = start + AWS_SECRET_LEN;
            let Some(word) = text.get(start..end) else {
                continue;
            };
            let upper = word.iter().any(u8::is_ascii_uppercase);
            let lower = word.iter().any(u8::is_ascii_lowercase);
            let other = word.iter().any(|b| !b.is_ascii_alphabetic());
            if upper && lower && other && self.line_mentions_context(text, start) {
                hits.push(Hit::new(base + start, base + end, InfoType::AwsSecretKey));
            }
        }
    }

    /// Whether the line around `at` mentions `aws` or `secret` (remembered per line).
    fn line_mentions_context(&mut self, text: &[u8], at: usize) -> bool {
        if let Some((start, end, mentions)) = self.line
            && (start..end).contains(&at)
        {
            return mentions;
        }
        let start = memchr::memrchr(b'\n', &text[..at]).map_or(0, |p| p + 1);
        let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |p| at + p);
        let line = &text[start..end];
        let mentions =
            contains_ignoring_case(line, b"aws") || contains_ignoring_case(line, b"secret");
        self.line = Some((start, end, mentions));
        mentions
    }
}

/// Whether `hay` contains `needle` (lower-case ASCII) in any letter case.
fn contains_ignoring_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::super::blocks::blocks;
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
        let mut hits = Vec::new();
        let mut scan = AwsSecretScan::default();
        for block in blocks(text.as_bytes()) {
            scan.block(text.as_bytes(), &block, 0, &mut hits);
        }
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
        assert!(aws_secret_keys_in("AWS wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYZ").is_empty());
    }

    #[test]
    fn aws_secret_keys_are_found_wherever_they_sit_in_the_blocks() {
        let key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for pad in 0..140 {
            let text = format!("{} aWs {key} {}", "-".repeat(pad), ".".repeat(pad % 7));
            assert_eq!(aws_secret_keys_in(&text), [key], "pad {pad}");
            let glued = format!("{}aws={key}9", "-".repeat(pad));
            assert!(aws_secret_keys_in(&glued).is_empty(), "pad {pad}");
        }
    }
}
