//! AWS Signature Version 4 for any method, path and query: what Secrets Manager
//! (`POST /` with a JSON body) and S3 (`PUT`/`POST`/`GET` on `/bucket/key?query`) need.
//! A few lines of canonicalisation over HMAC-SHA256 instead of the AWS SDK, which would
//! cost minutes of build for a handful of requests.

use super::credentials::AwsCredentials;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// One request to sign. `url`'s path must already be percent-encoded the way it is sent
/// (S3 signs the path as sent; [`uri_encode`] builds such paths).
pub struct SignRequest<'a> {
    pub method: &'a str,
    pub url: &'a reqwest::Url,
    /// Headers to sign besides `host`, `x-amz-date`, `x-amz-content-sha256` and
    /// `x-amz-security-token`, which are added here.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body.
    pub payload_sha256: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// The headers to add to the request: `x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token` (with a session token) and `authorization`.
pub fn sign(
    req: &SignRequest<'_>,
    creds: &AwsCredentials,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = now.format("%Y%m%d").to_string();
    let mut added = vec![
        ("x-amz-date".to_string(), amz_date.clone()),
        (
            "x-amz-content-sha256".to_string(),
            req.payload_sha256.to_string(),
        ),
    ];
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token".to_string(), token.clone()));
    }
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .chain(added.iter().cloned())
        .collect();
    headers.push(("host".into(), host_header(req.url)));
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let path = match req.url.path() {
        "" => "/",
        p => p,
    };
    let canonical_request = format!(
        "{}\n{path}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        req.method,
        canonical_query(req.url),
        req.payload_sha256
    );
    let scope = format!("{date}/{}/{}/aws4_request", req.region, req.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac(&k_date, req.region.as_bytes());
    let k_service = hmac(&k_region, req.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));
    added.push((
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    added
}

/// Query parameters sorted by name then value, both encoded (`uploads` → `uploads=`).
fn canonical_query(url: &reqwest::Url) -> String {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (uri_encode(&k, true), uri_encode(&v, true)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// AWS's URI encoding: everything but `A-Za-z0-9-_.~` as `%XX`, `/` kept unless
/// `encode_slash`.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `host[:port]`, the port only when it is not the scheme's default (as HTTP clients send it).
pub fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn creds() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expires_at: None,
        }
    }

    // The AWS documentation's example: GET of a text object from `examplebucket` with a
    // Range header, signed on 2013-05-24 with the example key.
    #[test]
    fn s3_get_object_matches_the_aws_documentation_example() {
        let creds = AwsCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expires_at: None,
        };
        let url = reqwest::Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap();
        let now = Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap();
        let empty = sha256_hex(b"");
        let h = sign(
            &SignRequest {
                method: "GET",
                url: &url,
                headers: &[("Range", "bytes=0-9")],
                payload_sha256: &empty,
                region: "us-east-1",
                service: "s3",
            },
            &creds,
            now,
        );
        let auth = &h.last().unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn query_is_sorted_and_encoded_and_session_token_is_signed() {
        let url = reqwest::Url::parse("http://127.0.0.1:9000/b/k.log?uploadId=a%2Bb&partNumber=2")
            .unwrap();
        assert_eq!(canonical_query(&url), "partNumber=2&uploadId=a%2Bb");
        let url = reqwest::Url::parse("http://127.0.0.1:9000/b/k.log?uploads").unwrap();
        assert_eq!(canonical_query(&url), "uploads=");
        let mut c = creds();
        c.session_token = Some("TOKEN".into());
        let h = sign(
            &SignRequest {
                method: "POST",
                url: &url,
                headers: &[],
                payload_sha256: &sha256_hex(b""),
                region: "eu-west-1",
                service: "s3",
            },
            &c,
            Utc::now(),
        );
        assert!(
            h.iter()
                .any(|(k, v)| k == "x-amz-security-token" && v == "TOKEN")
        );
        let auth = &h.last().unwrap().1;
        assert!(
            auth.contains(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token"
            ),
            "{auth}"
        );
    }

    #[test]
    fn uri_encoding_keeps_unreserved_characters_only() {
        assert_eq!(uri_encode("a b/c+d~e", false), "a%20b/c%2Bd~e");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
    }
}
