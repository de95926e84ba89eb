//! Task proofs: what makes a captured sender-constrained JWT useless for running scripts.
//!
//! When the identity provider binds a user's JWT to a key the user's machine holds
//! (`cnf.jkt`, RFC 9449 DPoP), the JWT alone no longer makes an agent run anything: each
//! task also needs a *proof*, a compact JWS signed with that key over the task itself.
//! The CLI makes it right after the server created the task ([`ProofKey::sign`]); the
//! server checks it cheaply and passes it on with the offer; the agent checks it again on
//! its own ([`verify_task_proof`]) and remembers its `jti`.
//!
//! A proof is a JWS with header `{"typ": "runops-task-proof+jwt", "alg": "ES256" | "RS256",
//! "jwk": <public key>}` (the key's RFC 7638 thumbprint must equal the JWT's `cnf.jkt`) and
//! claims:
//!
//! | claim | value |
//! |---|---|
//! | `task_id` | the task's id (number) |
//! | `target` | the task's target |
//! | `type` | the task's type (`bash`, `postgres`, ...) |
//! | `script_sha256` | base64url SHA-256 of the script's exact bytes |
//! | `ath` | base64url SHA-256 of the JWT it accompanies (as in RFC 9449) |
//! | `iat` | when it was made (seconds) |
//! | `jti` | a random id, for replay detection |
//!
//! So a proof for task A does not validate for task B, for another script, target or type,
//! nor with another JWT or key.

use crate::{JwtError, LEEWAY_SECS, accepted_algorithm, alg_name, key_fits, parse_header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The `typ` of a task proof: explicit typing (RFC 8725 section 3.11), so that no other
/// JWT signed with the same key (a DPoP proof for the identity provider) can pass as one.
pub const TASK_PROOF_TYPE: &str = "runops-task-proof+jwt";

/// Longest proof accepted: a P-256 proof is under 1 KiB; an RSA one under 2 KiB.
pub const MAX_PROOF_LEN: usize = 8 * 1024;

/// Longest `jti` accepted (ours are 22 characters); bounds what a verifier remembers.
pub const MAX_JTI_LEN: usize = 128;

/// Base64url (unpadded) SHA-256 of `bytes`.
pub fn sha256_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// What a proof is made for.
#[derive(Debug, Clone, Copy)]
pub struct TaskBinding<'a> {
    pub task_id: i64,
    pub target: &'a str,
    /// The task's type.
    pub kind: &'a str,
    /// The script exactly as sent and stored (before any placeholder is rendered).
    pub script: &'a str,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProofClaims {
    task_id: i64,
    target: String,
    #[serde(rename = "type")]
    kind: String,
    script_sha256: String,
    ath: String,
    iat: i64,
    jti: String,
}

/// The RFC 7638 SHA-256 thumbprint of a public key.
pub fn jwk_thumbprint(jwk: &Jwk) -> Result<String, String> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| format!("cannot compute the key's thumbprint: {e}"))
}

/// A P-256 private key that signs task proofs (the CLI's `--dpop-key`).
pub struct ProofKey {
    encoding: EncodingKey,
    public: Jwk,
    thumbprint: String,
}

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofKey")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// How to make a key the CLI can use, for error hints.
pub const PROOF_KEY_HINT: &str = "make one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem`, or convert an `EC PRIVATE KEY` with `openssl pkcs8 -topk8 -nocrypt -in old.pem -out key.pem`";

