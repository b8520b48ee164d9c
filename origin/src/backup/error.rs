//! Why a backup or restore failed: the one error the backup modules share.

use super::{archive, dest, keys, manifest};
use crate::store::StoreError;

/// A backup, verify or restore failure.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Dest(#[from] dest::DestError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("backup {0} is inconsistent with its manifest: {1}")]
    Inconsistent(String, String),
    #[error(
        "the target store is not empty; restore writes into an empty store \
         (use --force to write over what is there)"
    )]
    NotEmpty,
    #[error("backup task: {0}")]
    Task(String),
}
