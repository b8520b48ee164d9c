//! Group commit for writes that must be durable before they are
//! acknowledged (call records, docs/kv-schema.md "Durability").
//!
//! An fsync per such write would serialise signaling behind the disk: every
//! redb write waits for the one holding the fsync. Instead such a write
//! commits without fsync as usual, and the frame's answer waits until a
//! later *sync* (one empty `Durability::Immediate` commit, which makes every
//! commit before it durable) has finished.
//!
//! One syncer thread per store runs the syncs; waiters hold no thread. A
//! frame whose commit holds call records takes a *ticket* after committing
//! (the count of such commits so far, its own included) and awaits the
//! durable watermark, a `watch` channel, reaching it. The syncer sleeps
//! until a ticket is ahead of the watermark, reads the newest ticket, runs
//! one sync (which covers every commit that took a ticket up to then) and
//! publishes that ticket as the new watermark. So under load one fsync
//! covers every frame that committed since the previous one, and a frame
//! waits at most for the sync in progress, a pause (see `MAX_GAP`) and its
//! own sync, never for a queue of them. (The first version let each waiter lead or wait for a sync
//! on a blocking-pool thread; with few such threads, as under `tern bench
//! signaling`, the waiters queued for threads and ran their syncs one after
//! another.)

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The sync that covered this commit failed; it may not be on disk.
    #[error("making the commit durable failed: {0}")]
    Failed(String),
    /// The syncer is gone (the store was closed while a frame waited).
    #[error("the store's syncer stopped")]
    Stopped,
}

/// What the syncer has made durable: every ticket up to `through`, and
/// whether the last sync failed (then `error` is that failure).
#[derive(Clone, Default)]
struct Watermark {
    through: u64,
    error: Option<Arc<str>>,
}

#[derive(Default)]
struct Tickets {
    /// Tickets handed out so far (the newest ticket's number).
    issued: u64,
    /// Set when the gate is dropped: the syncer covers what is issued, then
    /// exits.
    shutdown: bool,
}

struct Shared {
    tickets: Mutex<Tickets>,
    /// Wakes the syncer when a ticket is issued or on shutdown.
    wake: Condvar,
    durable: watch::Sender<Watermark>,
}

impl Shared {
    fn issued(&self) -> u64 {
        self.tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .issued
    }
}

/// The longest pause between two syncs. redb holds its write lock for
/// the whole of a sync's fsync, and writers (component calls, inline on
/// the async workers) wait for it. Syncs run back to back would hold the
/// lock nearly all the time, letting one or two writers in between two
/// fsyncs: measured, that capped an origin at ~200 joins/s with
/// join→joined ~140 ms p50. So after a sync the syncer waits as long as
/// the sync took (at most this), and the lock is free at least about half
/// the time; a frame's answer waits for at most about three fsyncs.
const MAX_GAP: Duration = Duration::from_millis(10);

