//! Secret values: every form of every value of the task's secrets, found in one
//! leftmost-longest pass and replaced with `[REDACTED:KEY_NAME]`.
//!
//! A match can only start where some pattern's first `window` bytes occur. A bitset of
//! the `gram_len`-byte grams those prefixes contain is probed once every `stride`
//! bytes; only positions next to a probe that hits are checked exactly, with an
//! anchored Aho-Corasick search that returns the longest pattern starting there. Trying
//! positions left to right and jumping past each match is exactly leftmost-longest.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, Anchored, Input, Match, MatchKind, StartKind};

use crate::encodings::{secret_forms, wrapped_base64_forms};
use crate::{MAX_PATTERN_LEN, MIN_SECRET_LEN, MIN_SECRET_LEN_SECRET_KEY, key_looks_secret};

/// Bits of the gram hash: a 2^20-bit (128 KiB) filter keeps random hits rare with
/// thousands of patterns.
const FILTER_BITS: u32 = 20;

/// 64-bit words in one filter.
const FILTER_WORDS: usize = 1 << (FILTER_BITS - 6);

/// A gram filter; fixed-size so probes need no bounds checks.
type Filter = Box<[u64; FILTER_WORDS]>;

/// Longest prefix of each pattern the filter indexes: longer windows skip more bytes per
/// probe but fill the filter faster.
const MAX_WINDOW: usize = 16;

/// Bytes per gram: four bytes keep chance hits on ordinary text rare.
const MAX_GRAM_LEN: usize = 4;

/// The compiled secret patterns of one task.
pub(crate) struct SecretMatcher {
    ac: AhoCorasick,
    /// `[REDACTED:KEY]` for each pattern, by pattern index.
    replacements: Vec<Box<[u8]>>,
    /// Longest pattern in bytes: a stream holds back at most this minus one.
    longest: usize,
    /// Shortest pattern, capped at [`MAX_WINDOW`].
    window: usize,
    gram_len: usize,
    stride: usize,
    /// Grams found anywhere in the first `window` bytes of a pattern.
    window_grams: Filter,
    /// Grams a pattern starts with.
    first_grams: Filter,
    /// Every pattern, sorted: the ones a text is a prefix of form one run from the
    /// first pattern not below the text.
    sorted: Vec<Box<[u8]>>,
    /// Bytes some pattern starts with.
    first_bytes: [bool; 256],
}

impl std::fmt::Debug for SecretMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretMatcher")
            .field("patterns", &self.replacements.len())
            .field("longest", &self.longest)
            .field("window", &self.window)
            .finish()
    }
}

impl SecretMatcher {
    /// Compiles the forms of every value long enough to be redacted; `None` when there
    /// is nothing to look for.
    pub(crate) fn new(secrets: &[(String, String)]) -> Option<SecretMatcher> {
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut replacements: Vec<Box<[u8]>> = Vec::new();
        for (key, value) in secrets {
            let min = if key_looks_secret(key) {
                MIN_SECRET_LEN_SECRET_KEY
            } else {
                MIN_SECRET_LEN
            };
            let marker = format!("[REDACTED:{key}]");
            let mut add = |form: &[u8], replacement: &str| {
                for piece in split_long(form) {
                    // Two keys with the same value: the first one names it.
                    if index.contains_key(piece) {
                        continue;
                    }
                    index.insert(piece.to_vec(), patterns.len());
                    patterns.push(piece.to_vec());
                    replacements.push(replacement.as_bytes().into());
                }
            };
            for form in secret_forms(value, min) {
                add(&form, &marker);
            }
            // Wrapped base64 keeps its line breaks, so the output keeps its lines.
            for (form, breaks) in wrapped_base64_forms(value, min) {
                add(&form, &format!("{marker}{}", "\n".repeat(breaks)));
            }
        }
        if patterns.is_empty() {
            return None;
        }
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(1);
        let shortest = patterns.iter().map(Vec::len).min().unwrap_or(1);
        let window = shortest.min(MAX_WINDOW);
        let gram_len = window.min(MAX_GRAM_LEN);
        let stride = window - gram_len + 1;
        let mut window_grams = empty_filter();
        let mut first_grams = empty_filter();
        for p in &patterns {
            set_bit(&mut first_grams, gram_hash(p, 0, gram_len));
            for offset in 0..stride {
                set_bit(&mut window_grams, gram_hash(p, offset, gram_len));
            }
        }
        let mut first_bytes = [false; 256];
        for p in &patterns {
            first_bytes[usize::from(p[0])] = true;
        }
        let mut sorted: Vec<Box<[u8]>> = patterns.iter().map(|p| p.as_slice().into()).collect();
        sorted.sort_unstable();
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(StartKind::Anchored)
            .build(&patterns)
            .ok()?;
        Some(SecretMatcher {
            ac,
            replacements,
            longest,
            window,
            gram_len,
            stride,
            window_grams,
            first_grams,
            sorted,
            first_bytes,
        })
    }

