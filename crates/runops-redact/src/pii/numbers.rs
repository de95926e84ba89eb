//! Numbers that identify people or accounts: phone numbers, card numbers, US social
//! security numbers, IBANs and IPv4 addresses.
//!
//! One pass over the text's classified blocks looks only at word starts that can open
//! one of them (a digit, `+`, `(`, an upper-case letter); the shape of the digit run there (its length and the byte after
//! it) decides which validators to try. Each validator checks the layout, the number
//! ranges or checksum, and that the candidate is not glued to a longer word or number.

use super::blocks::{BLOCK, Block, Masks};
use super::class::{byte, digits_at, is_word};
use super::phones::{
    Label, MAX_NATIONAL_DIGITS, PhoneRegions, key_label_before, national_ruled_out_before,
    phone_national, phone_plus,
};
use super::{Hit, InfoType, PiiScanner};

/// The number detectors' walk over a text: fed its [`Block`]s in order, it visits only
/// the word starts that can open a finding (a digit, `+`, `(`, an upper-case letter).
pub(super) struct NumberScan<'a> {
    regions: &'a PhoneRegions,
    phone: bool,
    card: bool,
    ssn: bool,
    iban: bool,
    ip: bool,
    /// Word starts before this are inside an earlier finding.
    skip_to: usize,
    /// Whether the last byte of the previous block is a word character.
    prev_word: u64,
    /// The readings of digit runs ([`RUN_ACTIONS`]) the enabled types need.
    actions: u8,
}

impl<'a> NumberScan<'a> {
    /// `None` when no number detector is enabled.
    pub(super) fn new(scanner: &'a PiiScanner) -> Option<NumberScan<'a>> {
        let scan = NumberScan {
            regions: &scanner.phone_regions,
            phone: scanner.on(InfoType::PhoneNumber),
            card: scanner.on(InfoType::CreditCardNumber),
            ssn: scanner.on(InfoType::UsSocialSecurityNumber),
            iban: scanner.on(InfoType::IbanCode),
            ip: scanner.on(InfoType::IpAddress),
            skip_to: 0,
            prev_word: 0,
            actions: OPENS | OPENS_IF_ONE,
        };
        let scan = NumberScan {
            actions: scan.actions
                | if scan.phone { NATIONAL } else { 0 }
                | if scan.phone || scan.ssn { KEYED } else { 0 },
            ..scan
        };
        (scan.phone || scan.card || scan.ssn || scan.iban || scan.ip).then_some(scan)
    }

    /// Looks at the word starts of `block` (the next block of `text`).
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
        let Masks { opens, word, .. } = block.masks;
        let mut starts = opens & !((word << 1) | self.prev_word);
        self.prev_word = word >> (BLOCK - 1);
        // Digit runs are measured on the masks, into the next block if need be.
        let digits = u128::from(block.masks.digit) | (u128::from(block.next.digit) << BLOCK);
        while starts != 0 {
            let bit = starts.trailing_zeros() as usize;
            let i = block.at + bit;
            starts &= starts - 1;
            if i < self.skip_to {
                continue;
            }
            let found = match text[i] {
                b'0'..=b'9' => {
                    let len = run_at(digits, bit, text, i);
                    let next = byte(text, i + len);
                    // What the run can open, by its length and the byte after it: most
                    // (`12:34`, `10234`, `03-01`) open nothing and cost one lookup.
                    let mut act = RUN_ACTIONS[len.min(RUN_ACTIONS.len() - 1)]
                        [usize::from(NEXT_CLASS[usize::from(next)])]
                        & self.actions;
                    if act & NATIONAL != 0 && national_ruled_out_before(text, i) {
                        act &= !NATIONAL;
                    }
                    if act & KEYED != 0
                        && !matches!(
                            byte(text, i.wrapping_sub(1)),
                            b'"' | b'\'' | b' ' | b'\t' | b'=' | b':'
                        )
                    {
                        act &= !KEYED;
                    }
                    if act == 0 {
                        continue;
                    }
                    self.digit_run_at(text, i, len, next, act, digits, bit)
                }
                b'+' if self.phone => phone_international(text, i)
                    .or_else(|| {
                        (b'1'..=b'9')
                            .contains(&byte(text, i + 1))
                            .then(|| phone_plus(text, i))
                            .flatten()
                    })
                    .map(|e| (e, InfoType::PhoneNumber)),
                b'(' if self.phone && byte(text, i + 1) == b'+' => {
                    phone_plus(text, i + 1).map(|e| (e, InfoType::PhoneNumber))
                }
                b'(' if self.phone => phone_nanp_parenthesized(text, i)
                    .or_else(|| {
                        // `(0151) 1234567`, `(11) 2110-7975`: a parenthesized group and
                        // a digit right after it or after one space or dash.
                        let d = digits_at(text, i + 1);
                        let close = i + 1 + d;
                        let after = match byte(text, close + 1) {
                            b' ' | b'-' => byte(text, close + 2),
                            b => b,
                        };
                        ((1..=5).contains(&d)
                            && byte(text, close) == b')'
                            && after.is_ascii_digit())
                        .then(|| phone_national(text, i, self.regions, false))
                        .flatten()
                    })
                    .map(|e| (e, InfoType::PhoneNumber)),
                b'A'..=b'Z' if self.iban => iban_code(text, i).map(|e| (e, InfoType::IbanCode)),
                _ => None,
            };
            if let Some((end, info_type)) = found {
                hits.push(Hit::new(base + i, base + end, info_type));
                self.skip_to = end;
            }
        }
    }
}

