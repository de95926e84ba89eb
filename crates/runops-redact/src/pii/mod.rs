//! Personal and sensitive data: detectors that find e-mail addresses, phone numbers,
//! card numbers and the like in one line (segment) of output, with validation (Luhn,
//! mod-97, number ranges) so that ordinary numbers stay.
//!
//! Every detector is gated by a cheap test, and all of them write [`Hit`]s into one list.
//! The gates: a byte or a short literal found with `memchr`/`memmem` (`@`, `://`, `eyJ`,
//! `AKIA`, `-----BEGIN `), or one shared pass over the text classified 64 bytes at a
//! time into bit masks (`blocks`) that yields word starts that can open a number, runs
//! of exactly 40 base64 characters, and chains of colons that can spell an IPv6
//! address; only those positions are looked at. Overlapping hits are resolved by
//! [`InfoType`] priority, then leftmost, then longest; the winners are replaced with
//! `[INFO_TYPE]`.
//!
//! The only state kept between segments is whether a private-key block is open.

mod blocks;
mod credentials;
mod network;
mod numbers;
mod phone_metadata;
mod phones;
mod tables;

pub use phones::{
    DEFAULT_PHONE_REGIONS, UnknownPhoneRegion, known_phone_regions, parse_phone_regions,
};

use std::fmt;
use std::str::FromStr;

use crate::MAX_PRIVATE_KEY_BLOCK;

/// A kind of personal or sensitive data. Its name (`EMAIL_ADDRESS`) is what
/// `REDACT_INFO_TYPES` lists and what replaces a finding (`[EMAIL_ADDRESS]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InfoType {
    EmailAddress,
    PhoneNumber,
    CreditCardNumber,
    UsSocialSecurityNumber,
    IbanCode,
    IpAddress,
    AwsAccessKey,
    AwsSecretKey,
    PrivateKey,
    JsonWebToken,
    PasswordInUrl,
}

impl InfoType {
    /// Every info type, in the order the docs list them.
    pub const ALL: [InfoType; 11] = [
        InfoType::EmailAddress,
        InfoType::PhoneNumber,
        InfoType::CreditCardNumber,
        InfoType::UsSocialSecurityNumber,
        InfoType::IbanCode,
        InfoType::IpAddress,
        InfoType::AwsAccessKey,
        InfoType::AwsSecretKey,
        InfoType::PrivateKey,
        InfoType::JsonWebToken,
        InfoType::PasswordInUrl,
    ];

    /// The upper-case name: `EMAIL_ADDRESS`.
    pub fn name(self) -> &'static str {
        match self {
            InfoType::EmailAddress => "EMAIL_ADDRESS",
            InfoType::PhoneNumber => "PHONE_NUMBER",
            InfoType::CreditCardNumber => "CREDIT_CARD_NUMBER",
            InfoType::UsSocialSecurityNumber => "US_SOCIAL_SECURITY_NUMBER",
            InfoType::IbanCode => "IBAN_CODE",
            InfoType::IpAddress => "IP_ADDRESS",
            InfoType::AwsAccessKey => "AWS_ACCESS_KEY",
            InfoType::AwsSecretKey => "AWS_SECRET_KEY",
            InfoType::PrivateKey => "PRIVATE_KEY",
            InfoType::JsonWebToken => "JSON_WEB_TOKEN",
            InfoType::PasswordInUrl => "PASSWORD_IN_URL",
        }
    }

    /// What replaces a finding: `[EMAIL_ADDRESS]`.
    pub fn replacement(self) -> &'static str {
        match self {
            InfoType::EmailAddress => "[EMAIL_ADDRESS]",
            InfoType::PhoneNumber => "[PHONE_NUMBER]",
            InfoType::CreditCardNumber => "[CREDIT_CARD_NUMBER]",
            InfoType::UsSocialSecurityNumber => "[US_SOCIAL_SECURITY_NUMBER]",
            InfoType::IbanCode => "[IBAN_CODE]",
            InfoType::IpAddress => "[IP_ADDRESS]",
            InfoType::AwsAccessKey => "[AWS_ACCESS_KEY]",
            InfoType::AwsSecretKey => "[AWS_SECRET_KEY]",
            InfoType::PrivateKey => "[PRIVATE_KEY]",
            InfoType::JsonWebToken => "[JSON_WEB_TOKEN]",
            InfoType::PasswordInUrl => "[PASSWORD_IN_URL]",
        }
    }

    /// Parses a comma-separated list such as `EMAIL_ADDRESS,PHONE_NUMBER` (case and
    /// spaces ignored, duplicates dropped). An empty list selects no type.
    pub fn parse_list(list: &str) -> Result<Vec<InfoType>, UnknownInfoType> {
        let mut types = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let t: InfoType = name.parse()?;
            if !types.contains(&t) {
                types.push(t);
            }
        }
        Ok(types)
    }

    /// Which detector wins when two findings overlap: lower first. Structural
    /// findings (a key block, a token, a URL password) win over the numbers inside them.
    fn priority(self) -> u8 {
        match self {
            InfoType::PrivateKey => 0,
            InfoType::JsonWebToken => 1,
            InfoType::PasswordInUrl => 2,
            InfoType::AwsAccessKey => 3,
            InfoType::AwsSecretKey => 4,
            InfoType::EmailAddress => 5,
            InfoType::IbanCode => 6,
            InfoType::CreditCardNumber => 7,
            InfoType::UsSocialSecurityNumber => 8,
            InfoType::PhoneNumber => 9,
            InfoType::IpAddress => 10,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for InfoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InfoType {
    type Err = UnknownInfoType;

    fn from_str(s: &str) -> Result<InfoType, UnknownInfoType> {
        let wanted = s.trim();
        InfoType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownInfoType {
                name: wanted.to_string(),
            })
    }
}

/// An info type name that is not one of [`InfoType::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownInfoType {
    pub name: String,
}

