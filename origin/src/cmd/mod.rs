//! The command line: one file per subcommand, and the flag groups several
//! of them share (flattened with `#[command(flatten)]`). A command parses
//! its flags, opens what it needs through the rooms' own constructors and
//! runs; no command calls back into another's `run`.

pub mod backup;
pub mod bench;
pub mod calls;
pub mod calls_client;
pub mod gateway;
pub mod secrets;
pub mod serve;
pub mod spin;
pub mod token;
pub mod up;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::store::{Kv, StoreUrl};

/// Where state lives: the flags every command that opens the store takes.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// Where the embedded store keeps its file (and `tern up`/`tern serve`
    /// their generated secrets). Default `.tern` (`tern spin`: `.tern-spin`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// State store: `embedded` (a redb file in --data-dir),
    /// `redis://host:port` or
    /// `redis+sentinel://host:port[,host:port…]/<service>`.
    #[arg(long, env = "TERN_KV", default_value = "embedded")]
    pub kv: String,
    /// Prefix of every key Tern writes in Redis.
    #[arg(long, default_value = "tern:")]
    pub kv_prefix: String,
    /// On Redis with replicas: how long the answer to a frame that wrote
    /// call records waits for a replica to acknowledge them (WAIT), so a
    /// failover cannot lose an acknowledged event. When none does in time
    /// the frame is answered anyway (and later ones do not wait until a
    /// replica catches up). 0: never wait. docs/kv-schema.md "Durability
    /// (Redis)".
    #[arg(long, env = "TERN_REDIS_REPLICA_WAIT_MS", default_value_t = 1000)]
    pub redis_replica_wait_ms: u64,
}

/// The data directory commands use when --data-dir is not given.
pub const DEFAULT_DATA_DIR: &str = ".tern";

impl StoreArgs {
    /// These flags for the embedded store in `dir` (what `tern up` runs on).
    pub fn embedded(dir: &Path) -> StoreArgs {
        StoreArgs {
            data_dir: Some(dir.to_path_buf()),
            kv: "embedded".into(),
            kv_prefix: "tern:".into(),
            redis_replica_wait_ms: 0,
        }
    }

    /// --data-dir, or `default` when it was not given.
    pub fn data_dir_or(&self, default: &str) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(default))
    }

    /// Whether other processes (other edges) may share this store: any but
    /// the embedded one, whose file only this process opens.
    pub fn is_shared(&self) -> bool {
        self.kv != "embedded"
    }

    /// The store these flags name, the embedded one in `data_dir`.
    pub fn url(&self, data_dir: &Path) -> StoreUrl {
        if self.kv == "embedded" {
            StoreUrl::Embedded {
                dir: data_dir.to_path_buf(),
            }
        } else {
            StoreUrl::Redis {
                url: self.kv.clone(),
                prefix: self.kv_prefix.clone(),
                replica_wait: Duration::from_millis(self.redis_replica_wait_ms),
                connections: crate::edge::CALLS_IN_FLIGHT,
            }
        }
    }

    /// Open the store (blocking: Redis connects here).
    pub fn open(&self, data_dir: &Path) -> anyhow::Result<Kv> {
        let url = self.url(data_dir);
        crate::store::open(&url).with_context(|| format!("opening the store {url}"))
    }
}

/// The async runtime of a command that serves.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
