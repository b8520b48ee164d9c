//! Group commit for writes that must be durable before they are
//! acknowledged (call records, docs/kv-schema.md "Durability").
//!
//! An fsync per such write would serialise signaling behind the disk: every
//! redb write waits for the one holding the fsync, and join→joined went from
//! ~0.1 ms to ~100 ms at 500 joins/s in `tern bench signaling`. Instead the
//! write commits without fsync as usual, and the frame's answer waits for
//! the next *sync*: one empty `Durability::Immediate` commit, which makes
//! every commit before it durable. Callers that arrive while a sync runs
//! wait for the one after it (theirs may have missed it); one of them runs
//! it for all. So under load one fsync covers many frames, and a frame's
//! answer is delayed by about one fsync, never by a queue of them.

use std::sync::{Condvar, Mutex};

#[derive(Default)]
struct State {
    /// Syncs started and finished so far (generation numbers).
    started: u64,
    finished: u64,
    running: bool,
    /// The last sync's error, handed to the callers it was for.
    last_error: Option<String>,
}

#[derive(Default)]
pub struct SyncGate {
    state: Mutex<State>,
    done: Condvar,
}

impl SyncGate {
    /// Return once a sync that started after this call began has finished,
    /// running it here if nobody else is. `sync` makes all earlier commits
    /// durable. Blocking: call it from a blocking thread.
    pub fn wait<E: ToString>(&self, sync: impl FnOnce() -> Result<(), E>) -> Result<(), String> {
        // A caller leads at most one sync: when it leads, that sync is the
        // one it waits for (see `target`).
        let mut sync = Some(sync);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // The next sync to start is generation `started + 1`. One running
        // now (generation `started`) may have begun before our commit, so
        // it does not count; the next one does, whoever leads it.
        let target = s.started + 1;
        loop {
            if s.finished >= target {
                return s.last_error.clone().map_or(Ok(()), Err);
            }
            if !s.running {
                s.running = true;
                s.started += 1;
                let generation = s.started;
                drop(s);
                let run = sync.take().expect("a caller leads one sync at most");
                let r = run().map_err(|e| e.to_string());
                s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                s.running = false;
                s.finished = generation;
                s.last_error = r.err();
                self.done.notify_all();
                continue;
            }
            s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn one_sync_serves_every_caller_that_arrived_while_another_ran() {
        let gate = Arc::new(SyncGate::default());
        let syncs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (gate, syncs) = (gate.clone(), syncs.clone());
                std::thread::spawn(move || {
                    gate.wait(|| {
                        syncs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        Ok::<(), String>(())
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let n = syncs.load(Ordering::SeqCst);
        assert!(n >= 1, "at least one sync ran");
        assert!(n < 16, "callers shared syncs ({n} for 16 callers)");
    }

    #[test]
    fn a_caller_never_returns_on_a_sync_that_started_before_it() {
        let gate = Arc::new(SyncGate::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = {
            let (gate, order) = (gate.clone(), order.clone());
            std::thread::spawn(move || {
                gate.wait(|| {
                    order.lock().unwrap().push("sync 1 start");
                    std::thread::sleep(Duration::from_millis(100));
                    order.lock().unwrap().push("sync 1 end");
                    Ok::<(), String>(())
                })
            })
        };
        std::thread::sleep(Duration::from_millis(30)); // sync 1 is running
        let o = order.clone();
        gate.wait(|| {
            o.lock().unwrap().push("sync 2");
            Ok::<(), String>(())
        })
        .unwrap();
        first.join().unwrap().unwrap();
        assert_eq!(
            *order.lock().unwrap(),
            ["sync 1 start", "sync 1 end", "sync 2"]
        );
    }

    #[test]
    fn errors_reach_the_callers_of_that_sync() {
        let gate = SyncGate::default();
        assert_eq!(gate.wait(|| Err("disk full")), Err("disk full".to_string()));
        assert_eq!(gate.wait(|| Ok::<(), String>(())), Ok(()));
    }
}