pub struct SyncGate {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

impl SyncGate {
    /// Start the syncer thread. `sync` must make every commit that finished
    /// before it began durable.
    pub fn new<F>(mut sync: F) -> std::io::Result<SyncGate>
    where
        F: FnMut() -> Result<(), String> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            tickets: Mutex::default(),
            wake: Condvar::new(),
            durable: watch::channel(Watermark::default()).0,
        });
        let s = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("tern-syncer".into())
            .spawn(move || {
                let mut through = 0;
                // Not before this instant may the next sync start (see
                // `MAX_GAP`).
                let mut next_start = Instant::now();
                loop {
                    let target = {
                        let mut t = s.tickets.lock().unwrap_or_else(|p| p.into_inner());
                        while t.issued == through && !t.shutdown {
                            t = s.wake.wait(t).unwrap_or_else(|p| p.into_inner());
                        }
                        if t.issued == through {
                            return; // shut down with nothing left to cover
                        }
                        t.issued
                    };
                    // Let the writers that queued behind the last sync
                    // commit first: this sync then covers them too.
                    let now = Instant::now();
                    if next_start > now {
                        std::thread::sleep(next_start - now);
                    }
                    let target = target.max(s.issued());
                    // Every ticket up to `target` was taken after its commit
                    // finished, and the sync begins after we read `target`:
                    // those commits are before the sync, so it covers them.
                    let began = Instant::now();
                    let error = sync().err().map(Arc::from);
                    next_start = Instant::now() + began.elapsed().min(MAX_GAP);
                    through = target;
                    s.durable.send_replace(Watermark { through, error });
                }
            })?;
        Ok(SyncGate {
            shared,
            syncer: Some(syncer),
        })
    }

    /// Call right after a commit that must be durable before it is
    /// acknowledged: takes the ticket now (so the commit is covered by the
    /// next sync that starts) and returns a future that resolves once that
    /// sync has finished. Awaiting holds no thread.
    pub fn wait_durable(&self) -> impl Future<Output = Result<(), SyncError>> + Send + 'static {
        let mut durable = self.shared.durable.subscribe();
        let ticket = {
            let mut t = self
                .shared
                .tickets
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            t.issued += 1;
            t.issued
        };
        self.shared.wake.notify_one();
        async move {
            let w = durable
                .wait_for(|w| w.through >= ticket)
                .await
                .map_err(|_| SyncError::Stopped)?;
            // A later successful sync also covers this ticket, so an error
            // here means the newest sync that covers it failed.
            match &w.error {
                Some(e) => Err(SyncError::Failed(e.to_string())),
                None => Ok(()),
            }
        }
    }
}

impl Drop for SyncGate {
    fn drop(&mut self) {
        self.shared
            .tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting_gate(pause: Duration) -> (SyncGate, Arc<AtomicUsize>) {
        let syncs = Arc::new(AtomicUsize::new(0));
        let n = syncs.clone();
        let gate = SyncGate::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(pause);
            Ok(())
        })
        .unwrap();
        (gate, syncs)
    }

    /// On a single-threaded runtime: if waiting blocked a thread, the
    /// second waiter could not even take its ticket before the first was
    /// served, and they could not share a sync.
    #[tokio::test(flavor = "current_thread")]
    async fn waiters_hold_no_thread_and_share_syncs() {
        let (gate, syncs) = counting_gate(Duration::from_millis(20));
        let waits: Vec<_> = (0..64).map(|_| gate.wait_durable()).collect();
        for r in futures_util::future::join_all(waits).await {
            r.unwrap();
        }
        let n = syncs.load(Ordering::SeqCst);
        assert!(n >= 1, "at least one sync ran");
        assert!(n <= 2, "64 waiters shared syncs ({n} ran)");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_is_not_released_by_a_sync_that_began_before_its_ticket() {
        // Each sync runs only when the test lets it.
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (began_tx, began_rx) = std::sync::mpsc::channel::<()>();
        let gate = SyncGate::new(move || {
            began_tx.send(()).unwrap();
            go_rx.recv().map_err(|e| e.to_string())
        })
        .unwrap();
        let first = gate.wait_durable();
        began_rx.recv().unwrap(); // sync 1 is running
        let mut second = Box::pin(gate.wait_durable());
        go_tx.send(()).unwrap(); // sync 1 ends
        first.await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "released by a sync that began before its commit"
        );
        began_rx.recv().unwrap(); // sync 2 started for it
        go_tx.send(()).unwrap();
        second.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn errors_reach_the_waiters_of_that_sync() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = fail.clone();
        let gate = SyncGate::new(move || {
            if f.swap(false, Ordering::SeqCst) {
                Err("disk full".into())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(
            gate.wait_durable().await,
            Err(SyncError::Failed("disk full".into()))
        );
        assert_eq!(gate.wait_durable().await, Ok(()));
    }

    #[test]
    fn dropping_the_gate_still_covers_issued_tickets() {
        let (gate, syncs) = counting_gate(Duration::from_millis(50));
        let wait = gate.wait_durable();
        drop(gate);
        assert!(syncs.load(Ordering::SeqCst) >= 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(wait), Ok(()));
    }
}
