//! Verification of identity-provider JWTs against a JWKS, shared by the agent
//! (`JWK_URL`: every task must carry its creator's token) and the server
//! (`--auth-jwk-url`: users may call the API with such a token).
//!
//! [`JwksVerifier::verify`] accepts only RS256 and ES256 tokens: the algorithm named in
//! the token's header must be one of those two *and* match the key it names (an RSA key
//! for RS256, a P-256 key for ES256), so `alg: none`, HMAC tokens and algorithm
//! confusion (an HS256 token "signed" with a public key) are refused before any
//! signature check. The key is looked up by `kid` in the JWKS, which is fetched lazily,
//! cached, and fetched again when a token names a `kid` the cache does not know (key
//! rotation), at most once per [`JWKS_MIN_REFETCH_INTERVAL`]. `exp` is required; `exp`
//! and `nbf` are checked with [`LEEWAY_SECS`] of clock skew; issuer and audience when
//! configured. Every refusal is a [`JwtError`] whose message says why in words a user can
//! act on. Nothing here stores a token anywhere.
//!
//! A header with `crit` is refused (RFC 7515 section 4.1.11: this verifier implements no
//! extension). [`VerifiedToken::confirmation_jkt`] reads the key a sender-constrained
//! token is bound to (`cnf.jkt`, RFC 9449), and [`proof`] makes and checks the task
//! proofs signed with that key.
//!
//! With the `testing` feature, [`testing`] generates keys (with the `openssl` CLI),
//! serves a JWKS on loopback and signs tokens, for the tests of every crate.

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod jwks;
pub mod proof;
#[cfg(feature = "testing")]
pub mod testing;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};
use std::time::Duration;

pub use jwks::JwksVerifier;

/// Clock skew tolerated on `exp` and `nbf`: small, so that an expired session really
/// ends, but enough for the clocks of the identity provider, server and agent to differ.
pub const LEEWAY_SECS: u64 = 30;

/// Longest token accepted; real ones are a few KiB even with many groups.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Largest JWKS document read; real ones hold a handful of keys (a few KiB).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A JWKS fetch that takes longer fails: a task must not hang on a slow provider.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// At most one JWKS fetch per this interval, so tokens with made-up `kid`s cannot make
/// us hammer the identity provider; short enough that a rotated key is picked up at once.
pub const JWKS_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(3);

/// Cached keys older than this are fetched again at the next use (removed keys stop
/// being trusted even when no unknown `kid` ever shows up).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

/// The only signature algorithms accepted.
pub const ACCEPTED_ALGORITHMS: &[&str] = &["RS256", "ES256"];

/// Where the verifier gets its keys and what it checks besides the signature.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// URL of the identity provider's JWKS (`JWK_URL`, `--auth-jwk-url`).
    pub jwks_url: String,
    /// When set, the `iss` claim must equal it.
    pub issuer: Option<String>,
    /// When set, the `aud` claim must contain it.
    pub audience: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error(
        "the token is signed with algorithm `{0}`, which is refused: only RS256 and ES256 are accepted"
    )]
    Algorithm(String),
    #[error(
        "the token was signed with key `{kid}`, which is not in the identity provider's key set at {url} (fetched again to be sure)"
    )]
    UnknownKey { kid: String, url: String },
    #[error(
        "the token names no key (`kid`) and the key set at {url} does not hold exactly one {alg} key to try"
    )]
    NoKeyId { alg: String, url: String },
    #[error("key `{kid}` of the key set cannot verify a {alg} token: {why}")]
    KeyMismatch {
        kid: String,
        alg: String,
        why: String,
    },
    #[error("the token's signature does not match key `{kid}`: the token was altered or forged")]
    BadSignature { kid: String },
    #[error("the token expired at {0}")]
    Expired(String),
    #[error("the token is not valid before {0}")]
    NotYetValid(String),
    #[error("the token has no `{0}` claim, which is required")]
    MissingClaim(String),
    #[error("the token was issued by `{found}`, not by the expected issuer `{expected}`")]
    WrongIssuer { found: String, expected: String },
    #[error("the token is not meant for this audience: its `aud` does not include `{expected}`")]
    WrongAudience { expected: String },
    #[error("cannot get the identity provider's key set from {url}: {detail}")]
    JwksUnavailable { url: String, detail: String },
    #[error(
        "the token's header marks {0} as critical (`crit`), an extension this verifier does not implement, so the token must be refused (RFC 7515 section 4.1.11)"
    )]
    Critical(String),
    #[error("the token's `cnf` (confirmation) claim cannot be enforced: {0}")]
    Confirmation(String),
}

