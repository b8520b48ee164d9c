//! The relay directory as anyone may read it (`GET /v1/relays`,
//! `/healthz`), computed at most once per [`FRESH_FOR`].
//!
//! Both endpoints are unauthenticated, and each answer is a listing of the
//! store. Without a cache, a flood of them is a flood of store reads in the
//! lane the housekeeping tick and relays' heartbeats wait in. With it, a
//! flood costs one read per interval, whatever its rate: concurrent callers
//! wait for the one read in progress instead of starting their own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_signaling::directory::RelayView;
use edge_signaling::KvError;

/// How stale a served view may be: the housekeeping tick's interval, so a
/// reader sees a relay's loss no later than the tick acts on it.
pub const FRESH_FOR: Duration = Duration::from_millis(100);

/// The last view and when it was read.
#[derive(Default)]
pub struct DirectoryCache {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Vec<RelayView>>)>>,
}

impl DirectoryCache {
    /// The directory, read with `read` (a future: nothing happens unless it
    /// is awaited) only if the last read is older than [`FRESH_FOR`].
    pub async fn view(
        &self,
        read: impl std::future::Future<Output = Result<Vec<RelayView>, KvError>>,
    ) -> Result<Arc<Vec<RelayView>>, KvError> {
        // Held across the read: whoever comes meanwhile gets its result.
        let mut last = self.last.lock().await;
        if let Some((at, view)) = last.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return Ok(view.clone());
            }
        }
        let view = Arc::new(read.await?);
        *last = Some((Instant::now(), view.clone()));
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn the_store_is_read_once_per_interval_however_many_ask() {
        let cache = DirectoryCache::default();
        let reads = AtomicUsize::new(0);
        let read = || async {
            reads.fetch_add(1, Ordering::Relaxed);
            Ok(Vec::new())
        };
        let asks: Vec<_> = (0..50).map(|_| cache.view(read())).collect();
        for r in futures_util::future::join_all(asks).await {
            r.unwrap();
        }
        assert_eq!(
            reads.load(Ordering::Relaxed),
            1,
            "concurrent askers share one read"
        );
        tokio::time::sleep(FRESH_FOR).await;
        cache.view(read()).await.unwrap();
        assert_eq!(
            reads.load(Ordering::Relaxed),
            2,
            "a stale view is read again"
        );
    }
}