    /// True when `text` is the start of some pattern (or a whole one): more input could
    /// make a match start where `text` starts.
    fn is_pattern_start(&self, text: &[u8]) -> bool {
        if !text
            .first()
            .is_some_and(|&b| self.first_bytes[usize::from(b)])
        {
            return false;
        }
        let at = self.sorted.partition_point(|p| &p[..] < text);
        self.sorted.get(at).is_some_and(|p| p.starts_with(text))
    }

    /// Where the undecided tail of `hay` begins: the first position from which the rest
    /// of `hay` could still grow into a match (`hay.len()` when none). Every position
    /// before it has all the patterns that could start there in view.
    fn undecided_from(&self, hay: &[u8]) -> usize {
        let len = hay.len();
        let from = len.saturating_sub(self.longest.saturating_sub(1));
        (from..len)
            .find(|&i| self.is_pattern_start(&hay[i..]))
            .unwrap_or(len)
    }

    /// Longest pattern in bytes.
    pub(crate) fn longest(&self) -> usize {
        self.longest
    }

    /// Number of literal patterns (all forms of all values).
    pub(crate) fn pattern_count(&self) -> usize {
        self.replacements.len()
    }

    /// Redacts `hay` into `out` as far as it is final and returns how many bytes of
    /// `hay` were consumed. Unless `at_end`, the tail from the first position where the
    /// rest of `hay` is the start of a pattern is not final (nor an incomplete UTF-8
    /// character); it must be offered again with more input after it.
    pub(crate) fn redact(&self, hay: &[u8], at_end: bool, out: &mut Vec<u8>) -> usize {
        let limit = self.final_len(hay, at_end);
        let first = self.next_match(hay, limit, 0);
        self.redact_final(hay, limit, first, out)
    }

    /// How much of `hay` is final when it holds no match: `Ok(len)`, and `redact` would
    /// emit `hay[..len]` unchanged (the caller can use it where it lies instead of
    /// copying it). `Err` with the state to go on from when there is a match.
    pub(crate) fn final_if_clean(&self, hay: &[u8], at_end: bool) -> Result<usize, Pending> {
        let limit = self.final_len(hay, at_end);
        match self.next_match(hay, limit, 0) {
            None => Ok(limit),
            Some(first) => Err(Pending { limit, first }),
        }
    }

    /// [`SecretMatcher::redact`] once [`SecretMatcher::final_if_clean`] found a match.
    pub(crate) fn redact_pending(&self, hay: &[u8], pending: Pending, out: &mut Vec<u8>) -> usize {
        self.redact_final(hay, pending.limit, Some(pending.first), out)
    }

    /// The final part of `hay`: up to the undecided tail, never ending inside a
    /// character (unless `at_end`).
    fn final_len(&self, hay: &[u8], at_end: bool) -> usize {
        if at_end {
            return hay.len();
        }
        // Only a tail that could still begin a match waits for more input: the rest is
        // final now, so output is not held back longer than a secret could need.
        let limit = self.undecided_from(hay);
        // Never end inside a character, also when nothing else is held back.
        let limit = limit.min(crate::stream::complete_chars_len(hay));
        crate::stream::char_boundary_at_or_before(hay, limit)
    }

    /// Redacts `hay[..limit]` (and matches that begin there) given its first match;
    /// returns the bytes consumed.
    fn redact_final(
        &self,
        hay: &[u8],
        limit: usize,
        first: Option<Match>,
        out: &mut Vec<u8>,
    ) -> usize {
        let mut emitted = 0;
        let mut next = first;
        while let Some(m) = next {
            out.extend_from_slice(&hay[emitted..m.start()]);
            out.extend_from_slice(&self.replacements[m.pattern().as_usize()]);
            emitted = m.end();
            next = self.next_match(hay, limit, m.end());
        }
        let done = limit.max(emitted);
        out.extend_from_slice(&hay[emitted..done]);
        done
    }