impl JwtError {
    /// A short name of the kind of refusal, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) => "malformed",
            JwtError::Algorithm(_) => "algorithm",
            JwtError::UnknownKey { .. } => "unknown-key",
            JwtError::NoKeyId { .. } => "no-kid",
            JwtError::KeyMismatch { .. } => "key-mismatch",
            JwtError::BadSignature { .. } => "bad-signature",
            JwtError::Expired(_) => "expired",
            JwtError::NotYetValid(_) => "not-yet-valid",
            JwtError::MissingClaim(_) => "missing-claim",
            JwtError::WrongIssuer { .. } => "wrong-issuer",
            JwtError::WrongAudience { .. } => "wrong-audience",
            JwtError::JwksUnavailable { .. } => "jwks-unavailable",
            JwtError::Critical(_) => "critical-header",
            JwtError::Confirmation(_) => "confirmation",
        }
    }
}

/// A token whose signature and claims were verified.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// `RS256` or `ES256`.
    pub alg: &'static str,
    /// The key that verified it.
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
}

impl VerifiedToken {
    /// A claim that is a string (surrounding spaces removed), if present.
    pub fn string_claim(&self, name: &str) -> Option<&str> {
        self.claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// A claim holding a list of strings, or one string of comma-separated values
    /// (identity providers use both for groups); empty when absent.
    pub fn list_claim(&self, name: &str) -> Vec<String> {
        let items: Vec<String> = match self.claims.get(name) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
            _ => Vec::new(),
        };
        items
            .into_iter()
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect()
    }

    /// `exp` as a time, when it is a number.
    pub fn expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        time_claim(&self.claims, "exp")
    }

    /// `iat` (when the provider issued the token) in seconds since the epoch, when it is
    /// a number.
    pub fn issued_at(&self) -> Option<i64> {
        self.claims
            .get("iat")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite())
            .map(|t| t as i64)
    }

    /// The SHA-256 JWK thumbprint the token is bound to (`cnf.jkt`, RFC 9449), see
    /// [`confirmation_jkt`].
    pub fn confirmation_jkt(&self) -> Result<Option<String>, JwtError> {
        confirmation_jkt(&self.claims)
    }
}

/// The key a sender-constrained token is bound to: `Ok(None)` without a `cnf` claim,
/// `Ok(Some(jkt))` for a `cnf.jkt` (RFC 9449 DPoP: the base64url SHA-256 thumbprint of
/// the holder's public key, RFC 7638). Any other confirmation method (an mTLS
/// certificate's `x5t#S256`, a raw `jwk`...) cannot be checked here, so such a token is
/// refused rather than treated as a plain bearer token.
pub fn confirmation_jkt(claims: &Map<String, Value>) -> Result<Option<String>, JwtError> {
    let Some(cnf) = claims.get("cnf") else {
        return Ok(None);
    };
    let Some(cnf) = cnf.as_object() else {
        return Err(JwtError::Confirmation("it is not a JSON object".into()));
    };
    match cnf.get("jkt") {
        Some(Value::String(jkt)) if is_sha256_thumbprint(jkt) => Ok(Some(jkt.clone())),
        Some(_) => Err(JwtError::Confirmation(
            "its `jkt` is not a base64url SHA-256 key thumbprint".into(),
        )),
        None => {
            let methods: Vec<&str> = cnf.keys().map(String::as_str).collect();
            Err(JwtError::Confirmation(format!(
                "it binds the token with `{}`; only `jkt` (a DPoP key thumbprint) is supported",
                methods.join("`, `")
            )))
        }
    }
}

/// 32 bytes in unpadded base64url: 43 characters of the URL-safe alphabet.
fn is_sha256_thumbprint(s: &str) -> bool {
    s.len() == 43
        && URL_SAFE_NO_PAD
            .decode(s)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// The claims of a token *without* verifying it: only for a token that was verified
/// already (the server reads `cnf` of the token it authenticated a request with).
pub fn claims_of_verified_token(token: &str) -> Map<String, Value> {
    unverified_claims(token)
}

/// True when `token` has the shape of a JWT: three non-empty base64url parts separated
/// by dots, the first of which is a JSON object (its header). API tokens (`rou_...`,
/// `roa_...`) never have this shape.
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && URL_SAFE_NO_PAD
            .decode(parts[0])
            .ok()
            .and_then(|h| serde_json::from_slice::<Map<String, Value>>(&h).ok())
            .is_some()
}

