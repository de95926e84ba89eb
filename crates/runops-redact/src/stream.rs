//! Streaming: output arrives in chunks of any size and leaves redacted, identical to
//! what redacting it whole would give.
//!
//! Two stages run in order. The secrets stage holds back fewer bytes than the longest
//! secret pattern: only a tail that could still be the start of a match (from the first
//! position where the rest of the input begins some spelling of a secret), so complete
//! lines leave at once. [`StreamRedactor::flush`] releases an incomplete line when the
//! output pauses. The personal
//! data stage works on segments: a line (up to and including `\n`), or, for a line
//! longer than [`LINE_CAP`], its first `LINE_CAP` bytes cut after the last whitespace
//! in the final [`CAP_CUT_SEARCH`] bytes (else at a character boundary). Segment
//! boundaries depend only on the bytes, never on how they were chunked, so one-shot
//! and streamed redaction agree; a finding that straddles a cap cut of an over-long line
//! is missed by both alike. Runs of complete lines are scanned together when that gives
//! the same result (the lines before one where a private-key block may begin): far
//! fewer calls per byte. Input is scanned where it lies: only the held-back tail of the
//! previous push is copied, with just enough new bytes to decide it.

use memchr::{memchr, memrchr, memrchr3};

use crate::pii::{Hit, PiiScanner, PiiState, write_redacted};
use crate::secrets::SecretMatcher;
use crate::{LINE_CAP, Redactor, UTF8_MAX_PARTIAL};

/// How far back from the cap a whitespace is looked for, so a cut rarely splits a token.
pub const CAP_CUT_SEARCH: usize = 1024;

/// The last position at or before `at` that does not split a UTF-8 character (looking
/// back at most 3 bytes; invalid input is cut where asked).
pub(crate) fn char_boundary_at_or_before(buf: &[u8], at: usize) -> usize {
    if at >= buf.len() {
        return buf.len();
    }
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    let mut k = at;
    while k > 0 && at - k < 3 && is_continuation(buf[k]) {
        k -= 1;
    }
    if is_continuation(buf[k]) { at } else { k }
}

/// Length of `buf` without a UTF-8 character left incomplete at its end.
pub(crate) fn complete_chars_len(buf: &[u8]) -> usize {
    let len = buf.len();
    for back in 1..=3.min(len) {
        let b = buf[len - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { len - back } else { len };
    }
    len
}

/// One output stream being redacted.
#[derive(Debug)]
pub struct StreamRedactor {
    redactor: Redactor,
    /// Secrets stage input not yet final.
    secret_tail: Vec<u8>,
    /// Secrets stage output for the personal-data stage (reused between pushes).
    between: Vec<u8>,
    /// Personal-data stage input: the current, incomplete segment.
    line_tail: Vec<u8>,
    pii_state: PiiState,
    hits: Vec<Hit>,
}

impl StreamRedactor {
    pub(crate) fn new(redactor: Redactor) -> StreamRedactor {
        StreamRedactor {
            redactor,
            secret_tail: Vec::new(),
            between: Vec::new(),
            line_tail: Vec::new(),
            pii_state: PiiState::default(),
            hits: Vec::new(),
        }
    }

    /// Adds `input` and appends to `out` everything that can no longer change. What is
    /// appended always ends on a UTF-8 character boundary when the input is UTF-8.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.run(input, false, out);
    }

    /// Ends the stream: appends everything still held back, redacted.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.run(&[], true, out);
    }

    /// Output paused: appends what waits only for the end of its line (the incomplete
    /// line the personal-data stage holds, scanned as if it ended here). What still
    /// stays is the shortest tail that could begin a secret in one of its spellings,
    /// and an incomplete UTF-8 character. A secret is caught whatever the pauses; a
    /// personal-data finding cut by a pause inside its line is seen as two pieces.
    /// Without flushes the output equals the one-shot redaction.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        let Some(pii) = self.redactor.inner.pii.as_ref() else {
            return;
        };
        if self.line_tail.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.line_tail);
        let complete = complete_chars_len(&buf);
        let used = redact_segments(
            pii,
            &mut self.pii_state,
            &mut self.hits,
            &buf[..complete],
            true,
            out,
        );
        self.line_tail = buf[used..].to_vec();
    }

    /// Bytes received but not yet emitted. Never more than
    /// [`Redactor::max_held_back`] between pushes.
    pub fn held_back(&self) -> usize {
        self.secret_tail.len() + self.line_tail.len()
    }

    fn run(&mut self, input: &[u8], at_end: bool, out: &mut Vec<u8>) {
        let inner = self.redactor.inner.clone();
        match (&inner.secrets, &inner.pii) {
            (None, None) if self.secret_tail.is_empty() => {
                // Nothing to find: only hold back an incomplete trailing character, and
                // copy the input once (straight to `out`).
                let done = if at_end {
                    input.len()
                } else {
                    complete_chars_len(input)
                };
                out.extend_from_slice(&input[..done]);
                self.secret_tail.extend_from_slice(&input[done..]);
            }
            (None, None) => {
                // Nothing to find: only hold back an incomplete trailing character.
                let mut tail = std::mem::take(&mut self.secret_tail);
                tail.extend_from_slice(input);
                let done = if at_end {
                    tail.len()
                } else {
                    complete_chars_len(&tail)
                };
                out.extend_from_slice(&tail[..done]);
                tail.drain(..done);
                self.secret_tail = tail;
            }
            (Some(secrets), None) => {
                secrets_stage(secrets, &mut self.secret_tail, input, at_end, out);
            }
            (None, Some(pii)) => {
                self.lines_stage(pii, input, at_end, out);
            }
            (Some(secrets), Some(pii)) => {
                let mut between = std::mem::take(&mut self.between);
                between.clear();
                let clean = secrets_stage_lending(
                    secrets,
                    &mut self.secret_tail,
                    input,
                    at_end,
                    &mut between,
                );
                if clean.is_empty() {
                    self.lines_stage(pii, &between, at_end, out);
                } else {
                    // Two pieces, as if pushed one after the other.
                    if !between.is_empty() {
                        self.lines_stage(pii, &between, false, out);
                    }
                    self.lines_stage(pii, clean, at_end, out);
                }
                self.between = between;
            }
        }
    }

    fn lines_stage(&mut self, pii: &PiiScanner, input: &[u8], at_end: bool, out: &mut Vec<u8>) {
        let mut input = input;
        if !self.line_tail.is_empty() {
            // Complete the pending line with the start of `input` when it ends there, so
            // that the rest of `input` is scanned where it lies instead of being copied.
            let room = LINE_CAP.saturating_sub(self.line_tail.len());
            let Some(nl) = memchr(b'\n', &input[..input.len().min(room)]) else {
                let mut buf = std::mem::take(&mut self.line_tail);
                buf.extend_from_slice(input);
                let used =
                    redact_segments(pii, &mut self.pii_state, &mut self.hits, &buf, at_end, out);
                buf.drain(..used);
                self.line_tail = buf;
                return;
            };
            let mut line = std::mem::take(&mut self.line_tail);
            line.extend_from_slice(&input[..=nl]);
            input = &input[nl + 1..];
            let used =
                redact_segments(pii, &mut self.pii_state, &mut self.hits, &line, at_end, out);
            line.drain(..used);
            self.line_tail = line;
            if !self.line_tail.is_empty() {
                // Not reached (a complete line within the cap is one segment); stay exact.
                self.line_tail.extend_from_slice(input);
                let buf = std::mem::take(&mut self.line_tail);
                let used =
                    redact_segments(pii, &mut self.pii_state, &mut self.hits, &buf, at_end, out);
                self.line_tail = buf[used..].to_vec();
                return;
            }
        }
        let used = redact_segments(pii, &mut self.pii_state, &mut self.hits, input, at_end, out);
        self.line_tail.extend_from_slice(&input[used..]);
    }
}