impl NumberScan<'_> {
    /// Dispatches on the digit run of `len` digits at `i` (a word start, bit `bit` of
    /// `digits`, the digit mask of its block and the next), followed by `next`, for the
    /// readings `act` ([`RUN_ACTIONS`]): the shapes of fixed layouts first, then
    /// national phone formats and keyed identifiers.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn digit_run_at(
        &self,
        text: &[u8],
        i: usize,
        len: usize,
        next: u8,
        act: u8,
        digits: u128,
        bit: usize,
    ) -> Option<(usize, InfoType)> {
        let opens = act & OPENS != 0 || (act & OPENS_IF_ONE != 0 && text[i] == b'1');
        if opens && let Some(found) = self.fixed_layout_at(text, i, len, next, digits, bit) {
            return Some(found);
        }
        if act & NATIONAL != 0 {
            // `national_ruled_out_before` was checked by the caller.
            return may_be_national(text, i, len, next, digits, bit)
                .then(|| phone_national(text, i, self.regions, false))
                .flatten()
                .map(|e| (e, InfoType::PhoneNumber));
        }
        let keyed = act & KEYED != 0;
        if keyed {
            match key_label_before(text, i)? {
                Label::Ssn if self.ssn && len == 9 => {
                    let end = i + len;
                    let d = &text[i..end];
                    let valid = &d[..3] != b"000"
                        && &d[..3] != b"666"
                        && d[0] != b'9'
                        && &d[3..5] != b"00"
                        && &d[5..] != b"0000";
                    (valid && ends_cleanly(text, end))
                        .then_some((end, InfoType::UsSocialSecurityNumber))
                }
                Label::Phone if self.phone => {
                    let end = i + len;
                    let d = &text[i..end];
                    let nanp = (len == 10 && nanp_valid(d[0], d[3]))
                        || (len == 11 && d[0] == b'1' && nanp_valid(d[1], d[4]));
                    if nanp && ends_cleanly(text, end) {
                        return Some((end, InfoType::PhoneNumber));
                    }
                    phone_national(text, i, self.regions, true).map(|e| (e, InfoType::PhoneNumber))
                }
                _ => None,
            }
        } else {
            None
        }
    }

    /// Cards, SSNs, North American phones and IPv4 addresses at a digit run.
    /// Called for the runs whose length and next byte `next` can open one of them.
    fn fixed_layout_at(
        &self,
        text: &[u8],
        i: usize,
        len: usize,
        next: u8,
        digits: u128,
        bit: usize,
    ) -> Option<(usize, InfoType)> {
        let NumberScan {
            phone,
            card,
            ssn,
            ip,
            ..
        } = *self;
        // `2024-03-01-415...`, `1.2.3.4.5`: the middle of a longer dotted or dashed number.
        if i >= 2 && matches!(text[i - 1], b'.' | b'-') && text[i - 2].is_ascii_digit() {
            return None;
        }
        if card && (13..=19).contains(&len) && !is_word(next) && !continues_number(text, i + len) {
            if card_number_valid(&text[i..i + len]) {
                return Some((i + len, InfoType::CreditCardNumber));
            }
            return None;
        }
        if card
            && len == 4
            && matches!(next, b' ' | b'-')
            && let Some(end) = card_grouped(text, i)
        {
            return Some((end, InfoType::CreditCardNumber));
        }
        if len == 3 && matches!(next, b'-' | b' ') {
            if ssn && let Some(end) = us_social_security_number(text, i) {
                return Some((end, InfoType::UsSocialSecurityNumber));
            }
            if phone && let Some(end) = phone_nanp(text, i) {
                return Some((end, InfoType::PhoneNumber));
            }
        }
        if len <= 3 && next == b'.' {
            // The second octet, read on the mask, drops most (`12:34:56.789`, `1.5s`).
            let second = run_at(digits, bit + len + 1, text, i + len + 1);
            if ip
                && (1..=3).contains(&second)
                && byte(text, i + len + 1 + second) == b'.'
                && let Some(end) = ipv4_address(text, i)
            {
                return Some((end, InfoType::IpAddress));
            }
            if phone
                && len == 3
                && let Some(end) = phone_nanp(text, i)
            {
                return Some((end, InfoType::PhoneNumber));
            }
        }
        // `1-415-555-0132`, `1 (415) 555-0132`: the NANP country code before the number.
        if phone && len == 1 && text[i] == b'1' && matches!(next, b' ' | b'-' | b'.') {
            let after = i + 2;
            let end = if byte(text, after) == b'(' {
                phone_nanp_parenthesized(text, after)
            } else if digits_at(text, after) == 3 {
                phone_nanp(text, after)
            } else {
                None
            };
            if let Some(end) = end {
                return Some((end, InfoType::PhoneNumber));
            }
        }
        None
    }
}

