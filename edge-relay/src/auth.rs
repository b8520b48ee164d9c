//! Long-term credential authentication (RFC 8489 §9.2) with TURN REST
//! usernames, stateless nonces, and password-algorithm negotiation.
//!
//! Passwords are never stored: the password for `<expiry>:<identity>` is
//! recomputed from the fleet secret ([`tern_common::credentials::password`]),
//! so any relay in any region accepts credentials minted by signaling. During
//! a secret rotation the previous secret is accepted too.
//!
//! Nonces are stateless and short (16 characters, so that a 401 fits the
//! amplification budget, see `engine`): `base64url(expiry_u32 || tag)` with
//! `tag = HMAC-SHA1(nonce_key, expiry, offered, client address)[..8]`. The
//! relay stores nothing per unauthenticated client (an Allocate flood costs no
//! memory), a nonce is only good from the address it was handed to, and
//! "stale" is just `expiry < now`.
//!
//! When the 401 had room for it, the nonce starts with RFC 8489's cookie
//! `obMatJos2` + security feature bits ("password algorithms") and the answer
//! lists PASSWORD-ALGORITHMS (MD5, SHA-256). `offered` is inside the tag, so a
//! man in the middle who strips the cookie (to force MD5) invalidates the
//! nonce rather than downgrading the client (RFC 8489 §9.2.1 bid-down
//! protection).

use std::net::SocketAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use tern_common::credentials;

use crate::stun::{attr, Message, MessageBuilder};

/// RFC 8489 §9.2: nonce cookie + base64 of the 24 security-feature bits with
/// only bit 0 ("Password algorithms") set (0x800000 → "gAAA").
pub const NONCE_COOKIE: &str = "obMatJos2gAAA";

/// The value of our PASSWORD-ALGORITHMS attribute: MD5 then SHA-256, no
/// parameters. A request must echo it byte for byte.
pub const PASSWORD_ALGORITHMS: [u8; 8] = [0, 1, 0, 0, 0, 2, 0, 0];

/// Length of the part of a nonce after the optional cookie.
const NONCE_BODY_LEN: usize = 16;

/// Key an answer is signed with, and how: the request's own integrity
/// mechanism (RFC 8489 §9.2.4: answer with the algorithm the client used).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MessageKey {
    bytes: [u8; 32],
    len: u8,
    /// MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY.
    sha256: bool,
}

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageKey")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl MessageKey {
    fn new(key: &[u8], sha256: bool) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..key.len()].copy_from_slice(key);
        MessageKey {
            bytes,
            len: key.len() as u8,
            sha256,
        }
    }

    #[cfg(test)]
    pub(crate) fn test_key() -> Self {
        MessageKey::new(&[0; 16], false)
    }

    /// The long-term key: MD5 (16 bytes) or SHA-256 (32 bytes) of
    /// `username:realm:password`, as the password algorithm says.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Answers carry MESSAGE-INTEGRITY-SHA256 rather than MESSAGE-INTEGRITY.
    pub fn uses_sha256(&self) -> bool {
        self.sha256
    }

    /// Append the matching integrity attribute.
    pub fn sign(&self, b: &mut MessageBuilder) {
        if self.sha256 {
            b.integrity_sha256(self.as_bytes());
        } else {
            b.integrity(self.as_bytes());
        }
    }
}

/// What an authenticated request proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The request's TURN REST username (`<expiry>:<identity>`), now verified.
    pub username: String,
    /// MD5 or SHA-256 of `username:realm:password`, marked with the integrity
    /// mechanism the request used; it signs our answers.
    pub key: MessageKey,
}