fn secrets_stage(
    secrets: &SecretMatcher,
    tail: &mut Vec<u8>,
    input: &[u8],
    at_end: bool,
    out: &mut Vec<u8>,
) {
    let mut input = input;
    if !tail.is_empty() {
        // Decide the held-back tail with just enough of `input` after it (every position
        // of the tail then has its longest possible match in view), and go on with the
        // rest of `input` where it lies instead of copying it behind the tail.
        let enough = secrets.longest() + UTF8_MAX_PARTIAL + 1;
        if input.len() <= enough || at_end {
            tail.extend_from_slice(input);
            let used = secrets.redact(tail, at_end, out);
            tail.drain(..used);
            return;
        }
        let held = tail.len();
        tail.extend_from_slice(&input[..enough]);
        let used = secrets.redact(tail, false, out);
        if used < held {
            // Not reached (`enough` makes the whole tail final); stay exact.
            tail.extend_from_slice(&input[enough..]);
            let used = secrets.redact(tail, at_end, out);
            tail.drain(..used);
            return;
        }
        tail.clear();
        input = &input[used - held..];
    }
    let used = secrets.redact(input, at_end, out);
    tail.extend_from_slice(&input[used..]);
}

/// [`secrets_stage`] for a next stage that takes its input in pieces: a final part of
/// `input` without a secret is returned instead of being copied behind `out` (the
/// stage's output is `out`, then it). Most output holds no secret, and copying it
/// costs as much as a detector.
fn secrets_stage_lending<'a>(
    secrets: &SecretMatcher,
    tail: &mut Vec<u8>,
    input: &'a [u8],
    at_end: bool,
    out: &mut Vec<u8>,
) -> &'a [u8] {
    let mut input = input;
    if !tail.is_empty() {
        // As in `secrets_stage`: the held-back tail is decided with just enough input.
        let enough = secrets.longest() + UTF8_MAX_PARTIAL + 1;
        if input.len() <= enough || at_end {
            tail.extend_from_slice(input);
            let used = secrets.redact(tail, at_end, out);
            tail.drain(..used);
            return &[];
        }
        let held = tail.len();
        tail.extend_from_slice(&input[..enough]);
        let used = secrets.redact(tail, false, out);
        if used < held {
            // Not reached (`enough` makes the whole tail final); stay exact.
            tail.extend_from_slice(&input[enough..]);
            let used = secrets.redact(tail, at_end, out);
            tail.drain(..used);
            return &[];
        }
        tail.clear();
        input = &input[used - held..];
    }
    match secrets.final_if_clean(input, at_end) {
        Ok(used) => {
            tail.extend_from_slice(&input[used..]);
            &input[..used]
        }
        Err(pending) => {
            let used = secrets.redact_pending(input, pending, out);
            tail.extend_from_slice(&input[used..]);
            &[]
        }
    }
}

