//! Backup keys: 256-bit AES keys, each with an id that archives carry in
//! their header, so keys can rotate. A keyring is ordered: the first key
//! seals new backups, any key in it opens old ones.
//!
//! Sources, in this order: the environment variable `TERN_BACKUP_KEY`
//! (`<id>:<64 hex digits>`; several separated by `,`), then key files
//! (`--key-file`, one key per line: `<id> <64 hex digits>`, `#` comments).
//! Rotating is prepending a new line to the key file (`tern backup keygen`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{source_name}, line {line}: {reason}")]
    Parse {
        source_name: String,
        line: usize,
        reason: &'static str,
    },
    #[error("no backup key: pass --key-file or set TERN_BACKUP_KEY")]
    Empty,
}

#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub bytes: [u8; 32],
}

// Never print key material, not even in debug logs.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_key(id: &str, hexkey: &str) -> Result<Key, &'static str> {
    if !valid_id(id) {
        return Err("key ids use letters, digits, '-', '_' and '.' (at most 64)");
    }
    let bytes = hex::decode(hexkey.trim()).map_err(|_| "the key is not hex")?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a key is 32 bytes (64 hex digits)")?;
    Ok(Key {
        id: id.to_string(),
        bytes,
    })
}

impl Keyring {
    pub fn new(keys: Vec<Key>) -> Keyring {
        Keyring { keys }
    }

    /// The key new backups are sealed with.
    pub fn current(&self) -> Result<&Key, KeyError> {
        self.keys.first().ok_or(KeyError::Empty)
    }

    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    #[cfg(test)]
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Keys from `TERN_BACKUP_KEY`'s value (if any), then from each file.
    pub fn load(env: Option<&str>, files: &[impl AsRef<Path>]) -> Result<Keyring, KeyError> {
        let mut ring = Keyring::default();
        if let Some(v) = env {
            ring.parse_env(v)?;
        }
        for f in files {
            let path = f.as_ref();
            let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                path: path.display().to_string(),
                source,
            })?;
            ring.parse_file(&path.display().to_string(), &text)?;
        }
        if ring.keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(ring)
    }

    fn parse_env(&mut self, v: &str) -> Result<(), KeyError> {
        for (i, item) in v.split(',').filter(|s| !s.trim().is_empty()).enumerate() {
            let err = |reason| KeyError::Parse {
                source_name: "TERN_BACKUP_KEY".into(),
                line: i + 1,
                reason,
            };
            let (id, k) = item
                .trim()
                .split_once(':')
                .ok_or_else(|| err("expected <id>:<hex key>"))?;
            self.keys.push(parse_key(id, k).map_err(err)?);
        }
        Ok(())
    }

    fn parse_file(&mut self, name: &str, text: &str) -> Result<(), KeyError> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason| KeyError::Parse {
                source_name: name.to_string(),
                line: i + 1,
                reason,
            };
            let (id, k) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| err("expected <id> <hex key>"))?;
            self.keys.push(parse_key(id, k).map_err(err)?);
        }
        Ok(())
    }
}

/// Add a fresh random key at the top of `path` (created with mode 0600 if
/// missing), so it seals new backups while older keys still open old ones.
pub fn generate(path: &Path, id: &str) -> Result<Key, KeyError> {
    let werr = |source| KeyError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let key = parse_key(id, &hex::encode(bytes)).map_err(|reason| KeyError::Parse {
        source_name: "--id".into(),
        line: 1,
        reason,
    })?;
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(KeyError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let mut check = Keyring::default();
    check.parse_file(&path.display().to_string(), &old)?;
    if check.get(id).is_some() {
        return Err(KeyError::Parse {
            source_name: path.display().to_string(),
            line: 0,
            reason: "a key with this id is already in the file",
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(werr)?;
    }
    // Write the new file beside the old one and rename: a crash never
    // leaves a key file that lost its old keys.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(werr)?;
    writeln!(f, "{} {}", key.id, hex::encode(key.bytes)).map_err(werr)?;
    f.write_all(old.as_bytes()).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_then_files_first_is_current() {
        let k1 = "11".repeat(32);
        let k2 = "22".repeat(32);
        let mut ring = Keyring::default();
        ring.parse_env(&format!("new:{k1}")).unwrap();
        ring.parse_file("f", &format!("# old keys\nold {k2}\n\n"))
            .unwrap();
        assert_eq!(ring.current().unwrap().id, "new");
        assert_eq!(ring.get("old").unwrap().bytes, [0x22; 32]);
        assert!(ring.parse_file("f", "bad zz").is_err());
        assert!(ring.parse_env("x:1234").is_err());
    }

    #[test]
    fn generate_prepends_and_keeps_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        generate(&p, "k1").unwrap();
        generate(&p, "k2").unwrap();
        assert!(generate(&p, "k2").is_err());
        let ring = Keyring::load(None, &[&p]).unwrap();
        assert_eq!(ring.ids(), ["k2", "k1"]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
