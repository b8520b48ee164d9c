//! The simulator's own runtimes: one for the callers' media, one for their
//! signaling ([`crate::signaling`] says why apart).

/// A multi-threaded tokio runtime that may be dropped from async code.
pub struct Threads {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Threads {
    /// `threads` workers named `name`, each at niceness `nice` (0: as the
    /// process; positive: yield the CPU to everything else first).
    ///
    /// Why a niceness: a drill runs the system under test (edges, Redis,
    /// relays) and thousands of simulated callers on one small machine.
    /// The callers' devices do not take CPU from the servers in real life,
    /// but on a shared machine at 1,000 calls they took most of it: a
    /// surviving edge resuming a thousand sessions got a fraction of a
    /// core, and the drill measured that instead of the edge.
    pub fn start(name: &str, threads: usize, nice: i32) -> std::io::Result<Threads> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .on_thread_start(move || {
                if nice != 0 {
                    set_nice(nice);
                }
            })
            .enable_all()
            .build()?;
        Ok(Threads {
            runtime: Some(runtime),
        })
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("until dropped")
            .handle()
            .clone()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        // Dropped from async code (the caller's runtime), where a blocking
        // shutdown would panic; tasks still running end with it.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Set this thread's niceness (on Linux niceness is per thread). Raising
/// it needs no privilege; a failure leaves the thread as it was.
fn set_nice(nice: i32) {
    // SAFETY: plain syscalls on this thread's own id.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0 {
            eprintln!(
                "callsim: setting niceness {nice} failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