/// A cheap look at the group after the first before the full reading: there is one,
/// the two have enough digits or a third follows, and they are not the start of a date
/// (`2024-03-`, `01.03.`).
/// `digits` and `bit` locate `i` in the digit mask, which measures the groups.
#[inline]
fn may_be_national(text: &[u8], i: usize, len: usize, sep: u8, digits: u128, bit: usize) -> bool {
    let mut j = i + len + 1;
    let mut jb = bit + len + 1;
    if sep == b'/' && byte(text, j) == b' ' {
        j += 1;
        jb += 1;
    }
    let second = run_at(digits, jb, text, j);
    if second == 0 {
        return byte(text, j) == b'(';
    }
    // No national format has a one-digit second group, or a one-digit first group
    // before a short one; dotted numbers have groups of two digits or more (`1.5`,
    // `8.0.36`, `127.0.0.1` stop here).
    if second < 2 || (len == 1 && second < 3) || (sep == b'.' && len < 2) {
        return false;
    }
    let after = byte(text, j + second);
    let third = matches!(after, b' ' | b'-' | b'.' | b'/' | b'(')
        && matches!(byte(text, j + second + 1), b'0'..=b'9' | b'(' | b' ');
    if len + second < 7 && !third {
        return false;
    }
    let dated = sep != b' '
        && second == 2
        && ((len == 4 && matches!(&text[i..i + 2], b"19" | b"20"))
            || (len == 2 && after == sep && run_at(digits, jb + 3, text, j + 3) == 4));
    !dated
}

/// Digits of the run at `i` (bit `bit` of `digits`, the digit mask from the start of
/// `i`'s block): read on the mask, or in the text when the run reaches the mask's end.
#[inline(always)]
fn run_at(digits: u128, bit: usize, text: &[u8], i: usize) -> usize {
    // On the two halves: 128-bit shifts cost several instructions each.
    let (lo, hi) = (digits as u64, (digits >> BLOCK) as u64);
    if bit < BLOCK {
        let run = (!(lo >> bit)).trailing_zeros() as usize;
        if run < BLOCK - bit {
            return run;
        }
        let more = (!hi).trailing_zeros() as usize;
        if more < BLOCK {
            return run + more;
        }
    } else if bit < 2 * BLOCK {
        let run = (!(hi >> (bit - BLOCK))).trailing_zeros() as usize;
        if run < 2 * BLOCK - bit {
            return run;
        }
    }
    digits_at(text, i)
}

