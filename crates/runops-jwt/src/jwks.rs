//! The key set: fetched from the identity provider, cached, fetched again on an unknown
//! `kid` (rate-limited) or when it is older than [`JWKS_MAX_AGE`].

use crate::{
    JWKS_FETCH_TIMEOUT, JWKS_MAX_AGE, JWKS_MIN_REFETCH_INTERVAL, JwtError, MAX_JWKS_BYTES,
    VerifiedToken, VerifierConfig, accepted_algorithm, alg_name, key_fits, parse_header,
    verify_with_key,
};
use jsonwebtoken::jwk::Jwk;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Verifies tokens against one identity provider's key set. Cheap to share (`Arc`);
/// concurrent verifications wait for one fetch instead of each fetching.
pub struct JwksVerifier {
    cfg: VerifierConfig,
    http: reqwest::Client,
    cache: Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<Jwk>,
    /// When the keys were last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a fetch was last attempted (successful or not): the rate limit's clock.
    attempted_at: Option<Instant>,
}

impl KeyCache {
    fn find(&self, kid: Option<&str>, alg: jsonwebtoken::Algorithm) -> Option<Jwk> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid))
                .cloned(),
            None => {
                // No kid: only unambiguous when exactly one key could verify this algorithm.
                let fitting: Vec<&Jwk> = self
                    .keys
                    .iter()
                    .filter(|k| key_fits(k, alg).is_ok())
                    .collect();
                match fitting.as_slice() {
                    [only] => Some((*only).clone()),
                    _ => None,
                }
            }
        }
    }
}

impl JwksVerifier {
    pub fn new(cfg: VerifierConfig) -> Result<JwksVerifier, String> {
        let url = cfg.jwks_url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "the JWKS URL `{url}` must start with https:// (or http:// on a trusted network)"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .user_agent(concat!("runops/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for the JWKS: {e}"))?;
        Ok(JwksVerifier {
            cfg: VerifierConfig {
                jwks_url: url.to_string(),
                ..cfg
            },
            http,
            cache: Mutex::new(KeyCache::default()),
        })
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.cfg
    }

    /// Verifies `token`: accepted algorithm, key by `kid` (fetching the key set when
    /// needed), signature, `exp`/`nbf`, issuer and audience when configured.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, JwtError> {
        let token = token.trim();
        let header = parse_header(token)?;
        let alg = accepted_algorithm(&header.alg)?;
        let jwk = self.key_for(header.kid.as_deref(), alg).await?;
        verify_with_key(token, alg, &jwk, &self.cfg)
    }

    /// The key named `kid` (or the only fitting key when the token names none).
    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: jsonwebtoken::Algorithm,
    ) -> Result<Jwk, JwtError> {
        let arrived = Instant::now();
        let mut cache = self.cache.lock().await;
        let stale = cache.fetched_at.is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE);
        if stale {
            // A failure here is fatal only when nothing is cached yet.
            if let Err(e) = self.refresh(&mut cache).await
                && cache.fetched_at.is_none()
            {
                return Err(e);
            }
        }
        if let Some(k) = cache.find(kid, alg) {
            return Ok(k);
        }
        if !stale {
            // An unknown kid: the provider may have rotated its keys. Ask again, unless
            // another caller did while we waited for the lock, and never more often
            // than the rate limit allows (wait for it instead).
            let fetched_meanwhile = cache.attempted_at.is_some_and(|t| t > arrived);
            if !fetched_meanwhile {
                if let Some(last) = cache.attempted_at {
                    tokio::time::sleep_until(last + JWKS_MIN_REFETCH_INTERVAL).await;
                }
                self.refresh(&mut cache).await?;
            }
            if let Some(k) = cache.find(kid, alg) {
                return Ok(k);
            }
        }
        Err(match kid {
            Some(kid) => JwtError::UnknownKey {
                kid: kid.to_string(),
                url: self.cfg.jwks_url.clone(),
            },
            None => JwtError::NoKeyId {
                alg: alg_name(alg).into(),
                url: self.cfg.jwks_url.clone(),
            },
        })
    }

    async fn refresh(&self, cache: &mut KeyCache) -> Result<(), JwtError> {
        cache.attempted_at = Some(Instant::now());
        let keys = self.fetch().await?;
        tracing::info!(url = %self.cfg.jwks_url, keys = keys.len(), "fetched the identity provider's key set");
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        Ok(())
    }

    async fn fetch(&self) -> Result<Vec<Jwk>, JwtError> {
        let url = &self.cfg.jwks_url;
        let unavailable = |detail: String| JwtError::JwksUnavailable {
            url: url.clone(),
            detail,
        };
        let mut resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("it answered HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| unavailable(e.to_string()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(unavailable(format!(
                    "the document is larger than {MAX_JWKS_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body).map_err(unavailable)
    }
}

/// [`JwksVerifier::verify`] with the key set given as a JWKS document instead of
/// fetched: the same header checks, JWKS parsing, key choice and token checks.
#[cfg(feature = "fuzzing")]
pub(crate) fn verify_with_document(
    token: &str,
    jwks: &[u8],
    cfg: &VerifierConfig,
) -> Result<VerifiedToken, JwtError> {
    let token = token.trim();
    let header = parse_header(token)?;
    let alg = accepted_algorithm(&header.alg)?;
    let keys = parse_jwks(jwks).map_err(|detail| JwtError::JwksUnavailable {
        url: cfg.jwks_url.clone(),
        detail,
    })?;
    let cache = KeyCache {
        keys,
        ..KeyCache::default()
    };
    let jwk = cache
        .find(header.kid.as_deref(), alg)
        .ok_or_else(|| JwtError::UnknownKey {
            kid: header.kid.clone().unwrap_or_default(),
            url: cfg.jwks_url.clone(),
        })?;
    verify_with_key(token, alg, &jwk, cfg)
}

/// The usable keys of a JWKS document. Keys this crate cannot read (other key types,
/// odd parameters) are skipped, not fatal: providers publish all sorts of keys.
fn parse_jwks(body: &[u8]) -> Result<Vec<Jwk>, String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the document is not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the document has no `keys` list (is this a JWKS URL?)")?;
    Ok(keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_keys_are_skipped_and_non_jwks_documents_refused() {
        let doc = br#"{"keys":["garbage",{"kty":"EC","crv":"P-256","kid":"e","x":"AA","y":"AA"}]}"#;
        let keys = parse_jwks(doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].common.key_id.as_deref(), Some("e"));
        assert!(parse_jwks(b"{}").unwrap_err().contains("no `keys`"));
        assert!(parse_jwks(b"<html>").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn a_jwks_url_must_be_http() {
        let e = JwksVerifier::new(VerifierConfig {
            jwks_url: "file:///etc/keys".into(),
            issuer: None,
            audience: None,
        })
        .err()
        .unwrap();
        assert!(e.contains("https://"), "{e}");
    }
}