/// Redacts every complete segment of `buf` and returns the bytes consumed.
fn redact_segments(
    pii: &PiiScanner,
    state: &mut PiiState,
    hits: &mut Vec<Hit>,
    buf: &[u8],
    at_end: bool,
    out: &mut Vec<u8>,
) -> usize {
    for_each_piece(pii, state, hits, buf, at_end, |_, piece, hits| {
        write_redacted(piece, hits, out);
    })
}

/// Splits `buf` into segments, scans them and hands each scanned piece (its offset in
/// `buf`, its bytes, its hits) to `emit`; returns the bytes consumed. Runs of complete
/// lines that fit in one segment's cap are scanned together when that cannot change
/// the result ([`PiiScanner::independent_lines`]): far fewer calls per byte.
fn for_each_piece(
    pii: &PiiScanner,
    state: &mut PiiState,
    hits: &mut Vec<Hit>,
    buf: &[u8],
    at_end: bool,
    mut emit: impl FnMut(usize, &[u8], &[Hit]),
) -> usize {
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if !state.key_block_open()
            && let Some(last_nl) = memrchr(b'\n', &rest[..rest.len().min(LINE_CAP)])
        {
            let batch = pii.independent_lines(&rest[..=last_nl], state);
            if batch > 0 {
                let lines = &rest[..batch];
                pii.scan_lines(lines, state, hits);
                emit(pos, lines, hits);
                pos += batch;
                continue;
            }
        }
        let Some(len) = segment_len(rest, at_end) else {
            break;
        };
        let seg = &rest[..len];
        pii.scan_segment(seg, state, hits);
        emit(pos, seg, hits);
        pos += len;
    }
    pos
}

/// Length of the segment `rest` starts with, or `None` when more input could change it.
pub(crate) fn segment_len(rest: &[u8], at_end: bool) -> Option<usize> {
    if let Some(nl) = memchr(b'\n', &rest[..rest.len().min(LINE_CAP)]) {
        return Some(nl + 1);
    }
    // Deciding a cut needs the byte after the cap (is it a continuation byte?).
    if rest.len() > LINE_CAP {
        let search = LINE_CAP - CAP_CUT_SEARCH;
        if let Some(ws) = memrchr3(b' ', b'\t', b'\r', &rest[search..LINE_CAP]) {
            return Some(search + ws + 1);
        }
        let cut = char_boundary_at_or_before(rest, LINE_CAP);
        return Some(if cut == 0 { LINE_CAP } else { cut });
    }
    (at_end && !rest.is_empty()).then_some(rest.len())
}

/// Personal-data findings of `text` as the stream would see them (same segments).
pub(crate) fn find_in(pii: &PiiScanner, text: &[u8]) -> Vec<crate::Finding> {
    let mut findings: Vec<crate::Finding> = Vec::new();
    let mut state = PiiState::default();
    let mut hits = Vec::new();
    for_each_piece(pii, &mut state, &mut hits, text, true, |pos, _, hits| {
        for h in hits {
            let (start, end) = (pos + h.start, pos + h.end);
            match findings.last_mut() {
                // The continuation of a private-key block extends the finding.
                Some(last) if h.silent && last.end == start => last.end = end,
                _ => findings.push(crate::Finding {
                    start,
                    end,
                    info_type: h.info_type,
                }),
            }
        }
    });
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_boundary_never_splits_a_character() {
        let s = "aé€😀".as_bytes();
        for at in 0..=s.len() {
            let b = char_boundary_at_or_before(s, at);
            assert!(b <= at && std::str::from_utf8(&s[..b]).is_ok(), "at {at}");
        }
    }

    #[test]
    fn incomplete_trailing_characters_are_held() {
        let s = "a€".as_bytes();
        assert_eq!(complete_chars_len(s), s.len());
        assert_eq!(complete_chars_len(&s[..2]), 1);
        assert_eq!(complete_chars_len(&s[..3]), 1);
        assert_eq!(complete_chars_len(b"\xff\xff"), 2);
    }

    #[test]
    fn segments_are_lines_or_capped_runs() {
        assert_eq!(segment_len(b"ab\ncd", false), Some(3));
        assert_eq!(segment_len(b"abcd", false), None);
        assert_eq!(segment_len(b"abcd", true), Some(4));
        let long = vec![b'x'; LINE_CAP + 1];
        assert_eq!(segment_len(&long, false), Some(LINE_CAP));
        let mut spaced = vec![b'x'; LINE_CAP + 1];
        spaced[LINE_CAP - 10] = b' ';
        assert_eq!(segment_len(&spaced, false), Some(LINE_CAP - 9));
    }
}