/// Classes of the byte after a digit run, for [`RUN_ACTIONS`].
const NEXT_DOT: u8 = 0;
const NEXT_DASH: u8 = 1;
const NEXT_SPACE: u8 = 2;
const NEXT_SLASH: u8 = 3;
const NEXT_OTHER: u8 = 4;
const NEXT_WORD: u8 = 5;

static NEXT_CLASS: [u8; 256] = {
    let mut t = [NEXT_OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' {
            t[b] = NEXT_WORD;
        }
        b += 1;
    }
    t[b'.' as usize] = NEXT_DOT;
    t[b'-' as usize] = NEXT_DASH;
    t[b' ' as usize] = NEXT_SPACE;
    t[b'/' as usize] = NEXT_SLASH;
    t
};

/// Readings of a digit run (bits of [`RUN_ACTIONS`]): a fixed layout (card, SSN, North
/// American phone, IPv4); the same when the run is the digit `1` (`1-415-555-0132`); a
/// national phone format; a bare run under a key that names it.
const OPENS: u8 = 1;
const OPENS_IF_ONE: u8 = 2;
const NATIONAL: u8 = 4;
const KEYED: u8 = 8;

/// By the length of a digit run (the last entry: longer) and the class of the byte after
/// it ([`NEXT_CLASS`]), the readings that may find something: fixed layouts of 1 to 4
/// digits before `.`, `-` or a space and card numbers of 13 to 19 digits; national
/// formats (up to 6 digits before a space, `-`, `.` or `/`); keyed runs of 7 to
/// [`MAX_NATIONAL_DIGITS`] digits before a byte that ends a word.
static RUN_ACTIONS: [[u8; 6]; 21] = {
    let mut t = [[0u8; 6]; 21];
    let mut len = 1;
    while len < 21 {
        let mut class = 0;
        while class < 6 {
            let c = class as u8;
            let mut act = match (len, c) {
                (1, NEXT_DOT) | (2, NEXT_DOT) | (3, NEXT_DOT | NEXT_DASH | NEXT_SPACE) => OPENS,
                (1, NEXT_DASH | NEXT_SPACE) => OPENS_IF_ONE,
                (4, NEXT_DASH | NEXT_SPACE) | (13..=19, _) => OPENS,
                _ => 0,
            };
            if len <= 6 && c <= NEXT_SLASH {
                act |= NATIONAL;
            }
            if len >= 7 && len <= MAX_NATIONAL_DIGITS && c != NEXT_WORD {
                act |= KEYED;
            }
            t[len][class] = act;
            class += 1;
        }
        len += 1;
    }
    t
};

/// True when `end` is followed by `.5`/`-5`: the number goes on.
fn continues_number(text: &[u8], end: usize) -> bool {
    matches!(byte(text, end), b'.' | b'-') && byte(text, end + 1).is_ascii_digit()
}

/// A finding ends cleanly when no letter, digit or continuation of the number follows.
fn ends_cleanly(text: &[u8], end: usize) -> bool {
    !is_word(byte(text, end)) && !continues_number(text, end)
}

/// `ddd-dd-dddd` (or with spaces) outside the never-issued ranges: area 000, 666 and
/// 900-999, group 00, serial 0000.
fn us_social_security_number(text: &[u8], i: usize) -> Option<usize> {
    let sep = byte(text, i + 3);
    if digits_at(text, i + 4) != 2 || byte(text, i + 6) != sep || digits_at(text, i + 7) != 4 {
        return None;
    }
    let end = i + 11;
    if !ends_cleanly(text, end) {
        return None;
    }
    let area = &text[i..i + 3];
    let valid = area != b"000"
        && area != b"666"
        && area[0] != b'9'
        && &text[i + 4..i + 6] != b"00"
        && &text[i + 7..i + 11] != b"0000";
    valid.then_some(end)
}