impl ProofKey {
    /// Reads an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) holding a P-256
    /// key. Errors say what is wrong with the text, never its content.
    pub fn from_pem(pem: &str) -> Result<ProofKey, String> {
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err("the key is encrypted; an unencrypted PKCS#8 key is needed".into());
        }
        if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            return Err("the key is in the SEC1 format (`EC PRIVATE KEY`); PKCS#8 (`PRIVATE KEY`) is needed".into());
        }
        let (Some(start), Some(end)) = (pem.find(BEGIN), pem.find(END)) else {
            return Err(
                "it is not a PEM private key (no `-----BEGIN PRIVATE KEY-----` block)".into(),
            );
        };
        if end < start {
            return Err("its PEM block is malformed".into());
        }
        let body: String = pem[start + BEGIN.len()..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|_| "its PEM block is not valid base64".to_string())?;
        ProofKey::from_pkcs8_der(&der)
    }

    /// A P-256 key in PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<ProofKey, String> {
        let encoding = EncodingKey::from_ec_der(der);
        let public = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
            .map_err(|_| "it is not a P-256 (ES256) private key".to_string())?;
        let thumbprint = jwk_thumbprint(&public)?;
        Ok(ProofKey {
            encoding,
            public,
            thumbprint,
        })
    }

    /// The RFC 7638 thumbprint of the public key: what a token bound to this key carries
    /// in `cnf.jkt`.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A proof for the task `binding`, accompanying `token`, made now with a random `jti`.
    pub fn sign(&self, token: &str, binding: &TaskBinding) -> Result<String, String> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| format!("no randomness for the proof's id: {e}"))?;
        self.sign_at(
            token,
            binding,
            chrono::Utc::now().timestamp(),
            &URL_SAFE_NO_PAD.encode(id),
        )
    }

    /// [`ProofKey::sign`] with a given `iat` and `jti` (tests).
    pub fn sign_at(
        &self,
        token: &str,
        binding: &TaskBinding,
        iat: i64,
        jti: &str,
    ) -> Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(TASK_PROOF_TYPE.to_string());
        header.jwk = Some(self.public.clone());
        let claims = ProofClaims {
            task_id: binding.task_id,
            target: binding.target.to_string(),
            kind: binding.kind.to_string(),
            script_sha256: sha256_b64(binding.script.as_bytes()),
            ath: sha256_b64(token.trim().as_bytes()),
            iat,
            jti: jti.to_string(),
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| format!("cannot sign the task proof: {e}"))
    }
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the task proof is not a well-formed JWS: {0}")]
    Malformed(String),
    #[error("the task proof has type `{0}`, not `{TASK_PROOF_TYPE}`")]
    Type(String),
    #[error("the task proof is signed with algorithm `{0}`; only ES256 and RS256 are accepted")]
    Algorithm(String),
    #[error("the task proof's header {0}")]
    Header(String),
    #[error("the task proof carries no public key (`jwk` header)")]
    NoKey,
    #[error("the task proof's `jwk` header holds a private key; only the public key belongs there")]
    PrivateKey,
    #[error("the task proof's key cannot verify it: {0}")]
    BadKey(String),
    #[error(
        "the task proof is signed with key {found}, but the identity token is bound to key {expected} (`cnf.jkt`)"
    )]
    WrongKey { found: String, expected: String },
    #[error("the task proof's signature does not match its key: it was altered or forged")]
    BadSignature,
    #[error("the task proof has no valid `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the task proof was made for {0}")]
    Mismatch(String),
    #[error("the task proof {0}")]
    Time(String),
}

impl ProofError {
    /// A short name of the kind of refusal, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProofError::Malformed(_) => "malformed",
            ProofError::Type(_) => "type",
            ProofError::Algorithm(_) => "algorithm",
            ProofError::Header(_) => "header",
            ProofError::NoKey => "no-key",
            ProofError::PrivateKey => "private-key",
            ProofError::BadKey(_) => "bad-key",
            ProofError::WrongKey { .. } => "wrong-key",
            ProofError::BadSignature => "bad-signature",
            ProofError::MissingClaim(_) => "missing-claim",
            ProofError::Mismatch(_) => "mismatch",
            ProofError::Time(_) => "time",
        }
    }
}

/// What a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck<'a> {
    /// The thumbprint the JWT is bound to (`cnf.jkt`).
    pub jkt: &'a str,
    /// The JWT the proof accompanies.
    pub token: &'a str,
    pub binding: TaskBinding<'a>,
    /// The task's creation (seconds): a proof cannot be older than its task.
    pub not_before: Option<i64>,
    /// Oldest proof accepted, seconds before now.
    pub max_age_secs: u64,
}

/// A proof that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    pub jti: String,
    pub iat: i64,
}

