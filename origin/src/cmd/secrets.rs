//! Development secrets for `tern up`: made once, kept in the data directory
//! (mode 0600) so tokens printed by `tern token` keep working across restarts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Secrets {
    pub api_secret: String,
    pub relay_secret: String,
}

fn random() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub fn load_or_create(dir: &Path) -> anyhow::Result<Secrets> {
    let path = dir.join("secrets.json");
    if let Ok(raw) = std::fs::read(&path) {
        return serde_json::from_slice(&raw).with_context(|| format!("reading {}", path.display()));
    }
    std::fs::create_dir_all(dir)?;
    let s = Secrets {
        api_secret: random(),
        relay_secret: random(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&serde_json::to_vec_pretty(&s)?)?;
    Ok(s)
}
