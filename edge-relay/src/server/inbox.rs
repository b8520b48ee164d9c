//! How the rest of the process hands input to the datapath shards: TCP/TLS
//! streams (pinned to a shard by a hash of their 5-tuple) and metrics
//! requests, over a channel plus an eventfd that wakes the shard's epoll
//! loop. The types live here, apart from the shard, the driver and the
//! stream tasks that all use them.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tern_netio::Waker;
use tokio::sync::{mpsc, oneshot};

use super::metrics::Snapshot;
use crate::FiveTuple;

/// What a connection task tells the engine task.
pub(crate) enum StreamInput {
    Opened {
        ft: FiveTuple,
        out: mpsc::Sender<Vec<u8>>,
    },
    Message {
        ft: FiveTuple,
        bytes: Vec<u8>,
    },
    Closed {
        ft: FiveTuple,
    },
}

/// What other threads send a shard.
pub(crate) enum Input {
    Stream(StreamInput),
    Snapshot(oneshot::Sender<Snapshot>),
}

/// The other threads' handle on a shard.
#[derive(Clone)]
pub(crate) struct ShardHandle {
    tx: mpsc::Sender<Input>,
    waker: Arc<Waker>,
}

impl ShardHandle {
    pub(crate) fn new(tx: mpsc::Sender<Input>, waker: Arc<Waker>) -> ShardHandle {
        ShardHandle { tx, waker }
    }

    /// Send and wake the shard; `Err` once it has stopped.
    pub(crate) async fn send(&self, input: Input) -> Result<(), ()> {
        self.tx.send(input).await.map_err(|_| ())?;
        self.waker.wake();
        Ok(())
    }

    fn wake(&self) {
        self.waker.wake();
    }
}

/// Handles on every shard: where TCP/TLS input and metrics requests go.
#[derive(Clone)]
pub(crate) struct Shards(Arc<[ShardHandle]>);

impl Shards {
    pub(crate) fn new(handles: Vec<ShardHandle>) -> Shards {
        Shards(handles.into())
    }

    /// Hand a stream's input to the shard that owns its 5-tuple (the same
    /// shard for every message of a connection). `Err` once stopped.
    pub(crate) async fn send(&self, input: StreamInput) -> Result<(), ()> {
        let ft = match &input {
            StreamInput::Opened { ft, .. }
            | StreamInput::Message { ft, .. }
            | StreamInput::Closed { ft } => *ft,
        };
        self.0[self.index(&ft)].send(Input::Stream(input)).await
    }

    fn index(&self, ft: &FiveTuple) -> usize {
        let mut h = DefaultHasher::new();
        ft.hash(&mut h);
        (h.finish() % self.0.len() as u64) as usize
    }

    /// Wake every shard (to see the stop flag).
    pub(crate) fn wake_all(&self) {
        for s in self.0.iter() {
            s.wake();
        }
    }

    /// The sum of every shard's snapshot; `None` while stopping.
    pub(crate) async fn snapshot(&self) -> Option<Snapshot> {
        let mut total = Snapshot::default();
        for shard in self.0.iter() {
            let (tx, rx) = oneshot::channel();
            shard.send(Input::Snapshot(tx)).await.ok()?;
            total.merge(&rx.await.ok()?);
        }
        Some(total)
    }
}