fn time_text(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

/// Members of a JWK that only a private key has.
const PRIVATE_JWK_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Checks `proof` against `check`: type, algorithm, embedded key (thumbprint equal to
/// `cnf.jkt`), signature, then every claim (task, target, type, script hash, JWT hash,
/// time). The caller remembers [`VerifiedProof::jti`] to refuse a replay.
pub fn verify_task_proof(proof: &str, check: &ProofCheck) -> Result<VerifiedProof, ProofError> {
    let proof = proof.trim();
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::Malformed(format!(
            "it is {} bytes long; at most {MAX_PROOF_LEN} are accepted",
            proof.len()
        )));
    }
    let header = parse_header(proof).map_err(|e| match e {
        JwtError::Critical(names) => ProofError::Header(format!(
            "marks {names} as critical (`crit`), which is not implemented"
        )),
        JwtError::Malformed(why) => ProofError::Malformed(why),
        other => ProofError::Malformed(other.to_string()),
    })?;
    match header.typ.as_deref() {
        Some(TASK_PROOF_TYPE) => {}
        Some(other) => return Err(ProofError::Type(other.to_string())),
        None => return Err(ProofError::Type("(none)".to_string())),
    }
    let alg =
        accepted_algorithm(&header.alg).map_err(|_| ProofError::Algorithm(header.alg.clone()))?;
    let raw_jwk = header.jwk.ok_or(ProofError::NoKey)?;
    let members = raw_jwk
        .as_object()
        .ok_or_else(|| ProofError::BadKey("its `jwk` header is not a JSON object".into()))?;
    if PRIVATE_JWK_MEMBERS.iter().any(|m| members.contains_key(*m)) {
        return Err(ProofError::PrivateKey);
    }
    let jwk: Jwk = serde_json::from_value(raw_jwk.clone())
        .map_err(|e| ProofError::BadKey(format!("its `jwk` header is not a usable key: {e}")))?;
    key_fits(&jwk, alg).map_err(ProofError::BadKey)?;
    let found = jwk_thumbprint(&jwk).map_err(ProofError::BadKey)?;
    if found != check.jkt {
        return Err(ProofError::WrongKey {
            found,
            expected: check.jkt.to_string(),
        });
    }
    let key = DecodingKey::from_jwk(&jwk)
        .map_err(|e| ProofError::BadKey(format!("the key is unusable: {e}")))?;
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.iss = None;
    validation.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(proof, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_) => ProofError::BadSignature,
                ErrorKind::InvalidAlgorithm => ProofError::Algorithm(alg_name(alg).into()),
                _ => ProofError::Malformed(e.to_string()),
            }
        })?;
    let claims = data.claims;
    let string = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .ok_or(ProofError::MissingClaim(name))
    };
    let number = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_i64)
            .ok_or(ProofError::MissingClaim(name))
    };
    let b = &check.binding;
    let task_id = number("task_id")?;
    if task_id != b.task_id {
        return Err(ProofError::Mismatch(format!(
            "task {task_id}, not task {}",
            b.task_id
        )));
    }
    if string("target")? != b.target {
        return Err(ProofError::Mismatch(format!(
            "another target than `{}`",
            b.target
        )));
    }
    if string("type")? != b.kind {
        return Err(ProofError::Mismatch(format!(
            "another type than `{}`",
            b.kind
        )));
    }
    if string("script_sha256")? != sha256_b64(b.script.as_bytes()) {
        return Err(ProofError::Mismatch(
            "another script: the task's script is not the one its creator signed".into(),
        ));
    }
    if string("ath")? != sha256_b64(check.token.trim().as_bytes()) {
        return Err(ProofError::Mismatch(
            "another identity token than the task's".into(),
        ));
    }
    let jti = string("jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(ProofError::MissingClaim("jti"));
    }
    let iat = number("iat")?;
    let now = chrono::Utc::now().timestamp();
    let leeway = LEEWAY_SECS as i64;
    if iat > now + leeway {
        return Err(ProofError::Time(format!(
            "was made in the future ({})",
            time_text(iat)
        )));
    }
    let max_age = i64::try_from(check.max_age_secs).unwrap_or(i64::MAX);
    if now.saturating_sub(iat) > max_age.saturating_add(leeway) {
        return Err(ProofError::Time(format!(
            "was made at {}, more than {} s ago",
            time_text(iat),
            check.max_age_secs
        )));
    }
    if let Some(created) = check.not_before
        && iat < created - leeway
    {
        return Err(ProofError::Time(format!(
            "was made at {}, before the task was created at {}",
            time_text(iat),
            time_text(created)
        )));
    }
    Ok(VerifiedProof {
        jti: jti.to_string(),
        iat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thumbprint_of_the_rfc_7638_example_key_is_the_rfcs() {
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn keys_that_cannot_sign_proofs_get_a_reason() {
        let e = ProofKey::from_pem("hello").unwrap_err();
        assert!(e.contains("not a PEM private key"), "{e}");
        let e = ProofKey::from_pem(
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(e.contains("SEC1"), "{e}");
        let e = ProofKey::from_pem(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(e.contains("encrypted"), "{e}");
        let e = ProofKey::from_pem("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n")
            .unwrap_err();
        assert!(e.contains("base64"), "{e}");
        let e =
            ProofKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err();
        assert!(e.contains("not a P-256"), "{e}");
    }
}