    /// The first match from `pos` on that begins before `limit`.
    fn next_match(&self, hay: &[u8], limit: usize, pos: usize) -> Option<Match> {
        let len = hay.len();
        // No pattern fits in the last `window - 1` bytes.
        let search_end = limit.min((len + 1).saturating_sub(self.window));
        let reach = self.window - self.gram_len;
        // The probe at `j` vouches for starts in `[j - reach, j]`.
        let mut j = pos + reach;
        while j < search_end + reach {
            if get_bit(&self.window_grams, gram_hash(hay, j, self.gram_len)) {
                let lo = j - reach;
                let hi = j.min(search_end - 1);
                for start in lo.max(pos)..=hi {
                    if !get_bit(&self.first_grams, gram_hash(hay, start, self.gram_len)) {
                        continue;
                    }
                    let input = Input::new(hay).span(start..len).anchored(Anchored::Yes);
                    if let Some(m) = self.ac.find(input) {
                        return Some(m);
                    }
                }
            }
            j += self.stride;
        }
        None
    }
}

/// Where [`SecretMatcher::final_if_clean`] stopped: the final length and the first
/// match.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    limit: usize,
    first: Match,
}

/// Splits a form longer than [`MAX_PATTERN_LEN`] into pieces (at character
/// boundaries): every piece of an occurrence is then replaced, and streams never hold
/// back more than one piece.
fn split_long(form: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut rest = form;
    while rest.len() > MAX_PATTERN_LEN {
        let cut = crate::stream::char_boundary_at_or_before(rest, MAX_PATTERN_LEN);
        let cut = if cut == 0 { MAX_PATTERN_LEN } else { cut };
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

/// Hash of the `len` (at most 4) bytes at `at`, as a filter bit index.
#[inline(always)]
fn gram_hash(hay: &[u8], at: usize, len: usize) -> usize {
    let gram = if len == 4 {
        match hay.get(at..at + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        }
    } else {
        let mut g = 0u32;
        for i in 0..len {
            g |= u32::from(hay.get(at + i).copied().unwrap_or(0)) << (8 * i);
        }
        g
    };
    (gram.wrapping_mul(0x9E37_79B1) >> (32 - FILTER_BITS)) as usize
}

fn empty_filter() -> Filter {
    Box::new([0u64; FILTER_WORDS])
}

#[inline(always)]
fn set_bit(bits: &mut [u64; FILTER_WORDS], h: usize) {
    bits[(h >> 6) % FILTER_WORDS] |= 1 << (h & 63);
}

#[inline(always)]
fn get_bit(bits: &[u64; FILTER_WORDS], h: usize) -> bool {
    bits[(h >> 6) % FILTER_WORDS] & (1 << (h & 63)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(secrets: &[(&str, &str)]) -> SecretMatcher {
        let secrets: Vec<(String, String)> = secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SecretMatcher::new(&secrets).expect("patterns")
    }

    fn redact_all(m: &SecretMatcher, text: &str) -> String {
        let mut out = Vec::new();
        let done = m.redact(text.as_bytes(), true, &mut out);
        assert_eq!(done, text.len());
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn leftmost_longest_prefers_the_longer_value_at_the_same_start() {
        let m = matcher(&[("A", "abcdef"), ("B", "abcdefgh"), ("C", "cdefghij")]);
        assert_eq!(redact_all(&m, "xabcdefghij"), "x[REDACTED:B]ij");
        assert_eq!(redact_all(&m, "xabcdefg"), "x[REDACTED:A]g");
    }

    #[test]
    fn matches_at_the_very_start_and_end_are_found() {
        let m = matcher(&[("TOKEN", "abc123xyz")]);
        assert_eq!(
            redact_all(&m, "abc123xyz abc123xyz"),
            "[REDACTED:TOKEN] [REDACTED:TOKEN]"
        );
    }

    #[test]
    fn short_secret_key_values_are_found_with_a_small_window() {
        let m = matcher(&[("DB_PASS", "q7z"), ("NAME", "longer-value")]);
        assert_eq!(m.window, 3);
        assert_eq!(
            redact_all(&m, "q7z+longer-value+q7"),
            "[REDACTED:DB_PASS]+[REDACTED:NAME]+q7"
        );
    }

    #[test]
    fn very_long_values_are_split_into_bounded_pieces() {
        let value = "x".repeat(MAX_PATTERN_LEN * 2 + 10);
        let m = matcher(&[("CERT", &value)]);
        assert!(m.longest() <= MAX_PATTERN_LEN);
        let out = redact_all(&m, &format!("<{value}>"));
        assert!(!out.contains("xxxxxxxxxxxx"), "{out}");
    }
}
