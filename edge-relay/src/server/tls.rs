//! TLS for TURN over TLS: loading a PEM certificate and key into rustls, and
//! writing a self-signed pair for tests and `tern up`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// A rustls server config from PEM files. The ring provider is named
/// explicitly so that another crate in the same binary enabling aws-lc-rs
/// cannot make the process-wide default ambiguous.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(Arc::new(config))
}

/// Write a self-signed certificate for `names` (DNS names or IPs) and its key
/// as PEM, unless both files already exist. For local use only: browsers
/// need `--ignore-certificate-errors` (or the cert installed) to accept it.
pub fn ensure_self_signed(cert: &Path, key: &Path, names: &[String]) -> anyhow::Result<()> {
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .context("generating a self-signed certificate")?;
    for (path, pem) in [(cert, ck.cert.pem()), (key, ck.key_pair.serialize_pem())] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).ok();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_loads() {
        let dir = std::env::temp_dir().join(format!("tern-relay-tls-{}", std::process::id()));
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        ensure_self_signed(&c, &k, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        server_config(&c, &k).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}