/// A North American number `415-555-0132`, `415.555.0132` or `415 555 0132`: area code
/// and exchange start with 2-9.
fn phone_nanp(text: &[u8], i: usize) -> Option<usize> {
    let sep = byte(text, i + 3);
    if !matches!(sep, b'-' | b'.' | b' ')
        || digits_at(text, i) != 3
        || digits_at(text, i + 4) != 3
        || byte(text, i + 7) != sep
        || digits_at(text, i + 8) != 4
    {
        return None;
    }
    let end = i + 12;
    (nanp_valid(text[i], text[i + 4]) && ends_cleanly(text, end)).then_some(end)
}

/// `(415) 555-0132`, `(415)555-0132`, `(415) 555 0132`.
fn phone_nanp_parenthesized(text: &[u8], i: usize) -> Option<usize> {
    if digits_at(text, i + 1) != 3 || byte(text, i + 4) != b')' {
        return None;
    }
    let mut at = i + 5;
    if matches!(byte(text, at), b' ' | b'-') {
        at += 1;
    }
    if digits_at(text, at) != 3
        || !matches!(byte(text, at + 3), b'-' | b'.' | b' ')
        || digits_at(text, at + 4) != 4
    {
        return None;
    }
    let end = at + 8;
    (nanp_valid(text[i + 1], text[at]) && ends_cleanly(text, end)).then_some(end)
}

fn nanp_valid(area_first: u8, exchange_first: u8) -> bool {
    (b'2'..=b'9').contains(&area_first) && (b'2'..=b'9').contains(&exchange_first)
}

/// Most digits an international (E.164) number has.
const E164_MAX_DIGITS: usize = 15;

/// Fewest digits we accept after a `+`: shorter runs are offsets and counters.
const INTERNATIONAL_MIN_DIGITS: usize = 8;

/// `+44 20 7946 0958`, `+1 (415) 555-0132`, `+49-30-1234567`, `+14155550132`: `+`, a
/// non-zero digit, then groups of digits (one may be parenthesized) separated by
/// single spaces, dots or dashes; 8 to 15 digits in all.
fn phone_international(text: &[u8], i: usize) -> Option<usize> {
    if !(b'1'..=b'9').contains(&byte(text, i + 1)) {
        return None;
    }
    let mut at = i + 1;
    let mut digits = 0;
    let mut groups = 0;
    let mut first_group = 0;
    loop {
        let len = if byte(text, at) == b'(' {
            let d = digits_at(text, at + 1);
            if d == 0 || byte(text, at + 1 + d) != b')' {
                break;
            }
            at += d + 2;
            d
        } else {
            let d = digits_at(text, at);
            if d == 0 {
                break;
            }
            at += d;
            d
        };
        if groups == 0 {
            first_group = len;
        }
        digits += len;
        groups += 1;
        if digits > E164_MAX_DIGITS {
            return None;
        }
        let sep = byte(text, at);
        let opens_group = |b: u8| b.is_ascii_digit() || b == b'(';
        if matches!(sep, b' ' | b'.' | b'-') && opens_group(byte(text, at + 1)) {
            at += 1;
        } else if !(text[at - 1] == b')' && byte(text, at).is_ascii_digit()) {
            break;
        }
    }
    let shape_ok = if groups == 1 {
        digits >= 10
    } else {
        first_group <= 4
    };
    (digits >= INTERNATIONAL_MIN_DIGITS && shape_ok && !is_word(byte(text, at))).then_some(at)
}

