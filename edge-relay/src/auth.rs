//! Long-term credential authentication (RFC 8489 §9.2) with TURN REST
//! usernames, and stateless nonces.
//!
//! Passwords are never stored: the password for `<expiry>:<identity>` is
//! recomputed from the fleet secret ([`tern_common::credentials::password`]),
//! so any relay in any region accepts credentials minted by signaling.
//!
//! Nonces are stateless too: `hex(expiry) || hex(HMAC(nonce_key, expiry,
//! client address))[..20]`. The relay stores nothing per unauthenticated
//! client (an Allocate flood costs no memory), a nonce is only good from the
//! address it was handed to, and "stale" is just `expiry < now`.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use tern_common::credentials;

use crate::stun::{attr, Message};

/// What an authenticated request proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    /// MD5(username:realm:password): also keys the MESSAGE-INTEGRITY of our
    /// answers.
    pub key: [u8; 16],
}

/// Why a request is not authenticated, mapped by the engine to an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No MESSAGE-INTEGRITY: the first leg of the handshake (401 + REALM/NONCE).
    #[error("request carries no MESSAGE-INTEGRITY")]
    Challenge,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE (400).
    #[error("MESSAGE-INTEGRITY without USERNAME, REALM and NONCE")]
    Incomplete,
    /// Nonce expired, forged or from another address (438 + fresh nonce).
    #[error("stale or foreign nonce")]
    StaleNonce,
    /// Malformed or expired REST username, wrong realm, or wrong MAC (401).
    #[error("credentials rejected: {0}")]
    Rejected(&'static str),
}

/// Checks requests against the shared secret. Plain data, no IO.
#[derive(Clone)]
pub struct Authenticator {
    secret: Vec<u8>,
    realm: String,
    nonce_key: [u8; 32],
    nonce_lifetime_secs: u64,
}

impl std::fmt::Debug for Authenticator {
    // Keep secrets out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(
        secret: Vec<u8>,
        realm: String,
        nonce_key: [u8; 32],
        nonce_lifetime_secs: u64,
    ) -> Self {
        Authenticator {
            secret,
            realm,
            nonce_key,
            nonce_lifetime_secs,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A fresh nonce for `client`, valid until `unix_now + lifetime`.
    pub fn nonce(&self, unix_now: u64, client: SocketAddr) -> String {
        let expiry = unix_now + self.nonce_lifetime_secs;
        format!("{expiry:016x}{}", self.nonce_tag(expiry, client))
    }

    fn nonce_tag(&self, expiry: u64, client: SocketAddr) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.nonce_key).expect("any key length");
        mac.update(&expiry.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let tag = mac.finalize().into_bytes();
        tag[..10].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn nonce_is_valid(&self, nonce: &[u8], unix_now: u64, client: SocketAddr) -> bool {
        let Ok(nonce) = std::str::from_utf8(nonce) else {
            return false;
        };
        if nonce.len() != 36 || !nonce.is_char_boundary(16) {
            return false;
        }
        let Ok(expiry) = u64::from_str_radix(&nonce[..16], 16) else {
            return false;
        };
        // Not constant time: the tag binds public data only, and a forged tag
        // gains nothing beyond what a real nonce (free to obtain) gives.
        expiry > unix_now && nonce[16..] == self.nonce_tag(expiry, client)
    }

    /// Authenticate a request per RFC 8489 §9.2.4, in the RFC's order.
    pub fn authenticate(
        &self,
        msg: &Message<'_>,
        unix_now: u64,
        client: SocketAddr,
    ) -> Result<Credentials, AuthError> {
        if !msg.has_integrity() {
            return Err(AuthError::Challenge);
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            return Err(AuthError::Incomplete);
        };
        if !self.nonce_is_valid(nonce, unix_now, client) {
            return Err(AuthError::StaleNonce);
        }
        let username =
            std::str::from_utf8(username).map_err(|_| AuthError::Rejected("username not UTF-8"))?;
        if realm != self.realm.as_bytes() {
            return Err(AuthError::Rejected("foreign realm"));
        }
        credentials::check_expiry(username, unix_now).map_err(|e| match e {
            credentials::CredentialError::Malformed => AuthError::Rejected("malformed username"),
            credentials::CredentialError::Expired { .. } => AuthError::Rejected("expired username"),
        })?;
        let password = credentials::password(&self.secret, username);
        let key = long_term_key(username, &self.realm, &password);
        if !msg.verify_integrity(&key) {
            return Err(AuthError::Rejected("bad MESSAGE-INTEGRITY"));
        }
        Ok(Credentials {
            username: username.to_owned(),
            key,
        })
    }
}

/// The long-term credential key: MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_term_key_is_md5_of_user_realm_password() {
        // Reference: printf 'user:realm:pass' | md5sum
        let k = long_term_key("user", "realm", "pass");
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "8493fbc53ba582fb4c044c456bdc40eb");
    }

    #[test]
    fn nonces_bind_address_and_expire() {
        let a = Authenticator::new(b"s".to_vec(), "tern".into(), [9; 32], 100);
        let c: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let n = a.nonce(1000, c);
        assert!(a.nonce_is_valid(n.as_bytes(), 1099, c));
        assert!(!a.nonce_is_valid(n.as_bytes(), 1100, c));
        assert!(!a.nonce_is_valid(n.as_bytes(), 1000, "192.0.2.1:1001".parse().unwrap()));
        assert!(!a.nonce_is_valid(b"garbage", 1000, c));
        assert!(!a.nonce_is_valid("é".repeat(18).as_bytes(), 1000, c));
    }
}