/// The parts of the header we look at before trusting anything.
#[derive(Debug)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// `typ`, when a string.
    typ: Option<String>,
    /// The embedded public key (`jwk`), used by task proofs only.
    jwk: Option<Value>,
}

/// Refuses a header with `crit` (RFC 7515 section 4.1.11): its recipient must understand
/// every extension it lists, and this verifier implements none, so any `crit` means the
/// token's meaning depends on rules we would silently ignore.
fn check_crit(header: &Map<String, Value>) -> Result<(), JwtError> {
    let Some(crit) = header.get("crit") else {
        return Ok(());
    };
    let names: Option<Vec<&str>> = crit
        .as_array()
        .filter(|a| !a.is_empty())
        .and_then(|a| a.iter().map(Value::as_str).collect());
    match names {
        Some(names) => Err(JwtError::Critical(format!("`{}`", names.join("`, `")))),
        None => Err(JwtError::Malformed(
            "its `crit` header is not a non-empty list of names".into(),
        )),
    }
}

fn parse_header(token: &str) -> Result<Header, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed(format!(
            "it is {} bytes long; at most {MAX_TOKEN_LEN} are accepted",
            token.len()
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(JwtError::Malformed(format!(
            "it has {} dot-separated parts instead of 3",
            parts.len()
        )));
    }
    let raw = URL_SAFE_NO_PAD
        .decode(parts[0])
        .map_err(|_| JwtError::Malformed("its header is not base64url".into()))?;
    let header: Map<String, Value> = serde_json::from_slice(&raw)
        .map_err(|_| JwtError::Malformed("its header is not a JSON object".into()))?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(JwtError::Malformed("its header names no algorithm".into())),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed("its `kid` is not a string".into())),
    };
    check_crit(&header)?;
    Ok(Header {
        alg,
        kid,
        typ: header
            .get("typ")
            .and_then(Value::as_str)
            .map(str::to_string),
        jwk: header.get("jwk").cloned(),
    })
}

/// The claims, read *without* verification: only to word error messages.
fn unverified_claims(token: &str) -> Map<String, Value> {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn time_claim(claims: &Map<String, Value>, name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let secs = claims.get(name)?.as_f64()?;
    chrono::DateTime::from_timestamp(secs as i64, 0)
}

fn time_text(claims: &Map<String, Value>, name: &str) -> String {
    time_claim(claims, name)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "an unreadable time".into())
}

/// The algorithm of a header, if it is one we accept.
fn accepted_algorithm(alg: &str) -> Result<Algorithm, JwtError> {
    match alg {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(JwtError::Algorithm(other.to_string())),
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        _ => "ES256",
    }
}

/// Whether `jwk` may verify a token of `alg`: the key type must fit the algorithm, and
/// a key that declares its own algorithm or use must declare this one (no confusion).
fn key_fits(jwk: &Jwk, alg: Algorithm) -> Result<(), String> {
    use jsonwebtoken::jwk::PublicKeyUse;
    if let Some(PublicKeyUse::Encryption) = jwk.common.public_key_use {
        return Err("the key is for encryption (`use: enc`), not signatures".into());
    }
    if let Some(declared) = jwk.common.key_algorithm {
        let same = matches!(
            (declared, alg),
            (KeyAlgorithm::RS256, Algorithm::RS256) | (KeyAlgorithm::ES256, Algorithm::ES256)
        );
        if !same {
            return Err(format!(
                "the key is declared for {declared:?}, the token claims {}",
                alg_name(alg)
            ));
        }
    }
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => Ok(()),
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => {
            if p.curve == EllipticCurve::P256 {
                Ok(())
            } else {
                Err(format!("it is a {:?} key, ES256 needs P-256", p.curve))
            }
        }
        (AlgorithmParameters::RSA(_), _) => Err("it is an RSA key".into()),
        (AlgorithmParameters::EllipticCurve(_), _) => Err("it is an elliptic-curve key".into()),
        (AlgorithmParameters::OctetKey(_), _) => Err("it is a symmetric key".into()),
        (AlgorithmParameters::OctetKeyPair(_), _) => Err("it is an Ed25519/X25519 key".into()),
        _ => Err("its key type is unknown".into()),
    }
}