impl fmt::Display for UnknownInfoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let valid: Vec<&str> = InfoType::ALL.iter().map(|t| t.name()).collect();
        write!(
            f,
            "unknown info type `{}`; valid types are {}",
            self.name,
            valid.join(", ")
        )
    }
}

impl std::error::Error for UnknownInfoType {}

/// One piece of personal data found in a text, by byte offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub start: usize,
    pub end: usize,
    pub info_type: InfoType,
}

/// A detector's finding inside one segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub info_type: InfoType,
    /// The rest of a private-key block already announced: removed without a marker.
    pub silent: bool,
}

impl Hit {
    fn new(start: usize, end: usize, info_type: InfoType) -> Hit {
        Hit {
            start,
            end,
            info_type,
            silent: false,
        }
    }
}

/// What carries over from one segment to the next.
#[derive(Debug, Default, Clone)]
pub(crate) struct PiiState {
    /// Bytes of the private-key block opened in an earlier segment, if one is open.
    open_private_key: Option<usize>,
    /// The SQL result table being read and a header line that may begin one.
    tables: tables::TableState,
}

impl PiiState {
    /// A private-key block began in an earlier segment and has not ended yet.
    pub(crate) fn key_block_open(&self) -> bool {
        self.open_private_key.is_some()
    }
}

/// The enabled detectors.
#[derive(Debug, Clone)]
pub(crate) struct PiiScanner {
    enabled: u16,
    /// The regions whose national phone formats are read.
    phone_regions: phones::PhoneRegions,
}

impl PiiScanner {
    /// `None` when no type is enabled. `phone_regions`: region codes (unknown ones are
    /// skipped).
    pub(crate) fn new(types: &[InfoType], phone_regions: &[String]) -> Option<PiiScanner> {
        let enabled = types.iter().fold(0, |acc, t| acc | t.bit());
        if enabled == 0 {
            return None;
        }
        Some(PiiScanner {
            enabled,
            phone_regions: phones::PhoneRegions::new(phone_regions),
        })
    }

    pub(crate) fn info_types(&self) -> Vec<InfoType> {
        InfoType::ALL.into_iter().filter(|t| self.on(*t)).collect()
    }

    #[inline]
    fn on(&self, t: InfoType) -> bool {
        self.enabled & t.bit() != 0
    }

