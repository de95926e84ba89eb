//! Encryption at rest of the targets' write-only config (`runops` secrets provider)
//! and of the webhooks' signing secrets.
//!
//! A config is sealed with ChaCha20-Poly1305 under the server's 32-byte secret key:
//! `RUNOPS_SECRET_KEY` (base64), or a key generated once into `<data_dir>/secret.key`
//! (mode 0600). Each seal has a fresh random nonce; the org id and target name are the
//! associated data, so a sealed config copied onto another target's row does not open.
//! Stored form: `1 || nonce (12) || ciphertext+tag`. Plain values exist only in memory,
//! while a request is handled and inside the task offer sent to the agent; they are never
//! logged and never returned by a read.

use anyhow::Context;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::collections::BTreeMap;
use std::path::Path;

/// The environment variable holding the key (base64 of 32 bytes).
pub const SECRET_KEY_ENV: &str = "RUNOPS_SECRET_KEY";
/// The file in the data dir the key is generated into when the variable is not set.
pub const SECRET_KEY_FILE: &str = "secret.key";
/// Format byte of a sealed config, so the scheme can change later.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// Seals and opens configs with the server's key. `Debug` does not show the key.
pub struct ConfigSealer {
    cipher: ChaCha20Poly1305,
    fingerprint: String,
}

impl std::fmt::Debug for ConfigSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigSealer(..)")
    }
}

impl ConfigSealer {
    pub fn from_key(key: &[u8; 32]) -> ConfigSealer {
        ConfigSealer {
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
            fingerprint: fingerprint_of(key),
        }
    }