/// `4111 1111 1111 1111`, `4111-1111-1111-1111`, `3782 822463 10005`: groups with one
/// separator throughout, in a layout card numbers are printed in.
fn card_grouped(text: &[u8], i: usize) -> Option<usize> {
    const LAYOUTS: [&[usize]; 4] = [&[4, 4, 4, 4, 3], &[4, 4, 4, 4], &[4, 6, 5], &[4, 6, 4]];
    // Every layout's second group has 4 or 6 digits (dates like `2024-03-01` stop here).
    if !matches!(digits_at(text, i + 5), 4 | 6) {
        return None;
    }
    let sep = byte(text, i + 4);
    let mut groups = [0usize; 5];
    let mut count = 0;
    let mut at = i;
    while count < groups.len() {
        let d = digits_at(text, at);
        if d == 0 {
            break;
        }
        groups[count] = d;
        count += 1;
        at += d;
        if byte(text, at) != sep {
            break;
        }
        at += 1;
    }
    for layout in LAYOUTS {
        if layout.len() > count || layout[..layout.len() - 1] != groups[..layout.len() - 1] {
            continue;
        }
        // The last group of the layout must be exactly that long.
        if groups[layout.len() - 1] != layout[layout.len() - 1] {
            continue;
        }
        let mut digits = [0u8; 19];
        let mut n = 0;
        let mut end = i;
        for &g in layout {
            digits[n..n + g].copy_from_slice(&text[end..end + g]);
            n += g;
            end += g + 1;
        }
        let end = end - 1;
        // `9400 1118 9922 3197 4284 90`: the start of a longer sequence of groups (a
        // tracking number), not a card.
        let goes_on = (byte(text, end) == sep && digits_at(text, end + 1) == 4)
            || (i >= 2 && text[i - 1] == sep && text[i - 2].is_ascii_digit());
        if !is_word(byte(text, end)) && !goes_on && card_number_valid(&digits[..n]) {
            return Some(end);
        }
    }
    None
}

/// A card number: an issuer prefix with a length it issues, and a valid Luhn check digit.
fn card_number_valid(digits: &[u8]) -> bool {
    let len = digits.len();
    let prefix = |n: usize| {
        digits[..n]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let issuer = match digits[0] {
        b'4' => matches!(len, 13 | 16 | 19),
        b'5' => (51..=55).contains(&prefix(2)) && len == 16,
        b'2' => (2221..=2720).contains(&prefix(4)) && len == 16,
        b'3' => {
            let two = prefix(2);
            ((two == 34 || two == 37) && len == 15)
                || ((3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len))
                || (matches!(two, 30 | 36 | 38 | 39) && (14..=19).contains(&len))
        }
        b'6' => {
            (prefix(4) == 6011
                || prefix(2) == 65
                || prefix(2) == 62
                || (644..=649).contains(&prefix(3)))
                && (16..=19).contains(&len)
        }
        _ => false,
    };
    issuer && luhn_valid(digits)
}

/// The Luhn (mod 10) check over ASCII digits.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// A dotted quad `10.1.2.3` with octets 0-255 and no leading zeros. `0.x.x.x`,
/// loopback `127.x.x.x` and `255.x.x.x` masks are left alone: they identify no one.
/// Four small numbers such as `1.2.3.4` are taken as an address (a version would be
/// written `v1.2.3.4`).
fn ipv4_address(text: &[u8], i: usize) -> Option<usize> {
    if i > 0 && text[i - 1] == b'.' {
        return None;
    }
    let mut at = i;
    let mut octets = [0u32; 4];
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if byte(text, at) != b'.' {
                return None;
            }
            at += 1;
        }
        let (value, d) = octet_at(text, at)?;
        *octet = value;
        at += d;
    }
    if !ends_cleanly(text, at) {
        return None;
    }
    let identifies_no_one = matches!(octets[0], 0 | 127 | 255);
    (!identifies_no_one && !after_version_key(text, i)).then_some(at)
}

/// `Version=2.0.0.0`, `"version": "1.2.3.4"`, `FileVersion 10.0.1.2`: a dotted quad
/// under a key that names a version (.NET assembly and file versions).
fn after_version_key(text: &[u8], i: usize) -> bool {
    let mut at = i;
    let skip = |at: &mut usize, pred: &dyn Fn(u8) -> bool, max: usize| {
        let mut n = 0;
        while *at > 0 && n < max && pred(text[*at - 1]) {
            *at -= 1;
            n += 1;
        }
    };
    skip(&mut at, &|b| matches!(b, b'"' | b'\'' | b'v' | b'V'), 2);
    skip(
        &mut at,
        &|b| matches!(b, b' ' | b'\t' | b'=' | b':' | b'"' | b'\''),
        8,
    );
    let end = at;
    skip(&mut at, &|b| b.is_ascii_alphabetic(), 32);
    let key = &text[at..end];
    key.len() >= 3 && {
        let tail = &key[key.len().saturating_sub(7)..];
        tail.eq_ignore_ascii_case(b"version") || key.eq_ignore_ascii_case(b"ver")
    }
}

