//! Addresses: e-mail addresses, IPv6 addresses, and the password part of
//! `scheme://user:password@host` URLs.

use std::net::Ipv6Addr;

use memchr::memchr_iter;

use super::blocks::Block;
use super::class::{byte, is_word};
use super::{Hit, InfoType, Literal};

static SCHEME_SEPARATOR: Literal = Literal::new(b"://");

/// Longest local part (before `@`) RFC 5321 allows; also bounds the backward scan.
const EMAIL_LOCAL_MAX: usize = 64;

/// Longest domain name RFC 1035 allows.
const EMAIL_DOMAIN_MAX: usize = 253;

fn email_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// `local@domain.tld`: a non-empty local part and a domain of valid labels ending in an
/// alphabetic top-level domain of 2-24 letters (so `postgres@db-1` and `pkg@1.2.3`
/// stay).
pub(super) fn email_addresses(text: &[u8], base: usize, hits: &mut Vec<Hit>) {
    for at in memchr_iter(b'@', text) {
        let mut start = at;
        while start > 0 && at - start < EMAIL_LOCAL_MAX && email_local_char(text[start - 1]) {
            start -= 1;
        }
        while start < at && text[start] == b'.' {
            start += 1;
        }
        if start == at {
            continue;
        }
        let mut end = at + 1;
        while end < text.len() && end - at <= EMAIL_DOMAIN_MAX && domain_char(text[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(text[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if is_word(byte(text, end)) || !domain_valid(&text[at + 1..end]) {
            continue;
        }
        // `git@github.com:team/repo.git`: an scp-style SSH remote, not a mailbox.
        if byte(text, end) == b':'
            && !matches!(byte(text, end + 1), 0 | b' ' | b'\t' | b'\r' | b'\n')
        {
            continue;
        }
        hits.push(Hit::new(base + start, base + end, InfoType::EmailAddress));
    }
}

fn domain_valid(domain: &[u8]) -> bool {
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in domain.split(|b| *b == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label[0] == b'-'
            || label[label.len() - 1] == b'-'
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2 && (2..=24).contains(&last.len()) && last.iter().all(u8::is_ascii_alphabetic)
}

/// Bytes that end a URL's authority (`user:password@host:port`).
fn ends_authority(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`')
}

/// `scheme://user:password@host`: the password (from the first `:` of the user info to
/// the last `@` of the authority) is replaced; scheme, user and host stay.
pub(super) fn passwords_in_urls(text: &[u8], base: usize, hits: &mut Vec<Hit>) {
    for sep in SCHEME_SEPARATOR.find_iter(text) {
        if sep == 0 || !text[sep - 1].is_ascii_alphanumeric() {
            continue;
        }
        let start = sep + 3;
        let end = text[start..]
            .iter()
            .position(|b| ends_authority(*b))
            .map_or(text.len(), |p| start + p);
        let authority = &text[start..end];
        let Some(at) = authority.iter().rposition(|b| *b == b'@') else {
            continue;
        };
        let Some(colon) = authority[..at].iter().position(|b| *b == b':') else {
            continue;
        };
        let password = &authority[colon + 1..at];
        // Already replaced by a secret value's marker: that one names it better.
        if password.is_empty() || (password.starts_with(b"[REDACTED:") && password.ends_with(b"]"))
        {
            continue;
        }
        hits.push(Hit::new(
            base + start + colon + 1,
            base + start + at,
            InfoType::PasswordInUrl,
        ));
    }
}

/// Colons in a row an address without `::` has at least: 7, or 6 before a dotted quad.
const IPV6_MIN_SPELLED_COLONS: usize = 6;

/// Most positions from one colon of an address to the next: a group has 1-4 hex digits.
const IPV6_MAX_COLON_GAP: usize = 5;

fn ipv6_char(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// `2001:db8::8a2e:370:7334`, `fe80::1`, `::ffff:10.0.0.1`: runs of hex digits, colons
/// and dots that parse as an IPv6 address and contain a digit (so `dead::beef` paths in
/// code stay). Loopback `::1` and unspecified `::` identify no one and stay.
///
/// Fed the text's blocks in order, it follows the colons of the colon masks and reads
/// only runs that can parse: an address has `::`, or at least six colons each at most
/// five bytes after the previous one. Timestamps (`12:34:56`) and `key: value` text cost
/// a few instructions per colon.
pub(super) struct Ipv6Scan {
    scanned_to: usize,
    prev_colon: usize,
    /// Colons so far, each within [`IPV6_MAX_COLON_GAP`] of the previous one.
    chain: usize,
}

impl Default for Ipv6Scan {
    fn default() -> Ipv6Scan {
        Ipv6Scan {
            scanned_to: 0,
            // Far enough back that the first colon never looks close to it.
            prev_colon: usize::MAX - IPV6_MAX_COLON_GAP,
            chain: 0,
        }
    }
}

impl Ipv6Scan {
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
        let mut colons = block.masks.colon;
        while colons != 0 {
            let colon = block.at + colons.trailing_zeros() as usize;
            colons &= colons - 1;
            let gap = colon.wrapping_sub(self.prev_colon);
            self.prev_colon = colon;
            self.chain = if gap <= IPV6_MAX_COLON_GAP {
                self.chain + 1
            } else {
                1
            };
            if colon < self.scanned_to || (gap != 1 && self.chain < IPV6_MIN_SPELLED_COLONS) {
                continue;
            }
            let mut start = colon;
            while start > 0 && ipv6_char(text[start - 1]) {
                start -= 1;
            }
            let mut end = colon;
            while end < text.len() && ipv6_char(text[end]) {
                end += 1;
            }
            self.scanned_to = end;
            if let Some(len) = ipv6_address_in(text, start, end) {
                hits.push(Hit::new(
                    base + start,
                    base + start + len,
                    InfoType::IpAddress,
                ));
            }
        }
    }
}

/// Length of the address that the run of address characters `text[start..end]` spells,
/// if it is one.
fn ipv6_address_in(text: &[u8], start: usize, end: usize) -> Option<usize> {
    if start > 0 && is_word(text[start - 1]) {
        return None;
    }
    let mut token = &text[start..end];
    while token.last() == Some(&b'.') || token.last() == Some(&b':') && !token.ends_with(b"::") {
        token = &token[..token.len() - 1];
    }
    let colons = token.iter().filter(|b| **b == b':').count();
    let compressed = token.windows(2).any(|w| w == b"::");
    // Without `::` an address spells out its groups: 7 colons, or 6 before a dotted quad.
    let looks_like = (compressed || colons >= IPV6_MIN_SPELLED_COLONS)
        && colons >= 2
        && token.iter().any(u8::is_ascii_digit)
        && !is_word(byte(text, end))
        && !byte_string(token);
    if !looks_like {
        return None;
    }
    let addr = std::str::from_utf8(token).ok()?.parse::<Ipv6Addr>().ok()?;
    (!addr.is_loopback() && !addr.is_unspecified()).then_some(token.len())
}

/// `4A:3F:91:0C:7E:22:5B:D1`: colon-separated bytes (certificate serials, fingerprints,
/// MAC addresses) that happen to parse as an address.
fn byte_string(token: &[u8]) -> bool {
    !token.windows(2).any(|w| w == b"::") && token.split(|b| *b == b':').all(|g| g.len() == 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Detector = fn(&[u8], usize, &mut Vec<Hit>);

    fn ipv6_addresses(text: &[u8], base: usize, hits: &mut Vec<Hit>) {
        let mut scan = Ipv6Scan::default();
        for block in super::super::blocks::blocks(text) {
            scan.block(text, &block, base, hits);
        }
    }

    fn found(detect: Detector, text: &str) -> Vec<String> {
        let mut hits = Vec::new();
        detect(text.as_bytes(), 0, &mut hits);
        hits.iter()
            .map(|h| text[h.start..h.end].to_string())
            .collect()
    }

    #[test]
    fn email_addresses_are_found_with_their_whole_local_part() {
        let e = email_addresses as Detector;
        assert_eq!(
            found(e, "to: <jane.doe+news@mail.example.co.uk>."),
            ["jane.doe+news@mail.example.co.uk"]
        );
        assert_eq!(found(e, "a@b.io,c_d@e-f.com"), ["a@b.io", "c_d@e-f.com"]);
        assert!(found(e, "postgres@db-1 pkg@1.2.3 @scope/name x@y").is_empty());
        assert!(found(e, "origin git@github.com:team/repo.git (fetch)").is_empty());
        assert_eq!(found(e, "from: ops@example.com: hi"), ["ops@example.com"]);
    }

    #[test]
    fn url_passwords_keep_scheme_user_and_host() {
        let p = passwords_in_urls as Detector;
        assert_eq!(
            found(p, "postgres://app:s3cr3t@db.internal:5432/orders"),
            ["s3cr3t"]
        );
        assert_eq!(found(p, "redis://:p@ss@cache:6379"), ["p@ss"]);
        assert!(
            found(
                p,
                "https://example.com:8443/x ssh://git@host http://a:b/c@d"
            )
            .is_empty()
        );
        assert!(found(p, "mysql://root:[REDACTED:DB_PASS]@db").is_empty());
    }

    #[test]
    fn ipv6_addresses_are_parsed() {
        let v6 = ipv6_addresses as Detector;
        assert_eq!(
            found(v6, "from 2001:db8::8a2e:370:7334 port"),
            ["2001:db8::8a2e:370:7334"]
        );
        assert_eq!(found(v6, "[fe80::1%eth0]"), ["fe80::1"]);
        assert_eq!(found(v6, "client ::ffff:10.0.0.1:"), ["::ffff:10.0.0.1"]);
        assert!(found(v6, "::1 :: std::net dead::beef 12:34:56 a::b").is_empty());
        assert!(found(v6, "mac 00:1a:2b:3c:4d:5e at 12:34:56.789").is_empty());
        assert!(found(v6, "serial 4A:3F:91:0C:7E:22:5B:D1").is_empty());
        assert_eq!(
            found(v6, "a: b: 1:2:3:4:5:6:7:8 12:00 1:2:3:4:5:6:10.0.0.1"),
            ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:10.0.0.1"]
        );
        assert!(found(v6, "1:2:3:4:5:00006:7:8 1:2:3:4:5:6:7").is_empty());
    }
}
