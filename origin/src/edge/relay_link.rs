//! A relay's heartbeat connection as a liveness signal.
//!
//! Relays POST heartbeats over one kept-alive HTTP connection. When a relay
//! process dies while its host lives (a crash, an OOM kill, SIGKILL), the
//! host's kernel closes that connection at once, long before a lease would
//! run out or probes would go unanswered for [`crate::probe`]'s silence.
//! The edge then probes the relay straight away (the prober's *suspect*
//! path): a live relay answers and nothing happens (it may just have moved
//! its heartbeats to another edge); a dead one is marked failing within a
//! few round trips.
//!
//! Why not rely on the host's ICMP port unreachable alone (the prober does
//! use it): a host rate-limits ICMP errors (Linux: 1,000 a second by
//! default), and the clients of a dead relay keep sending it media, so a
//! loaded relay's host has nearly no ICMP left to answer a probe with. A
//! closed connection is not rate-limited.
//!
//! How it is seen: each accepted connection carries a [`Link`] (axum's
//! per-connection `ConnectInfo`). A `Link` holds the sending half of a
//! oneshot channel; the connection's service owns it and drops it when the
//! connection ends, which completes the receiving half. The heartbeat
//! handler takes the receiving half on the first heartbeat a connection
//! carries and watches it for that relay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Per-connection liveness handle (cheap to clone; clones share one slot).
#[derive(Clone)]
pub struct Link(Arc<Slot>);

struct Slot {
    /// The client's address, as the TCP connection sees it.
    peer: std::net::SocketAddr,
    /// Dropped with the last clone of the [`Link`], i.e. when the
    /// connection and its requests are gone.
    _open: oneshot::Sender<()>,
    /// Taken by the first heartbeat on this connection.
    closed: Mutex<Option<oneshot::Receiver<()>>>,
    /// When the latest heartbeat on this connection was accepted (unix ms);
    /// shared with the watcher, which outlives the slot.
    last_heartbeat_ms: Arc<AtomicU64>,
}

impl Link {
    pub fn new(peer: std::net::SocketAddr) -> Link {
        let (open, closed) = oneshot::channel();
        Link(Arc::new(Slot {
            peer,
            _open: open,
            closed: Mutex::new(Some(closed)),
            last_heartbeat_ms: Arc::default(),
        }))
    }

    /// The address the connection came from.
    pub fn peer(&self) -> std::net::SocketAddr {
        self.0.peer
    }

    /// A heartbeat on this connection was accepted at `at_ms` (unix ms).
    pub fn heard(&self, at_ms: u64) {
        self.0.last_heartbeat_ms.store(at_ms, Ordering::Relaxed);
    }

    /// A future that completes when this connection closes, with the time
    /// of the last heartbeat it carried; `None` after the first call (one
    /// watcher per connection).
    pub fn watch(&self) -> Option<impl std::future::Future<Output = u64> + Send + 'static> {
        let rx = self.0.closed.lock().expect("not poisoned").take()?;
        let last = self.0.last_heartbeat_ms.clone();
        Some(async move {
            // Err(RecvError) is the signal: the sender was dropped.
            let _ = rx.await;
            last.load(Ordering::Relaxed)
        })
    }
}

/// The origin's listener: TCP, with TCP_NODELAY on each connection
/// (signaling frames are small and latency-bound: no Nagle delays), and a
/// [`Link`] for each. (A type of its own: axum's `tap_io` wrapper cannot
/// carry a connect-info type of ours.)
pub struct EdgeListener(pub TcpListener);

impl Listener for EdgeListener {
    type Io = TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (TcpStream, std::net::SocketAddr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        let _ = tcp.set_nodelay(true);
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, EdgeListener>> for Link {
    fn connect_info(stream: IncomingStream<'_, EdgeListener>) -> Self {
        Link::new(*stream.remote_addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_watch_completes_when_the_last_clone_is_dropped() {
        let link = Link::new("127.0.0.1:9".parse().unwrap());
        let request = link.clone();
        let watch = link.watch().expect("first watcher");
        link.heard(7);
        assert!(link.watch().is_none(), "one watcher per connection");
        let mut watch = Box::pin(watch);
        drop(link);
        // A request still in flight keeps the connection's slot alive.
        assert!(futures_util::poll!(&mut watch).is_pending());
        drop(request);
        let last = tokio::time::timeout(std::time::Duration::from_secs(1), watch)
            .await
            .expect("completes once the connection is gone");
        assert_eq!(last, 7, "with the last heartbeat's time");
    }
}
