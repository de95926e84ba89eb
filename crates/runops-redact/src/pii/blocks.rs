//! Text classified 64 bytes at a time into bit masks (bit `k` = byte `k` of the block),
//! so that detectors visit only the few bytes that can open a finding instead of
//! branching on every byte. On x86-64 the classification uses SSE2, which every x86-64
//! CPU has; elsewhere a lookup table.

/// Bytes per block: one bit each in a `u64`.
pub(crate) const BLOCK: usize = 64;

/// The classes of the bytes of one block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Masks {
    /// Can open a number-like finding: a digit, an upper-case letter, `+`, `(`.
    pub opens: u64,
    /// A word character: letter, digit, `_`.
    pub word: u64,
    /// The base64 alphabet: letter, digit, `+`, `/`.
    pub base64: u64,
    /// An ASCII digit.
    pub digit: u64,
    /// `:`.
    pub colon: u64,
}

/// One block of a text.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Block {
    /// Offset of the block's first byte in the text.
    pub at: usize,
    pub masks: Masks,
    /// The masks of the next block (empty past the end): runs that continue into it
    /// can be measured without waiting.
    pub next: Masks,
}

/// The blocks of `text`; bytes past its end belong to no class.
pub(crate) fn blocks(text: &[u8]) -> impl Iterator<Item = Block> + '_ {
    let mut next = classify_at(text, 0);
    (0..text.len().div_ceil(BLOCK)).map(move |k| {
        let at = k * BLOCK;
        let masks = next;
        next = classify_at(text, at + BLOCK);
        Block { at, masks, next }
    })
}

fn classify_at(text: &[u8], at: usize) -> Masks {
    match text.get(at..at + BLOCK) {
        Some(full) => {
            let mut block = [0u8; BLOCK];
            block.copy_from_slice(full);
            classify(&block)
        }
        None if at < text.len() => {
            // The last, partial block: zero bytes belong to no class.
            let mut block = [0u8; BLOCK];
            block[..text.len() - at].copy_from_slice(&text[at..]);
            classify(&block)
        }
        None => Masks::default(),
    }
}

/// Classifies the bytes of one block.
pub(crate) fn classify(block: &[u8; BLOCK]) -> Masks {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: `sse2::classify` only needs SSE2, which this build targets (checked by
        // the `cfg` above; it is part of the x86-64 baseline).
        unsafe { sse2::classify(block) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        table::classify(block)
    }
}

/// Bit `k` set when bytes `k` and `k + 1` of `at` (17 bytes read: `k` in 0..16), in
/// either letter case, are the first two letters of a label word (`ph`, `te`, `ce`,
/// `mo`, `ms`, `fa`, `ha`, `ss`, `so`); `None` where SSE2 is missing.
pub(crate) fn label_pairs(at: &[u8]) -> Option<u32> {
    let (Some(a), Some(b)) = (at.get(..16), at.get(1..17)) else {
        return None;
    };
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        let mut first = [0u8; 16];
        let mut second = [0u8; 16];
        first.copy_from_slice(a);
        second.copy_from_slice(b);
        // SAFETY: as in `classify`: this build targets SSE2.
        Some(unsafe { sse2::label_pairs(&first, &second) })
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        let _ = (a, b);
        None
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set_epi64x, _mm_set1_epi8, _mm_sub_epi8,
    };

    use super::{BLOCK, Masks};

    #[target_feature(enable = "sse2")]
    fn load(bytes: &[u8; 16]) -> __m128i {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&bytes[..8]);
        hi.copy_from_slice(&bytes[8..]);
        _mm_set_epi64x(i64::from_le_bytes(hi), i64::from_le_bytes(lo))
    }

    /// Lanes whose byte is in `lo..=hi`.
    #[target_feature(enable = "sse2")]
    fn in_range(v: __m128i, lo: u8, hi: u8) -> __m128i {
        let shifted = _mm_sub_epi8(v, _mm_set1_epi8(lo as i8));
        let span = _mm_set1_epi8((hi - lo) as i8);
        _mm_cmpeq_epi8(_mm_min_epu8(shifted, span), shifted)
    }

    #[target_feature(enable = "sse2")]
    fn is(v: __m128i, b: u8) -> __m128i {
        _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8))
    }

    #[target_feature(enable = "sse2")]
    fn bits(v: __m128i) -> u64 {
        u64::from(_mm_movemask_epi8(v) as u16)
    }

    /// See [`super::label_pairs`]: `first` and `second` are the bytes from `k` and
    /// from `k + 1`.
    #[target_feature(enable = "sse2")]
    pub(super) fn label_pairs(first: &[u8; 16], second: &[u8; 16]) -> u32 {
        let lower = _mm_set1_epi8(0x20);
        let a = _mm_or_si128(load(first), lower);
        let b = _mm_or_si128(load(second), lower);
        let pair = |x: u8, ys: __m128i| _mm_and_si128(is(a, x), ys);
        let e = is(b, b'e');
        let o_s = _mm_or_si128(is(b, b'o'), is(b, b's'));
        let alpha = is(b, b'a');
        let hits = _mm_or_si128(
            _mm_or_si128(
                pair(b'p', is(b, b'h')),
                _mm_or_si128(pair(b't', e), pair(b'c', e)),
            ),
            _mm_or_si128(
                _mm_or_si128(pair(b'm', o_s), pair(b's', o_s)),
                _mm_or_si128(pair(b'f', alpha), pair(b'h', alpha)),
            ),
        );
        _mm_movemask_epi8(hits) as u32 & 0xFFFF
    }

    #[target_feature(enable = "sse2")]
    pub(super) fn classify(block: &[u8; BLOCK]) -> Masks {
        let mut m = Masks::default();
        for (q, lane) in block.chunks_exact(16).enumerate() {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(lane);
            let v = load(&bytes);
            let digit = in_range(v, b'0', b'9');
            let digit_or_upper = _mm_or_si128(digit, in_range(v, b'A', b'Z'));
            let alnum = _mm_or_si128(digit_or_upper, in_range(v, b'a', b'z'));
            let plus = is(v, b'+');
            let opens = _mm_or_si128(digit_or_upper, _mm_or_si128(plus, is(v, b'(')));
            let word = _mm_or_si128(alnum, is(v, b'_'));
            let base64 = _mm_or_si128(alnum, _mm_or_si128(plus, is(v, b'/')));
            let shift = 16 * q;
            m.opens |= bits(opens) << shift;
            m.word |= bits(word) << shift;
            m.base64 |= bits(base64) << shift;
            m.digit |= bits(digit) << shift;
            m.colon |= bits(is(v, b':')) << shift;
        }
        m
    }
}