/// The octet at `at`: 1-3 digits, no leading zero, at most 255; its value and length.
fn octet_at(text: &[u8], at: usize) -> Option<(u32, usize)> {
    let mut value = 0u32;
    let mut d = 0;
    // A fourth digit means too long: no need to count the rest of the run.
    while d < 4 {
        let b = byte(text, at + d);
        if !b.is_ascii_digit() {
            break;
        }
        value = value * 10 + u32::from(b - b'0');
        d += 1;
    }
    let valid = (1..=3).contains(&d) && (d == 1 || text[at] != b'0') && value <= 255;
    valid.then_some((value, d))
}

/// IBAN length by country (ISO 13616 registry).
#[rustfmt::skip]
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24), (b"AE", 23), (b"AL", 28), (b"AT", 20), (b"AZ", 28), (b"BA", 20),
    (b"BE", 16), (b"BG", 22), (b"BH", 22), (b"BR", 29), (b"BY", 28), (b"CH", 21),
    (b"CR", 22), (b"CY", 28), (b"CZ", 24), (b"DE", 22), (b"DK", 18), (b"DO", 28),
    (b"EE", 20), (b"EG", 29), (b"ES", 24), (b"FI", 18), (b"FO", 18), (b"FR", 27),
    (b"GB", 22), (b"GE", 22), (b"GI", 23), (b"GL", 18), (b"GR", 27), (b"GT", 28),
    (b"HR", 21), (b"HU", 28), (b"IE", 22), (b"IL", 23), (b"IQ", 23), (b"IS", 26),
    (b"IT", 27), (b"JO", 30), (b"KW", 30), (b"KZ", 20), (b"LB", 28), (b"LC", 32),
    (b"LI", 21), (b"LT", 20), (b"LU", 20), (b"LV", 21), (b"MC", 27), (b"MD", 24),
    (b"ME", 22), (b"MK", 19), (b"MR", 27), (b"MT", 31), (b"MU", 30), (b"NL", 18),
    (b"NO", 15), (b"PK", 24), (b"PL", 28), (b"PS", 29), (b"PT", 25), (b"QA", 29),
    (b"RO", 24), (b"RS", 22), (b"SA", 24), (b"SC", 31), (b"SE", 24), (b"SI", 19),
    (b"SK", 24), (b"SM", 27), (b"ST", 25), (b"SV", 28), (b"TL", 23), (b"TN", 24),
    (b"TR", 26), (b"UA", 29), (b"VA", 22), (b"VG", 24), (b"XK", 20),
];

