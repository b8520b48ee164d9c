//! TURN REST credentials ("A REST API for access to TURN services",
//! draft-uberti-behave-turn-rest), as accepted by coturn's `use-auth-secret`:
//!
//! * username: `<expiry unix seconds>:<identity>`
//! * password: `base64(HMAC-SHA1(secret, username))`
//!
//! Signaling mints them; a relay recomputes the password from the username and
//! the shared secret, so relays need no per-user state and no call back to
//! signaling.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The TURN identity of a caller with room-token identity `identity`: the
/// first 8 bytes of its SHA-256, hex. Every credential minted for one
/// identity under one token carries the same username, so a relay's quota
/// per username is a quota per caller (not per join), and the relay learns
/// a stable pseudonym, not the app's user id.
pub fn turn_identity(identity: &str) -> String {
    hex::encode(&Sha256::digest(identity.as_bytes())[..8])
}

/// A username/credential pair as handed to a browser in `iceServers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `<expiry unix seconds>:<identity>`; the relay reads the expiry from it.
    pub username: String,
    /// The password: `base64(HMAC-SHA1(secret, username))`.
    pub credential: String,
}

/// Why [`check_expiry`] refused a REST username.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not `<expiry>:<identity>` with a numeric expiry and a non-empty identity.
    #[error("username is not of the form <expiry>:<identity>")]
    Malformed,
    /// The expiry has passed.
    #[error("credential expired at {expiry} (now {now})")]
    Expired {
        /// When the credential expired, unix seconds.
        expiry: u64,
        /// The time it was checked at, unix seconds.
        now: u64,
    },
}

/// Mint a credential for `identity` that expires at `expiry_unix` (seconds).
pub fn mint(secret: &[u8], identity: &str, expiry_unix: u64) -> TurnCredential {
    let username = format!("{expiry_unix}:{identity}");
    let credential = password(secret, &username);
    TurnCredential {
        username,
        credential,
    }
}

/// The password for a REST username under `secret`.
pub fn password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// Parse the expiry out of a REST username and check it against `now_unix`.
/// Returns the expiry on success.
pub fn check_expiry(username: &str, now_unix: u64) -> Result<u64, CredentialError> {
    let (expiry, identity) = username.split_once(':').ok_or(CredentialError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    if identity.is_empty() {
        return Err(CredentialError::Malformed);
    }
    if expiry <= now_unix {
        return Err(CredentialError::Expired {
            expiry,
            now: now_unix,
        });
    }
    Ok(expiry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_reference_hmac_sha1() {
        // Reference value computed independently with:
        //   printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        let c = mint(b"secret", "alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.credential, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
        assert_eq!(c.credential.len(), 28, "base64 of a 20-byte SHA-1 MAC");
        assert_ne!(c.credential, password(b"other", "1700000000:alice"));
    }

    #[test]
    fn expiry_is_enforced() {
        assert_eq!(check_expiry("200:bob", 100), Ok(200));
        assert_eq!(
            check_expiry("100:bob", 100),
            Err(CredentialError::Expired {
                expiry: 100,
                now: 100
            })
        );
        assert_eq!(check_expiry("bob", 0), Err(CredentialError::Malformed));
        assert_eq!(check_expiry("x:bob", 0), Err(CredentialError::Malformed));
        assert_eq!(check_expiry("200:", 0), Err(CredentialError::Malformed));
    }
}
