//! How strong a shared secret must be.
//!
//! Every secret of a deployment (the API secret room tokens are signed
//! with, the relay secret TURN credentials and heartbeats derive from) is an
//! HMAC key that anyone may try to guess offline from one token or one
//! heartbeat. An empty one (an unset variable passed through as `""`) or a
//! word signs for everyone. So every host refuses secrets shorter than
//! [`MIN_SECRET_BYTES`], at start where it can, on every request where it
//! cannot (a serverless function has no start).

/// Shortest secret accepted: 32 bytes, as many as the HMAC-SHA256 output,
/// e.g. `openssl rand -hex 32` (64 hex characters).
pub const MIN_SECRET_BYTES: usize = 32;

/// A secret refused for being too short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name} is {len} bytes; at least {MIN_SECRET_BYTES} are needed \
     (make one with `openssl rand -hex 32`)"
)]
pub struct WeakSecret {
    /// Which secret (its environment variable's name).
    pub name: &'static str,
    /// How long the refused secret is.
    pub len: usize,
}

/// Accept `value` as secret `name`, or say why not.
pub fn check(name: &'static str, value: &[u8]) -> Result<(), WeakSecret> {
    if value.len() < MIN_SECRET_BYTES {
        return Err(WeakSecret {
            name,
            len: value.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_empty_secrets_are_refused_by_name() {
        let e = check("TERN_API_SECRET", b"").unwrap_err();
        assert_eq!(e.len, 0);
        assert!(
            e.to_string().starts_with("TERN_API_SECRET is 0 bytes"),
            "{e}"
        );
        assert!(check("S", &[b'x'; MIN_SECRET_BYTES - 1]).is_err());
        assert!(check("S", &[b'x'; MIN_SECRET_BYTES]).is_ok());
    }
}