/// Why a request is not authenticated, mapped by the engine to an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No MESSAGE-INTEGRITY(-SHA256): the first leg of the handshake (401 +
    /// REALM/NONCE).
    #[error("request carries no MESSAGE-INTEGRITY")]
    Challenge,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE (400).
    #[error("MESSAGE-INTEGRITY without USERNAME, REALM and NONCE")]
    Incomplete,
    /// PASSWORD-ALGORITHMS / PASSWORD-ALGORITHM missing, altered or not
    /// offered after a nonce that offered them (400, RFC 8489 §9.2.4).
    #[error("password algorithm negotiation failed")]
    BadAlgorithm,
    /// Nonce expired, forged or from another address (438 + fresh nonce).
    #[error("stale or foreign nonce")]
    StaleNonce,
    /// Malformed or expired REST username, wrong realm, or wrong MAC (401).
    #[error("credentials rejected: {0}")]
    Rejected(&'static str),
}

/// Checks requests against the shared secret(s). Plain data, no IO.
#[derive(Clone)]
pub struct Authenticator {
    /// Current secret first, then the previous one during a rotation.
    secrets: Vec<Vec<u8>>,
    realm: String,
    nonce_key: [u8; 32],
    nonce_lifetime_secs: u64,
}

impl std::fmt::Debug for Authenticator {
    // Keep secrets out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("realm", &self.realm)
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// A nonce we issued, decoded.
struct NonceInfo {
    /// The nonce carried the RFC 8489 cookie: PASSWORD-ALGORITHMS was offered.
    offered_algorithms: bool,
}

impl Authenticator {
    /// Checks credentials derived from `secret` in `realm`; nonces are keyed
    /// with `nonce_key` and live `nonce_lifetime_secs` seconds.
    pub fn new(
        secret: Vec<u8>,
        realm: String,
        nonce_key: [u8; 32],
        nonce_lifetime_secs: u64,
    ) -> Self {
        Authenticator {
            secrets: vec![secret],
            realm,
            nonce_key,
            nonce_lifetime_secs,
        }
    }

    /// Also accept credentials derived from `previous` (secret rotation:
    /// signaling may still hand out passwords from the old secret for a while).
    pub fn with_previous_secret(mut self, previous: Option<Vec<u8>>) -> Self {
        self.secrets.truncate(1);
        self.secrets.extend(previous.filter(|p| !p.is_empty()));
        self
    }

    /// The REALM requests must carry (and 401 answers announce).
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A fresh nonce for `client`, valid until `unix_now + lifetime`.
    /// `offer_algorithms` prefixes the RFC 8489 cookie.
    pub fn nonce(&self, unix_now: u64, client: SocketAddr, offer_algorithms: bool) -> String {
        let expiry = (unix_now + self.nonce_lifetime_secs).min(u32::MAX as u64) as u32;
        let mut raw = [0u8; 12];
        raw[..4].copy_from_slice(&expiry.to_be_bytes());
        raw[4..].copy_from_slice(&self.nonce_tag(expiry, offer_algorithms, client));
        let body = URL_SAFE_NO_PAD.encode(raw);
        if offer_algorithms {
            format!("{NONCE_COOKIE}{body}")
        } else {
            body
        }
    }

    fn nonce_tag(&self, expiry: u32, offered: bool, client: SocketAddr) -> [u8; 8] {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.nonce_key).expect("any key length");
        mac.update(&expiry.to_be_bytes());
        mac.update(&[offered as u8]);
        match client.ip() {
            std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let tag = mac.finalize().into_bytes();
        tag[..8].try_into().expect("20-byte MAC")
    }

