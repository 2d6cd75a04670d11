//! `Authorization: Bearer <token>` on every MCM call, compared in constant time.

use crate::http::body::{json_error, Body};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::Response;
use sha2::{Digest, Sha256};

/// Passes when the request carries the token; else the 401 answer to send.
pub fn check(headers: &HeaderMap, token: &str) -> Result<(), Box<Response<Body>>> {
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let message = match given {
        None => "missing Authorization header: send `Authorization: Bearer <token>` (the host keeps its token in <data>/mcm-token)",
        Some(value) => match bearer(value) {
            Some(t) if same(t, token) => return Ok(()),
            Some(_) => "wrong MCM token",
            None => "the Authorization header must be `Bearer <token>`",
        },
    };
    let mut resp = json_error(401, message);
    resp.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mcm\""),
    );
    Err(Box::new(resp))
}

/// The token of a `Bearer <token>` value (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Compares two secrets without leaking where they differ, nor their lengths
/// (both are hashed first, then every byte of the digests is compared).
fn same(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        assert!(check(&headers("Bearer s3cret"), "s3cret").is_ok());
        assert!(check(&headers("bearer  s3cret "), "s3cret").is_ok());
        assert!(check(&headers("Bearer s3cre"), "s3cret").is_err());
        assert!(check(&headers("Basic s3cret"), "s3cret").is_err());
        assert!(check(&headers("Bearer"), "s3cret").is_err());
        assert!(check(&HeaderMap::new(), "s3cret").is_err());
    }
}