    /// Finds everything in `seg`, resolves overlaps and leaves the winners in `hits`,
    /// sorted by start.
    pub(crate) fn scan_segment(&self, seg: &[u8], state: &mut PiiState, hits: &mut Vec<Hit>) {
        hits.clear();
        let mut from = 0;
        if let Some(open) = state.open_private_key {
            match credentials::private_key_end(seg) {
                Some(end) => {
                    hits.push(Hit {
                        silent: true,
                        ..Hit::new(0, end, InfoType::PrivateKey)
                    });
                    state.open_private_key = None;
                    from = end;
                }
                None if open + seg.len() <= MAX_PRIVATE_KEY_BLOCK => {
                    state.open_private_key = Some(open + seg.len());
                    hits.push(Hit {
                        silent: true,
                        ..Hit::new(0, seg.len(), InfoType::PrivateKey)
                    });
                    return;
                }
                // No END marker after this much: not a key (or a truncated one).
                None => state.open_private_key = None,
            }
        }
        let text = &seg[from..];
        let before = hits.len();
        if self.on(InfoType::PrivateKey)
            && let Some(open) = credentials::private_keys(text, from, hits)
        {
            state.open_private_key = Some(open);
        }
        self.detect_line_local(text, from, hits);
        self.labelled_cells(text, from, state, hits);
        if hits.len() - before > 1 {
            resolve_overlaps(hits, before);
        }
    }

    /// How many bytes of `lines` (complete lines) from its start can be scanned in one
    /// go: the lines before the first one where a private-key block may begin (every
    /// other detector stays within a line), none while a block is open.
    pub(crate) fn independent_lines(&self, lines: &[u8], state: &PiiState) -> usize {
        if state.open_private_key.is_some() {
            return 0;
        }
        if !self.on(InfoType::PrivateKey) {
            return lines.len();
        }
        match credentials::BEGIN.find(lines) {
            None => lines.len(),
            Some(at) => memchr::memrchr(b'\n', &lines[..at]).map_or(0, |nl| nl + 1),
        }
    }

    /// [`PiiScanner::scan_segment`] for many complete lines at once, when
    /// [`PiiScanner::independent_lines`] says it gives the same result.
    pub(crate) fn scan_lines(&self, lines: &[u8], state: &mut PiiState, hits: &mut Vec<Hit>) {
        hits.clear();
        self.detect_line_local(lines, 0, hits);
        self.labelled_cells(lines, 0, state, hits);
        if hits.len() > 1 {
            resolve_overlaps(hits, 0);
        }
    }

    /// Cells of SQL result columns whose header names a phone number or an SSN.
    fn labelled_cells(&self, text: &[u8], base: usize, state: &mut PiiState, hits: &mut Vec<Hit>) {
        let (phone, ssn) = (
            self.on(InfoType::PhoneNumber),
            self.on(InfoType::UsSocialSecurityNumber),
        );
        if phone || ssn {
            tables::labelled_cells(
                text,
                base,
                &mut state.tables,
                &self.phone_regions,
                (phone, ssn),
                hits,
            );
        }
    }

    /// Runs every enabled detector except private keys. None of them reads across a
    /// line break, and each treats a line break like the end of the text.
    fn detect_line_local(&self, text: &[u8], base: usize, hits: &mut Vec<Hit>) {
        if self.on(InfoType::JsonWebToken) {
            credentials::json_web_tokens(text, base, hits);
        }
        if self.on(InfoType::AwsAccessKey) {
            credentials::aws_access_keys(text, base, hits);
        }
        if self.on(InfoType::PasswordInUrl) {
            network::passwords_in_urls(text, base, hits);
        }
        if self.on(InfoType::EmailAddress) {
            network::email_addresses(text, base, hits);
        }
        // The detectors that start at word starts, base64 runs or colons share one walk
        // over the classified blocks.
        let mut numbers = numbers::NumberScan::new(self);
        let mut aws_secrets = self
            .on(InfoType::AwsSecretKey)
            .then(credentials::AwsSecretScan::default);
        let mut ipv6 = self
            .on(InfoType::IpAddress)
            .then(network::Ipv6Scan::default);
        if numbers.is_none() && aws_secrets.is_none() && ipv6.is_none() {
            return;
        }
        // In groups of blocks: each walk then sets itself up once per group. The order
        // of the hits changes nothing (overlaps are resolved by type and position).
        const GROUP: usize = 16;
        let mut all = blocks::blocks(text);
        if text.len() <= 2 * blocks::BLOCK {
            // A short line: not worth setting up a group.
            for block in all {
                let one = [block];
                if let Some(s) = &mut numbers {
                    s.blocks(text, &one, base, hits);
                }
                if let Some(s) = &mut aws_secrets {
                    s.blocks(text, &one, base, hits);
                }
                if let Some(s) = &mut ipv6 {
                    s.blocks(text, &one, base, hits);
                }
            }
            return;
        }
        let mut group = [blocks::Block::default(); GROUP];
        loop {
            let mut n = 0;
            for block in all.by_ref().take(GROUP) {
                group[n] = block;
                n += 1;
            }
            if n == 0 {
                break;
            }
            let group = &group[..n];
            if let Some(s) = &mut numbers {
                s.blocks(text, group, base, hits);
            }
            if let Some(s) = &mut aws_secrets {
                s.blocks(text, group, base, hits);
            }
            if let Some(s) = &mut ipv6 {
                s.blocks(text, group, base, hits);
            }
        }
    }
}