    fn check_nonce(&self, nonce: &[u8], unix_now: u64, client: SocketAddr) -> Option<NonceInfo> {
        let (offered, body) = match nonce.strip_prefix(NONCE_COOKIE.as_bytes()) {
            Some(body) => (true, body),
            None => (false, nonce),
        };
        if body.len() != NONCE_BODY_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(body).ok()?;
        let expiry = u32::from_be_bytes(raw[..4].try_into().ok()?);
        // Not constant time: the tag binds public data only, and a forged tag
        // gains nothing beyond what a real nonce (free to obtain) gives.
        (u64::from(expiry) > unix_now && raw[4..] == self.nonce_tag(expiry, offered, client))
            .then_some(NonceInfo {
                offered_algorithms: offered,
            })
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
        let info = self
            .check_nonce(nonce, unix_now, client)
            .ok_or(AuthError::StaleNonce)?;
        let sha256_key = if info.offered_algorithms {
            match (
                msg.get(attr::PASSWORD_ALGORITHMS),
                msg.get(attr::PASSWORD_ALGORITHM),
            ) {
                // A client that ignored the offer: MD5, as RFC 8489 says.
                (None, None) => false,
                (Some(list), Some(chosen)) if list == PASSWORD_ALGORITHMS => match chosen {
                    [0, 1, 0, 0] => false,
                    [0, 2, 0, 0] => true,
                    _ => return Err(AuthError::BadAlgorithm),
                },
                _ => return Err(AuthError::BadAlgorithm),
            }
        } else {
            false
        };
        let username =
            std::str::from_utf8(username).map_err(|_| AuthError::Rejected("username not UTF-8"))?;
        if realm != self.realm.as_bytes() {
            return Err(AuthError::Rejected("foreign realm"));
        }
        credentials::check_expiry(username, unix_now).map_err(|e| match e {
            credentials::CredentialError::Malformed => AuthError::Rejected("malformed username"),
            credentials::CredentialError::Expired { .. } => AuthError::Rejected("expired username"),
        })?;
        let use_sha256_mac = msg.has_integrity_sha256();
        for secret in &self.secrets {
            let password = credentials::password(secret, username);
            let key = if sha256_key {
                MessageKey::new(
                    &long_term_key_sha256(username, &self.realm, &password),
                    use_sha256_mac,
                )
            } else {
                MessageKey::new(
                    &long_term_key(username, &self.realm, &password),
                    use_sha256_mac,
                )
            };
            // RFC 8489 §9.2.4: with both present, MESSAGE-INTEGRITY-SHA256
            // is the one that is checked.
            let ok = if use_sha256_mac {
                msg.verify_integrity_sha256(key.as_bytes())
            } else {
                msg.verify_integrity(key.as_bytes())
            };
            if ok {
                return Ok(Credentials {
                    username: username.to_owned(),
                    key,
                });
            }
        }
        Err(AuthError::Rejected("bad MESSAGE-INTEGRITY"))
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

/// The SHA-256 long-term key (PASSWORD-ALGORITHM SHA-256, RFC 8489 §18.5.1.2):
/// SHA-256(username ":" realm ":" password).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
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
    fn sha256_key_is_sha256_of_user_realm_password() {
        // Reference: printf 'user:realm:pass' | sha256sum
        let k = long_term_key_sha256("user", "realm", "pass");
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "07e934117abd40836e7c6329b54731b2b2d2a5f9a71f544922d75e0730d8251b"
        );
    }

    #[test]
    fn nonces_bind_address_offer_and_expire() {
        let a = Authenticator::new(b"s".to_vec(), "tern".into(), [9; 32], 100);
        let c: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        for offer in [false, true] {
            let n = a.nonce(1000, c, offer);
            assert_eq!(n.len(), 16 + if offer { 13 } else { 0 });
            let ok = |n: &[u8], t, c| a.check_nonce(n, t, c).map(|i| i.offered_algorithms);
            assert_eq!(ok(n.as_bytes(), 1099, c), Some(offer));
            assert_eq!(ok(n.as_bytes(), 1100, c), None);
            assert_eq!(
                ok(n.as_bytes(), 1000, "192.0.2.1:1001".parse().unwrap()),
                None
            );
        }
        // Stripping the cookie (bid-down) invalidates the nonce.
        let n = a.nonce(1000, c, true);
        assert!(a
            .check_nonce(&n.as_bytes()[NONCE_COOKIE.len()..], 1000, c)
            .is_none());
        assert!(a.check_nonce(b"garbage", 1000, c).is_none());
        assert!(a.check_nonce("é".repeat(8).as_bytes(), 1000, c).is_none());
    }
}