    /// A fingerprint of the key (HMAC-SHA-256 of a fixed label, 16 bytes in hex): tells
    /// two keys apart without revealing either. Replicas sharing a database compare it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key from `env_value` (the variable's value, when set), or the one in
    /// `<data_dir>/secret.key`, generated (0600) on first start.
    pub fn load(env_value: Option<&str>, data_dir: &Path) -> anyhow::Result<ConfigSealer> {
        if let Some(text) = env_value.map(str::trim).filter(|t| !t.is_empty()) {
            let key = decode_key(text).with_context(|| {
                format!("{SECRET_KEY_ENV} must be the base64 of 32 random bytes (`openssl rand -base64 32`)")
            })?;
            return Ok(ConfigSealer::from_key(&key));
        }
        let path = data_dir.join(SECRET_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = decode_key(text.trim()).with_context(|| {
                    format!("{} does not hold a valid key (base64 of 32 bytes); restore it from a backup — configs sealed with it cannot be opened without it", path.display())
                })?;
                Ok(ConfigSealer::from_key(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key)
                    .map_err(|e| anyhow::anyhow!("no randomness for the secret key: {e}"))?;
                write_new_key_file(&path, &key)?;
                tracing::info!(file = %path.display(), "generated the server's secret key for target configs; back it up with the database");
                Ok(ConfigSealer::from_key(&key))
            }
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Seals `config` for the target `name` of org `org_id`.
    pub fn seal(
        &self,
        org_id: i64,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> anyhow::Result<Vec<u8>> {
        let plain = serde_json::to_vec(config)?;
        self.seal_bytes(&plain, &associated_data(org_id, name))
            .map_err(|_| anyhow::anyhow!("cannot encrypt the target config"))
    }

    /// Opens what [`ConfigSealer::seal`] produced for the same org and target.
    pub fn open(
        &self,
        org_id: i64,
        name: &str,
        sealed: &[u8],
    ) -> anyhow::Result<BTreeMap<String, String>> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT_V1 {
            anyhow::bail!("the stored config of target `{name}` has an unknown format");
        }
        let plain = self
            .open_bytes(sealed, &associated_data(org_id, name))
            .map_err(|_| {
                anyhow::anyhow!(
                    "the stored config of target `{name}` cannot be decrypted: the server's secret key ({SECRET_KEY_ENV} or {SECRET_KEY_FILE}) is not the one it was stored with"
                )
            })?;
        Ok(serde_json::from_slice(&plain)?)
    }

    /// Seals a webhook's signing secret (the server must read it back to sign, so it
    /// is sealed, not hashed), bound to the org and the webhook's URL.
    pub fn seal_webhook_secret(
        &self,
        org_id: i64,
        url: &str,
        secret: &str,
    ) -> anyhow::Result<Vec<u8>> {
        self.seal_bytes(secret.as_bytes(), &webhook_associated_data(org_id, url))
            .map_err(|_| anyhow::anyhow!("cannot encrypt the webhook secret"))
    }

    /// Opens what [`ConfigSealer::seal_webhook_secret`] produced for the same org and URL.
    pub fn open_webhook_secret(
        &self,
        org_id: i64,
        url: &str,
        sealed: &[u8],
    ) -> anyhow::Result<String> {
        let plain = self
            .open_bytes(sealed, &webhook_associated_data(org_id, url))
            .map_err(|_| {
                anyhow::anyhow!(
                    "the stored secret of the webhook to {url} cannot be decrypted: the server's secret key ({SECRET_KEY_ENV} or {SECRET_KEY_FILE}) is not the one it was stored with"
                )
            })?;
        String::from_utf8(plain)
            .map_err(|_| anyhow::anyhow!("the stored webhook secret is not text"))
    }

    /// Seals text held for a task (its creator's identity token or proof, while the
    /// task waits for dispatch in a database that replicas share), bound to the task.
    pub fn seal_held(&self, task_id: i64, what: &str, text: &str) -> anyhow::Result<Vec<u8>> {
        self.seal_bytes(text.as_bytes(), &held_associated_data(task_id, what))
            .map_err(|_| anyhow::anyhow!("cannot encrypt the held {what}"))
    }

    /// Opens what [`ConfigSealer::seal_held`] produced for the same task and `what`.
    pub fn open_held(&self, task_id: i64, what: &str, sealed: &[u8]) -> anyhow::Result<String> {
        let plain = self
            .open_bytes(sealed, &held_associated_data(task_id, what))
            .map_err(|_| {
                anyhow::anyhow!(
                    "the held {what} of task {task_id} cannot be decrypted: this replica's {SECRET_KEY_ENV} is not the one it was stored with"
                )
            })?;
        String::from_utf8(plain).map_err(|_| anyhow::anyhow!("the held {what} is not text"))
    }

    /// Seals the identity provider's ID token of a web session opened with SSO, bound to
    /// the session (the SHA-256 of its cookie secret): copied onto another session's row,
    /// it does not open.
    pub fn seal_session_token(&self, session: &[u8; 32], token: &str) -> anyhow::Result<Vec<u8>> {
        self.seal_bytes(token.as_bytes(), &session_associated_data(session))
            .map_err(|_| anyhow::anyhow!("cannot encrypt the session's identity token"))
    }

    /// Opens what [`ConfigSealer::seal_session_token`] produced for the same session.
    pub fn open_session_token(&self, session: &[u8; 32], sealed: &[u8]) -> anyhow::Result<String> {
        let plain = self
            .open_bytes(sealed, &session_associated_data(session))
            .map_err(|_| {
                anyhow::anyhow!(
                    "the identity token of a web session cannot be decrypted: the server's secret key ({SECRET_KEY_ENV} or {SECRET_KEY_FILE}) is not the one it was stored with"
                )
            })?;
        String::from_utf8(plain)
            .map_err(|_| anyhow::anyhow!("the session's identity token is not text"))
    }

    /// `1 || nonce || ciphertext+tag` of `plain` with `aad`.
    fn seal_bytes(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, ()> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| ())?;
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
            .map_err(|_| ())?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plain text of [`ConfigSealer::seal_bytes`]'s output, or `Err` when the
    /// format, the key or `aad` does not match.
    fn open_bytes(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, ()> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT_V1 {
            return Err(());
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad,
                },
            )
            .map_err(|_| ())
    }
}

fn fingerprint_of(key: &[u8; 32]) -> String {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(b"runops secret key fingerprint v1");
    mac.finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn associated_data(org_id: i64, name: &str) -> Vec<u8> {
    format!("runops target config\0{org_id}\0{name}").into_bytes()
}

fn held_associated_data(task_id: i64, what: &str) -> Vec<u8> {
    format!("runops held {what}\0{task_id}").into_bytes()
}

fn session_associated_data(session: &[u8; 32]) -> Vec<u8> {
    let mut aad = b"runops web session token\0".to_vec();
    aad.extend_from_slice(session);
    aad
}

fn webhook_associated_data(org_id: i64, url: &str) -> Vec<u8> {
    format!("runops webhook secret\0{org_id}\0{url}").into_bytes()
}

fn decode_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .map_err(|_| anyhow::anyhow!("not base64"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("{} bytes instead of 32", b.len()))
}

fn write_new_key_file(path: &Path, key: &[u8; 32]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the secret key file {}", path.display()))?;
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config() -> BTreeMap<String, String> {
        [("PG_PASS".to_string(), "hunter2-value".to_string())].into()
    }

    #[test]
    fn sealed_config_opens_only_for_its_target_and_key() {
        let s = ConfigSealer::from_key(&[7; 32]);
        let sealed = s.seal(1, "db", &config()).unwrap();
        assert!(
            !sealed.windows(6).any(|w| w == b"hunter"),
            "plain text in the sealed form"
        );
        assert_eq!(s.open(1, "db", &sealed).unwrap(), config());
        assert!(s.open(1, "other", &sealed).is_err());
        assert!(s.open(2, "db", &sealed).is_err());
        let e = ConfigSealer::from_key(&[8; 32])
            .open(1, "db", &sealed)
            .unwrap_err();
        assert!(
            e.to_string().contains("is not the one it was stored with"),
            "{e}"
        );
        // Two seals of the same config differ (fresh nonce).
        assert_ne!(sealed, s.seal(1, "db", &config()).unwrap());
    }

    #[test]
    fn a_sessions_identity_token_opens_only_for_that_session() {
        let s = ConfigSealer::from_key(&[7; 32]);
        let sealed = s.seal_session_token(&[1; 32], "eyJ.payload.sig").unwrap();
        assert!(!sealed.windows(3).any(|w| w == b"eyJ"), "plain text sealed");
        assert_eq!(
            s.open_session_token(&[1; 32], &sealed).unwrap(),
            "eyJ.payload.sig"
        );
        assert!(s.open_session_token(&[2; 32], &sealed).is_err());
        assert!(
            ConfigSealer::from_key(&[8; 32])
                .open_session_token(&[1; 32], &sealed)
                .is_err()
        );
    }

    #[test]
    fn webhook_secret_opens_only_for_its_org_and_url() {
        let s = ConfigSealer::from_key(&[7; 32]);
        let sealed = s
            .seal_webhook_secret(1, "https://h.example/x", "whsec_abc123")
            .unwrap();
        assert!(
            !sealed.windows(6).any(|w| w == b"whsec_"),
            "plain text sealed"
        );
        assert_eq!(
            s.open_webhook_secret(1, "https://h.example/x", &sealed)
                .unwrap(),
            "whsec_abc123"
        );
        assert!(
            s.open_webhook_secret(1, "https://evil.example/x", &sealed)
                .is_err()
        );
        assert!(
            s.open_webhook_secret(2, "https://h.example/x", &sealed)
                .is_err()
        );
        // A target config and a webhook secret never open as each other.
        assert!(s.open(1, "https://h.example/x", &sealed).is_err());
    }

    #[test]
    fn key_is_generated_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = ConfigSealer::load(None, dir.path()).unwrap();
        let file = dir.path().join(SECRET_KEY_FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = a.seal(1, "t", &config()).unwrap();
        let b = ConfigSealer::load(None, dir.path()).unwrap();
        assert_eq!(b.open(1, "t", &sealed).unwrap(), config());
    }

    #[test]
    fn key_from_the_environment_must_be_32_bytes_of_base64() {
        let dir = tempfile::tempdir().unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
        assert!(ConfigSealer::load(Some(&key), dir.path()).is_ok());
        assert!(!dir.path().join(SECRET_KEY_FILE).exists());
        let e = ConfigSealer::load(Some("c2hvcnQ="), dir.path()).unwrap_err();
        assert!(
            format!("{e:#}").contains("RUNOPS_SECRET_KEY must be the base64 of 32"),
            "{e:#}"
        );
    }
}