/// Keeps, among `hits[from..]`, a set of non-overlapping hits chosen by priority, then
/// leftmost, then longest; sorts them by start.
fn resolve_overlaps(hits: &mut Vec<Hit>, from: usize) {
    let mut candidates: Vec<Hit> = hits.drain(from..).collect();
    candidates.sort_by_key(|h| (h.info_type.priority(), h.start, usize::MAX - h.end));
    let mut kept: Vec<Hit> = Vec::with_capacity(candidates.len());
    for h in candidates {
        let at = kept.partition_point(|k| k.start < h.start);
        let clashes_before = at > 0 && kept[at - 1].end > h.start;
        let clashes_after = at < kept.len() && kept[at].start < h.end;
        if !clashes_before && !clashes_after {
            kept.insert(at, h);
        }
    }
    hits.extend(kept);
}

/// Writes `seg` to `out` with every hit replaced.
pub(crate) fn write_redacted(seg: &[u8], hits: &[Hit], out: &mut Vec<u8>) {
    let mut at = 0;
    for h in hits {
        out.extend_from_slice(&seg[at..h.start]);
        if !h.silent {
            out.extend_from_slice(h.info_type.replacement().as_bytes());
        }
        at = h.end;
    }
    out.extend_from_slice(&seg[at..]);
}

/// A literal searcher built once: building one per line costs more than the search.
pub(crate) struct Literal {
    needle: &'static [u8],
    finder: std::sync::OnceLock<memchr::memmem::Finder<'static>>,
}

impl Literal {
    pub(crate) const fn new(needle: &'static [u8]) -> Literal {
        Literal {
            needle,
            finder: std::sync::OnceLock::new(),
        }
    }

    fn finder(&self) -> &memchr::memmem::Finder<'static> {
        self.finder
            .get_or_init(|| memchr::memmem::Finder::new(self.needle))
    }

    pub(crate) fn find(&self, text: &[u8]) -> Option<usize> {
        self.finder().find(text)
    }

    pub(crate) fn find_iter<'h>(&'h self, text: &'h [u8]) -> impl Iterator<Item = usize> + 'h {
        self.finder().find_iter(text)
    }
}

/// Byte classes shared by the detectors.
pub(crate) mod class {
    /// Letters, digits and `_`: a finding must not start or end inside such a run.
    #[inline]
    pub fn is_word(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'_'
    }

    /// Number of ASCII digits at `at`.
    #[inline]
    pub fn digits_at(text: &[u8], at: usize) -> usize {
        text.get(at..)
            .map_or(0, |t| t.iter().take_while(|b| b.is_ascii_digit()).count())
    }

    #[inline]
    pub fn byte(text: &[u8], at: usize) -> u8 {
        text.get(at).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_type_lists_parse_case_insensitively() {
        assert_eq!(
            InfoType::parse_list(" email_address, PHONE_NUMBER,,EMAIL_ADDRESS"),
            Ok(vec![InfoType::EmailAddress, InfoType::PhoneNumber])
        );
        assert_eq!(InfoType::parse_list(""), Ok(vec![]));
        for t in InfoType::ALL {
            assert_eq!(t.name().parse::<InfoType>(), Ok(t));
        }
    }

    #[test]
    fn unknown_info_type_error_names_it_and_lists_valid_ones() {
        let err = InfoType::parse_list("EMAIL_ADDRESS,PASSPORT").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("unknown info type `PASSPORT`; valid types are "));
        assert!(msg.contains("EMAIL_ADDRESS") && msg.contains("PASSWORD_IN_URL"));
    }
}
