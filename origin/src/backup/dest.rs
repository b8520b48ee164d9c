//! Where backups go, through `object_store`: a local directory or an
//! S3-compatible bucket. A backup is two objects, `<id>.tbk` (the archive)
//! and `<id>.manifest.json`, written in that order and deleted in the
//! reverse order, so a manifest never points at a missing archive.

use std::sync::Arc;

use futures::TryStreamExt as _;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt as _};

use super::manifest::{Manifest, ManifestError, ARCHIVE_SUFFIX, MANIFEST_SUFFIX};

#[derive(Debug, thiserror::Error)]
pub enum DestError {
    #[error("backup destination `{0}`: {1}")]
    Spec(String, String),
    #[error("{0}")]
    Store(#[from] object_store::Error),
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("no backup `{0}` at this destination (see `tern backup list`)")]
    NotFound(String),
    #[error("no backups at this destination")]
    Empty,
}

pub struct Destination {
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    spec: String,
}

/// A listed backup: its manifest, or why it was skipped.
pub struct Listing {
    pub backups: Vec<Manifest>,
    /// Manifests that exist but could not be used (unparsable, or their
    /// archive is missing or of another size).
    pub skipped: Vec<String>,
    /// Archives with no manifest: left by a crash or a backup under way.
    pub orphans: Vec<(String, u64)>,
}

impl Destination {
    /// `s3://bucket[/prefix]` (credentials and region from the usual
    /// `AWS_*` environment variables; `s3_endpoint` for S3-compatible
    /// servers), `file:///dir` or a plain directory path.
    pub fn parse(spec: &str, s3_endpoint: Option<&str>) -> Result<Destination, DestError> {
        let bad = |why: String| DestError::Spec(spec.to_string(), why);
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("needs a bucket name: s3://bucket/prefix".into()));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(ep) = s3_endpoint {
                // S3-compatible servers (MinIO, Ceph, s3s…) mostly want
                // path-style requests, and plain HTTP on a private network.
                b = b
                    .with_endpoint(ep)
                    .with_allow_http(ep.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            let store = b.build().map_err(|e| bad(e.to_string()))?;
            return Ok(Destination {
                store: Arc::new(store),
                prefix: ObjPath::from(prefix.trim_matches('/')),
                spec: spec.to_string(),
            });
        }
        if spec.contains("://") && !spec.starts_with("file://") {
            return Err(bad(
                "use a directory, file:///dir or s3://bucket/prefix".into()
            ));
        }
        let dir = spec.strip_prefix("file://").unwrap_or(spec);
        std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Destination {
            store: Arc::new(store),
            prefix: ObjPath::default(),
            spec: spec.to_string(),
        })
    }

    pub fn spec(&self) -> &str {
        &self.spec
    }

    fn path(&self, name: &str) -> ObjPath {
        self.prefix.clone().join(name)
    }

    /// Archive first; the manifest only once the archive is stored. Each
    /// put is atomic (the local store writes a temporary file and renames
    /// it; S3 shows an object only when its upload completed).
    pub async fn put(
        &self,
        manifest: &Manifest,
        archive: Vec<u8>,
        before_manifest: impl FnOnce(),
    ) -> Result<(), DestError> {
        self.store
            .put(&self.path(&manifest.archive), archive.into())
            .await?;
        before_manifest();
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
        self.store
            .put(
                &self.path(&Manifest::manifest_name(&manifest.id)),
                json.into(),
            )
            .await?;
        Ok(())
    }

    /// Every backup with a usable manifest, oldest first.
    pub async fn list(&self) -> Result<Listing, DestError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let objects: Vec<_> = self.store.list(prefix).try_collect().await?;
        let name = |p: &ObjPath| p.filename().unwrap_or_default().to_string();
        let sizes: std::collections::BTreeMap<String, u64> = objects
            .iter()
            .map(|o| (name(&o.location), o.size))
            .collect();
        let mut listing = Listing {
            backups: Vec::new(),
            skipped: Vec::new(),
            orphans: Vec::new(),
        };
        let mut referenced = std::collections::BTreeSet::new();
        for o in &objects {
            let n = name(&o.location);
            if !n.ends_with(MANIFEST_SUFFIX) {
                continue;
            }
            let bytes = match self.store.get(&o.location).await {
                Ok(r) => r.bytes().await?,
                // Deleted by a concurrent retention pass since listing.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match Manifest::parse(&n, &bytes) {
                Ok(m) => {
                    referenced.insert(m.archive.clone());
                    match sizes.get(&m.archive) {
                        Some(&s) if s == m.archive_bytes => listing.backups.push(m),
                        Some(&s) => listing.skipped.push(format!(
                            "{n}: archive is {s} bytes, manifest says {}",
                            m.archive_bytes
                        )),
                        None => listing.skipped.push(format!("{n}: archive missing")),
                    }
                }
                Err(e) => listing.skipped.push(e.to_string()),
            }
        }
        for (n, s) in &sizes {
            if n.ends_with(ARCHIVE_SUFFIX) && !referenced.contains(n) {
                listing.orphans.push((n.clone(), *s));
            }
        }
        listing.backups.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(listing)
    }

    /// The backup with this id, or the newest for `latest`.
    pub async fn find(&self, id: &str) -> Result<Manifest, DestError> {
        let mut l = self.list().await?.backups;
        if id == "latest" {
            return l.pop().ok_or(DestError::Empty);
        }
        l.into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| DestError::NotFound(id.to_string()))
    }

    pub async fn fetch_archive(&self, m: &Manifest) -> Result<bytes::Bytes, DestError> {
        Ok(self
            .store
            .get(&self.path(&m.archive))
            .await?
            .bytes()
            .await?)
    }

    /// Manifest first: from then on the backup is gone for list and
    /// restore, whether or not the archive's deletion completes.
    pub async fn delete(&self, m: &Manifest) -> Result<(), DestError> {
        self.store
            .delete(&self.path(&Manifest::manifest_name(&m.id)))
            .await?;
        self.delete_object(&m.archive).await
    }

    pub async fn delete_object(&self, name: &str) -> Result<(), DestError> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
