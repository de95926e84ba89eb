//! Slack's request signature: every request Slack sends carries
//! `X-Slack-Request-Timestamp` and `X-Slack-Signature: v0=<hex HMAC-SHA256 of
//! "v0:<timestamp>:<raw body>" under the app's signing secret>`. A request is
//! accepted only when the signature matches (compared in constant time) and the
//! timestamp is within [`MAX_CLOCK_SKEW_SECS`] of now (a replayed request is refused).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Slack's own rule: requests older (or newer) than five minutes are replays.
pub const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;

/// Why a request is refused (told to the caller as a 401; Slack shows nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    MissingHeader(&'static str),
    BadTimestamp,
    Stale { age_secs: i64 },
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::MissingHeader(h) => write!(f, "the request has no {h} header"),
            SignatureError::BadTimestamp => {
                f.write_str("X-Slack-Request-Timestamp is not a number of seconds")
            }
            SignatureError::Stale { age_secs } => write!(
                f,
                "the request was signed {age_secs} s away from now (at most {MAX_CLOCK_SKEW_SECS} s are accepted)"
            ),
            SignatureError::Mismatch => {
                f.write_str("X-Slack-Signature does not match the signing secret")
            }
        }
    }
}

/// `v0=<hex>`: the signature Slack sends for `body` at `timestamp`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a request's headers against its raw `body` at `now_secs` (Unix seconds).
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::MissingHeader("X-Slack-Request-Timestamp"))?;
    let signature = signature.ok_or(SignatureError::MissingHeader("X-Slack-Signature"))?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let age_secs = now_secs.saturating_sub(at);
    if age_secs.saturating_abs() > MAX_CLOCK_SKEW_SECS {
        return Err(SignatureError::Stale { age_secs });
    }
    let hex_sig = signature
        .trim()
        .strip_prefix("v0=")
        .ok_or(SignatureError::Mismatch)?;
    let given = hex::decode(hex_sig).map_err(|_| SignatureError::Mismatch)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(b"v0:");
    mac.update(timestamp.trim().as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Slack's "Verifying requests from Slack" page.
    const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const DOC_TIMESTAMP: &str = "1531420618";
    const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const DOC_SIGNATURE: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(
            sign(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY.as_bytes()),
            DOC_SIGNATURE
        );
        let now = 1531420618 + 30;
        assert_eq!(
            verify(
                DOC_SECRET,
                Some(DOC_TIMESTAMP),
                Some(DOC_SIGNATURE),
                DOC_BODY.as_bytes(),
                now
            ),
            Ok(())
        );
    }

    #[test]
    fn a_changed_body_secret_or_signature_is_refused() {
        let now = 1531420618;
        let check = |secret: &str, sig: &str, body: &str| {
            verify(secret, Some(DOC_TIMESTAMP), Some(sig), body.as_bytes(), now)
        };
        assert_eq!(
            check(DOC_SECRET, DOC_SIGNATURE, &format!("{DOC_BODY}&x=1")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check("another-secret", DOC_SIGNATURE, DOC_BODY),
            Err(SignatureError::Mismatch)
        );
        let flipped = DOC_SIGNATURE.replace("a2114d", "a2114e");
        assert_eq!(
            check(DOC_SECRET, &flipped, DOC_BODY),
            Err(SignatureError::Mismatch)
        );
        for malformed in ["", "v0=", "v0=zz", "v1=a2114d57", &DOC_SIGNATURE[3..]] {
            assert_eq!(
                check(DOC_SECRET, malformed, DOC_BODY),
                Err(SignatureError::Mismatch),
                "{malformed}"
            );
        }
    }

    #[test]
    fn stale_future_or_missing_timestamps_are_refused() {
        let body = b"text=hi";
        let at = 1_700_000_000_i64;
        let sig = sign("s", &at.to_string(), body);
        let ts = at.to_string();
        let ok = |now| verify("s", Some(&ts), Some(&sig), body, now);
        assert_eq!(ok(at + MAX_CLOCK_SKEW_SECS), Ok(()));
        assert_eq!(ok(at - MAX_CLOCK_SKEW_SECS), Ok(()));
        assert_eq!(
            ok(at + MAX_CLOCK_SKEW_SECS + 1),
            Err(SignatureError::Stale {
                age_secs: MAX_CLOCK_SKEW_SECS + 1
            })
        );
        assert!(matches!(
            ok(at - MAX_CLOCK_SKEW_SECS - 1),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            verify("s", None, Some(&sig), body, at),
            Err(SignatureError::MissingHeader("X-Slack-Request-Timestamp"))
        );
        assert_eq!(
            verify("s", Some(&ts), None, body, at),
            Err(SignatureError::MissingHeader("X-Slack-Signature"))
        );
        assert_eq!(
            verify("s", Some("yesterday"), Some(&sig), body, at),
            Err(SignatureError::BadTimestamp)
        );
    }
}