/// `GB82WEST12345698765432` or `GB82 WEST 1234 5698 7654 32`: a known country with
/// its exact length, spaces only between groups of four, and a valid mod-97 check.
fn iban_code(text: &[u8], i: usize) -> Option<usize> {
    let country = [byte(text, i), byte(text, i + 1)];
    if !country[1].is_ascii_uppercase() || digits_at(text, i + 2) < 2 {
        return None;
    }
    let len = IBAN_LENGTHS
        .iter()
        .find(|(c, _)| **c == country)
        .map(|(_, l)| *l)?;
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut at = i;
    while n < len {
        let b = byte(text, at);
        if b.is_ascii_uppercase() || b.is_ascii_digit() {
            chars[n] = b;
            n += 1;
            at += 1;
        } else if b == b' ' && n % 4 == 0 && n > 0 {
            at += 1;
        } else {
            return None;
        }
    }
    if is_word(byte(text, at)) {
        return None;
    }
    // Move the country and check digits to the end, letters count as 10..35.
    let mut rem = 0u32;
    for &c in chars[4..len].iter().chain(&chars[..4]) {
        if c.is_ascii_digit() {
            rem = (rem * 10 + u32::from(c - b'0')) % 97;
        } else {
            rem = (rem * 100 + u32::from(c - b'A') + 10) % 97;
        }
    }
    (rem == 1).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::super::blocks::blocks;
    use super::*;

    fn found(text: &str) -> Vec<(String, InfoType)> {
        let regions: Vec<String> = super::super::DEFAULT_PHONE_REGIONS
            .iter()
            .map(|c| c.to_string())
            .collect();
        let scanner = PiiScanner::new(&InfoType::ALL, &regions).expect("scanner");
        let mut hits = Vec::new();
        let mut scan = NumberScan::new(&scanner).expect("number detectors");
        for block in blocks(text.as_bytes()) {
            scan.block(text.as_bytes(), &block, 0, &mut hits);
        }
        hits.iter()
            .map(|h| (text[h.start..h.end].to_string(), h.info_type))
            .collect()
    }

    fn one(text: &str, want: &str, t: InfoType) {
        assert_eq!(found(text), vec![(want.to_string(), t)], "in {text:?}");
    }

    fn none(text: &str) {
        assert_eq!(found(text), vec![], "in {text:?}");
    }

    #[test]
    fn phone_numbers_in_common_layouts_are_found() {
        use InfoType::PhoneNumber as P;
        one("call +44 20 7946 0958 now", "+44 20 7946 0958", P);
        one("tel: (415) 555-0132.", "(415) 555-0132", P);
        one("415-555-0132", "415-555-0132", P);
        one("415.555.0132,", "415.555.0132", P);
        one("1-415-555-0132", "1-415-555-0132", P);
        one("+1 (415) 555-0132", "+1 (415) 555-0132", P);
        one("+14155550132", "+14155550132", P);
        one("+49-30-1234567", "+49-30-1234567", P);
        one("+33 1 23 45 67 89", "+33 1 23 45 67 89", P);
    }

    #[test]
    fn numbers_that_are_not_phones_stay() {
        none("2024-03-01 12:34:56.789+00");
        none("took 123-456-7890 ms"); // area code cannot start with 1
        none("+0100 2024");
        none("delta +1500.00");
        none("id 4155550132");
        none("v415-555-0132");
        none("2024-415-555-0132");
    }

    #[test]
    fn card_numbers_need_issuer_layout_and_luhn() {
        use InfoType::CreditCardNumber as C;
        one("4111 1111 1111 1111", "4111 1111 1111 1111", C);
        one("4111-1111-1111-1111 12/27", "4111-1111-1111-1111", C);
        one("5500005555555559", "5500005555555559", C);
        one("amex 3782 822463 10005", "3782 822463 10005", C);
        one("378282246310005;", "378282246310005", C);
        none("4111 1111 1111 1112"); // Luhn
        none("1709296496789"); // epoch millis: no issuer starts with 1
        none("4111 1111 1111 111"); // short last group
        none("41111111111111111111111"); // too long
    }

    #[test]
    fn social_security_numbers_exclude_unissued_ranges() {
        use InfoType::UsSocialSecurityNumber as S;
        one("ssn 536-22-1234", "536-22-1234", S);
        one("536 22 1234", "536 22 1234", S);
        none("000-12-3456");
        none("666-12-3456");
        none("912-12-3456");
        none("536-00-1234");
        none("536-22-0000");
        none("536-22-1234-9");
    }

    #[test]
    fn ibans_need_a_known_country_length_and_mod_97() {
        use InfoType::IbanCode as I;
        one(
            "GB82 WEST 1234 5698 7654 32",
            "GB82 WEST 1234 5698 7654 32",
            I,
        );
        one("iban=DE89370400440532013000;", "DE89370400440532013000", I);
        none("GB82 WEST 1234 5698 7654 33");
        none("ZZ82WEST12345698765432");
    }

    #[test]
    fn ipv4_addresses_are_validated() {
        use InfoType::IpAddress as A;
        one("from 10.20.30.40:5432", "10.20.30.40", A);
        one("1.2.3.4", "1.2.3.4", A);
        none("10.0.19041.1");
        none("v1.2.3.4");
        none("1.2.3.4.5");
        none("127.0.0.1 0.0.0.0 255.255.255.0");
        none("01.02.03.04");
        none("version 1.2.3");
    }
}