/// Checks `token`'s signature with `jwk` and its claims; the caller picked `jwk` by kid.
fn verify_with_key(
    token: &str,
    alg: Algorithm,
    jwk: &Jwk,
    cfg: &VerifierConfig,
) -> Result<VerifiedToken, JwtError> {
    let kid = jwk
        .common
        .key_id
        .clone()
        .unwrap_or_else(|| "(no kid)".into());
    key_fits(jwk, alg).map_err(|why| JwtError::KeyMismatch {
        kid: kid.clone(),
        alg: alg_name(alg).into(),
        why,
    })?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| JwtError::KeyMismatch {
        kid: kid.clone(),
        alg: alg_name(alg).into(),
        why: format!("the key is unusable: {e}"),
    })?;
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
    // A configured issuer or audience must be present, not only right when present.
    match &cfg.issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        None => validation.iss = None,
    }
    match &cfg.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
            let claims = unverified_claims(token);
            match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_) => JwtError::BadSignature { kid: kid.clone() },
                ErrorKind::ExpiredSignature => JwtError::Expired(time_text(&claims, "exp")),
                ErrorKind::ImmatureSignature => JwtError::NotYetValid(time_text(&claims, "nbf")),
                ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
                ErrorKind::InvalidIssuer => JwtError::WrongIssuer {
                    found: claims
                        .get("iss")
                        .and_then(Value::as_str)
                        .unwrap_or("(none)")
                        .to_string(),
                    expected: cfg.issuer.clone().unwrap_or_default(),
                },
                ErrorKind::InvalidAudience => JwtError::WrongAudience {
                    expected: cfg.audience.clone().unwrap_or_default(),
                },
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    JwtError::Algorithm(format!("{alg:?}"))
                }
                ErrorKind::InvalidClaimFormat(c) => {
                    JwtError::Malformed(format!("its claim `{c}` has the wrong type"))
                }
                _ => JwtError::Malformed(e.to_string()),
            }
        })?;
    Ok(VerifiedToken {
        alg: alg_name(alg),
        kid: jwk.common.key_id.clone(),
        claims: data.claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape_is_told_apart_from_api_tokens() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        assert!(looks_like_jwt(&format!("{header}.e30.c2ln")));
        assert!(
            looks_like_jwt(&format!("{header}.e30.")),
            "alg none has an empty signature"
        );
        assert!(!looks_like_jwt("rou_abcdef"));
        assert!(!looks_like_jwt("roa_aHR0cDovL3g.c2VjcmV0"));
        assert!(!looks_like_jwt("a.b.c"), "the header must be JSON");
        assert!(!looks_like_jwt(&format!("{header}.e30")));
    }

    #[test]
    fn header_algorithms_other_than_rs256_and_es256_are_refused() {
        for alg in ["none", "HS256", "RS512", "PS256", "ES384", "EdDSA"] {
            let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"k"}}"#));
            let token = format!("{h}.e30.c2ln");
            let err = parse_header(&token)
                .and_then(|h| accepted_algorithm(&h.alg))
                .unwrap_err();
            assert_eq!(err, JwtError::Algorithm(alg.into()));
            assert!(err.to_string().contains("only RS256 and ES256"), "{err}");
        }
    }

    #[test]
    fn malformed_tokens_get_a_reason() {
        assert!(matches!(parse_header("abc"), Err(JwtError::Malformed(_))));
        assert!(matches!(
            parse_header("!!.e30.x"),
            Err(JwtError::Malformed(_))
        ));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(
            parse_header(&long)
                .unwrap_err()
                .to_string()
                .contains("bytes long")
        );
    }

    #[test]
    fn list_claims_accept_arrays_and_comma_strings() {
        let mut claims = Map::new();
        claims.insert("a".into(), serde_json::json!(["dba", " ops ", ""]));
        claims.insert("b".into(), serde_json::json!("dba, ops"));
        let t = VerifiedToken {
            alg: "RS256",
            kid: None,
            claims,
        };
        assert_eq!(t.list_claim("a"), ["dba", "ops"]);
        assert_eq!(t.list_claim("b"), ["dba", "ops"]);
        assert!(t.list_claim("c").is_empty());
    }
}
