//! The store's error, shared by every backend.

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded store's file could not be opened (another process
    /// holds it, or it is not a store).
    #[error("opening store at {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    /// The backend failed an operation.
    #[error("store: {0}")]
    Backend(String),
}