#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
mod table {
    use super::{BLOCK, Masks};

    const OPENS: u8 = 1;
    const WORD: u8 = 2;
    const BASE64: u8 = 4;
    const DIGIT: u8 = 8;
    const COLON: u8 = 16;

    static CLASS: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            if c.is_ascii_digit() || c.is_ascii_uppercase() || c == b'+' || c == b'(' {
                t[b] |= OPENS;
            }
            if c.is_ascii_alphanumeric() || c == b'_' {
                t[b] |= WORD;
            }
            if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' {
                t[b] |= BASE64;
            }
            if c.is_ascii_digit() {
                t[b] |= DIGIT;
            }
            if c == b':' {
                t[b] |= COLON;
            }
            b += 1;
        }
        t
    };

    pub(super) fn classify(block: &[u8; BLOCK]) -> Masks {
        let mut m = Masks::default();
        for (k, &b) in block.iter().enumerate() {
            let c = CLASS[b as usize];
            m.opens |= u64::from(c & OPENS) << k;
            m.word |= u64::from((c & WORD) >> 1) << k;
            m.base64 |= u64::from((c & BASE64) >> 2) << k;
            m.digit |= u64::from((c & DIGIT) >> 3) << k;
            m.colon |= u64::from((c & COLON) >> 4) << k;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_table_classification_agree_on_every_byte() {
        for first in (0..=255u8).step_by(BLOCK) {
            let mut block = [0u8; BLOCK];
            for (k, b) in block.iter_mut().enumerate() {
                *b = first.wrapping_add(k as u8);
            }
            assert_eq!(classify(&block), table::classify(&block), "from {first}");
        }
        let mut block = [b'x'; BLOCK];
        block[3] = b'7';
        block[40] = b'(';
        block[50] = b':';
        block[63] = b'/';
        let m = classify(&block);
        assert_eq!(m.opens, 1 << 3 | 1 << 40);
        assert_eq!(m.word, !(1u64 << 40 | 1 << 50 | 1 << 63));
        assert_eq!(m.base64, !(1u64 << 40 | 1 << 50));
        assert_eq!(m.digit, 1 << 3);
        assert_eq!(m.colon, 1 << 50);
    }

    #[test]
    fn blocks_cover_the_text_and_see_the_next_block() {
        let mut text = vec![b' '; 150];
        text[64] = b'A';
        text[149] = b'9';
        let all: Vec<Block> = blocks(&text).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].next.base64, 1);
        assert_eq!(all[1].masks.opens, 1);
        assert_eq!(all[2].masks.opens, 1 << (149 - 128));
        assert_eq!(all[2].next, Masks::default());
        assert_eq!(blocks(b"").count(), 0);
    }
}
