//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the verifier's
//! parsing and checks on untrusted input, without the network.

use crate::{JwtError, VerifiedToken, VerifierConfig};

/// Verifies `token` against the key set `jwks` (a JWKS document's bytes) exactly as
/// [`crate::JwksVerifier::verify`] does after fetching it: header (`alg`, `kid`,
/// `crit`), JWKS parsing, key choice by `kid`, key fit, signature and claims.
pub fn verify_with_jwks(
    token: &str,
    jwks: &[u8],
    cfg: &VerifierConfig,
) -> Result<VerifiedToken, JwtError> {
    crate::jwks::verify_with_document(token, jwks, cfg)
}
