//! Test support (feature `testing`): keys generated with the `openssl` CLI, a JWKS served
//! on 127.0.0.1 whose keys can be swapped (rotation) and whose fetches are counted, and
//! tokens signed right or wrong in every way the verifier must refuse.
//!
//! Panics on failure: this is for tests only.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A signing key and its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public key as a JWK (what the JWKS serves).
    pub jwk: Value,
    /// The public key in PEM, as an attacker would find it (for HS256 confusion).
    pub public_pem: Vec<u8>,
    /// The private key as unencrypted PKCS#8 PEM (what `runops login --dpop-key` reads).
    pub private_pem: Vec<u8>,
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is needed to generate test keys (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

impl TestKey {
    /// A fresh 2048-bit RSA key for RS256.
    pub fn rsa(kid: &str) -> TestKey {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        openssl(d, &["genrsa", "-out", "k.pem", "2048"]);
        let der = openssl(
            d,
            &["rsa", "-in", "k.pem", "-outform", "DER", "-traditional"],
        );
        let modulus = String::from_utf8(openssl(d, &["rsa", "-in", "k.pem", "-noout", "-modulus"]))
            .expect("utf8");
        let n = hex(modulus.trim().trim_start_matches("Modulus="));
        let public_pem = openssl(d, &["rsa", "-in", "k.pem", "-pubout"]);
        let private_pem = openssl(d, &["pkcs8", "-topk8", "-nocrypt", "-in", "k.pem"]);
        TestKey {
            kid: kid.to_string(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&der),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&n), "e": "AQAB"}),
            public_pem,
            private_pem,
        }
    }

    /// A fresh P-256 key for ES256.
    pub fn ec(kid: &str) -> TestKey {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "k.pem",
            ],
        );
        let der = openssl(
            d,
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "k.pem", "-outform", "DER",
            ],
        );
        let spki = openssl(d, &["pkey", "-in", "k.pem", "-pubout", "-outform", "DER"]);
        // The SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y.
        let point = &spki[spki.len() - 65..];
        assert_eq!(point[0], 4, "uncompressed EC point");
        let public_pem = openssl(d, &["pkey", "-in", "k.pem", "-pubout"]);
        let private_pem = openssl(d, &["pkcs8", "-topk8", "-nocrypt", "-in", "k.pem"]);
        TestKey {
            kid: kid.to_string(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&der),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..])}),
            public_pem,
            private_pem,
        }
    }

    /// Signs `claims` with this key, naming it in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }

    /// The RFC 7638 thumbprint of the public key: the `cnf.jkt` of a token bound to it.
    pub fn thumbprint(&self) -> String {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(self.jwk.clone()).expect("jwk");
        crate::proof::jwk_thumbprint(&jwk).expect("thumbprint")
    }

    /// This key as a task-proof key (P-256 keys only).
    pub fn proof_key(&self) -> crate::proof::ProofKey {
        crate::proof::ProofKey::from_pem(std::str::from_utf8(&self.private_pem).expect("pem"))
            .expect("a P-256 key")
    }

    /// Signs `claims` under exactly `header` (which must name this key's algorithm):
    /// for headers the `jsonwebtoken` encoder would not write (a malformed `crit`).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg).expect("sign");
        format!("{message}.{signature}")
    }

    /// Signs `claims` with this key but names `kid` in the header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// Claims of a token for `email` valid from now for `valid_secs` (negative: expired).
pub fn claims_for(email: &str, valid_secs: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": email, "email": email, "iat": now, "exp": now + valid_secs})
}

/// An unsigned token (`alg: none`) naming `kid`.
pub fn unsigned_token(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// The algorithm-confusion attack: an HS256 token whose HMAC secret is the public key
/// of `key` (which anyone can download), naming `key`'s kid.
pub fn hs256_with_public_key(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&key.public_pem)).expect("sign")
}

/// `token` with its payload replaced by `claims`, keeping the original signature.
pub fn tampered(token: &str, claims: &Value) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = b64(claims.to_string().as_bytes());
    parts.join(".")
}

/// A JWKS on `http://127.0.0.1:<port>/jwks.json` whose keys can be swapped while it runs.
pub struct JwksServer {
    pub url: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    pub fn start(keys: &[&TestKey]) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the JWKS server");
        let addr = listener.local_addr().expect("local addr");
        let served = Arc::new(Mutex::new(jwks_of(keys)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (served, fetches, stop) = (served.clone(), fetches.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let body = served.lock().map(|v| v.to_string()).unwrap_or_default();
                    fetches.fetch_add(1, Ordering::SeqCst);
                    answer(&mut conn, &body);
                }
            })
        };
        JwksServer {
            url: format!("http://{addr}/jwks.json"),
            keys: served,
            fetches,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    /// Replaces the served keys (a key rotation at the identity provider).
    pub fn set_keys(&self, keys: &[&TestKey]) {
        if let Ok(mut k) = self.keys.lock() {
            *k = jwks_of(keys);
        }
    }

    /// How many times the key set was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn jwks_of(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

fn answer(conn: &mut TcpStream, body: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
