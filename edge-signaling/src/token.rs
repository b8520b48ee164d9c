//! Room tokens: compact JWS (JWT) with HS256, claims `room`, `sub`, `exp`.
//! Hand-written (≈60 lines) because the common JWT crates pull in ring or
//! other C-backed crypto, which the wasm builds of the core cannot take.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a room token grants: one identity in one room until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Room the token admits to; must equal the `join`'s room.
    pub room: String,
    /// The participant's identity (display name / user id in the app).
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: u64,
}

/// Why a room token was refused: `expired_token` for [`TokenError::Expired`],
/// `bad_token` for the rest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header.
    #[error("token is not a JWT")]
    Malformed,
    /// The header's `alg` is not HS256 (`none` included: no downgrade).
    #[error("token must be signed with HS256")]
    WrongAlgorithm,
    /// The signature does not match under the API secret.
    #[error("token signature does not verify")]
    BadSignature,
    /// The claims lack `room`, `sub` or `exp`, or `sub` is not 1–256 bytes.
    #[error("token claims are invalid: {0}")]
    BadClaims(String),
    /// Genuine, but `exp` has passed.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The token's expiry, unix seconds.
        exp: u64,
        /// The time it was checked at, unix seconds.
        now: u64,
    },
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
const MAX_IDENTITY_LEN: usize = 256;

/// Sign claims into a token.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    let head = B64URL.encode(HEADER);
    let body = B64URL.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signing_input = format!("{head}.{body}");
    let sig = B64URL.encode(mac(secret, signing_input.as_bytes()));
    format!("{signing_input}.{sig}")
}

fn mac(secret: &[u8], input: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    m.update(input);
    m.finalize().into_bytes().to_vec()
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Verify signature, algorithm and expiry; return the claims.
pub fn verify(secret: &[u8], token: &str, now_unix: u64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = B64URL
        .decode(head)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(TokenError::Malformed)?;
    // Only HS256: accepting "none" or letting the token choose is the classic
    // JWT downgrade hole.
    if header.alg != "HS256" {
        return Err(TokenError::WrongAlgorithm);
    }
    let sig = B64URL.decode(sig).map_err(|_| TokenError::Malformed)?;
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    m.update(head.as_bytes());
    m.update(b".");
    m.update(body.as_bytes());
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let body = B64URL.decode(body).map_err(|_| TokenError::Malformed)?;
    let claims: Claims =
        serde_json::from_slice(&body).map_err(|e| TokenError::BadClaims(e.to_string()))?;
    if claims.sub.is_empty() || claims.sub.len() > MAX_IDENTITY_LEN {
        return Err(TokenError::BadClaims(format!(
            "sub must be 1..={MAX_IDENTITY_LEN} bytes"
        )));
    }
    if claims.exp <= now_unix {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now: now_unix,
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            room: "r".into(),
            sub: "alice".into(),
            exp: 2000,
        }
    }

    #[test]
    fn round_trip() {
        let t = mint(b"k", &claims());
        assert_eq!(verify(b"k", &t, 1000), Ok(claims()));
    }

    #[test]
    fn known_vector_from_an_independent_implementation() {
        // Python: hmac.new(b"k", signing_input, sha256) over the same header and
        // claims; checks we sign exactly what other JWT libraries sign.
        let t = mint(b"k", &claims());
        assert_eq!(
            t,
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb29tIjoiciIsInN1YiI6ImFsaWNlIiwiZXhwIjoyMDAwfQ.MKcCAi5mC8faT3d1dm3eIYciYAa7LdbODkssmeWXVKg"
        );
    }

    #[test]
    fn refuses_forged_expired_and_downgraded_tokens() {
        let t = mint(b"k", &claims());
        assert_eq!(verify(b"other", &t, 1000), Err(TokenError::BadSignature));
        assert!(matches!(
            verify(b"k", &t, 2000),
            Err(TokenError::Expired { .. })
        ));
        assert_eq!(verify(b"k", "a.b", 0), Err(TokenError::Malformed));
        let none_head = B64URL.encode(r#"{"alg":"none"}"#);
        let body = t.split('.').nth(1).unwrap();
        assert_eq!(
            verify(b"k", &format!("{none_head}.{body}."), 0),
            Err(TokenError::WrongAlgorithm)
        );
        // Tampered claims with the old signature.
        let evil = B64URL.encode(r#"{"room":"r","sub":"mallory","exp":2000}"#);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(
            verify(b"k", &format!("{}.{evil}.{}", parts[0], parts[2]), 0),
            Err(TokenError::BadSignature)
        );
    }
}
