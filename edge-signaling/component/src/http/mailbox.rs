//! A connection's mailbox: the server frames it has not acknowledged yet.
//!
//! Key `http-mailbox/<conn>` (docs/kv-schema.md). Any instance may append
//! (a peer's `signal`, a `reroute` from the tick) while the connection's own
//! requests acknowledge, so every change is a compare-and-swap, retried on
//! conflict. Frames carry consecutive sequence numbers ending at `last`; only
//! `last` and the frames are stored, the first number follows from them.

use edge_signaling::apply::KvStore;
use edge_signaling::kv::{KvError, KvRead};
use serde::{Deserialize, Serialize};

use crate::bucket::Bucket;

/// Unacknowledged frames past which a connection is closed: its consumer
/// stopped reading (on a WebSocket the send buffer does the same).
pub const MAX_FRAMES: usize = 1024;
/// Unacknowledged bytes past which a connection is closed.
pub const MAX_BYTES: usize = 1 << 20;

/// How often a conflicting change is retried. Writers per mailbox are few
/// (the connection itself, its room's peers, the tick), so this is ample.
const MAX_ATTEMPTS: usize = 32;

pub fn key(conn: &str) -> String {
    format!("http-mailbox/{conn}")
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Mailbox {
    /// Sequence number of the newest frame ever appended (0: none yet).
    pub last: u64,
    /// Unacknowledged frames (JSON text), oldest first; the newest is `last`.
    pub frames: Vec<String>,
}

impl Mailbox {
    fn first_seq(&self) -> u64 {
        self.last + 1 - self.frames.len() as u64
    }

    /// Frames with sequence numbers above `ack`.
    pub fn after(&self, ack: u64) -> &[String] {
        let skip = ack.saturating_add(1).saturating_sub(self.first_seq()) as usize;
        &self.frames[skip.min(self.frames.len())..]
    }

    /// Drop frames up to `ack`. False if there was nothing to drop.
    fn acknowledge(&mut self, ack: u64) -> bool {
        let drop = ack.saturating_add(1).saturating_sub(self.first_seq()) as usize;
        let drop = drop.min(self.frames.len());
        self.frames.drain(..drop);
        drop > 0
    }

    fn bytes(&self) -> usize {
        self.frames.iter().map(String::len).sum()
    }

    /// Whether the consumer fell so far behind that the connection closes.
    pub fn overflowing(&self) -> bool {
        self.frames.len() > MAX_FRAMES || self.bytes() > MAX_BYTES
    }

    /// `{"frames":[…],"last":L}` with the frames after `ack` (frames are
    /// JSON objects already, so they are spliced in, not re-encoded).
    pub fn answer(&self, ack: u64) -> String {
        let frames = self.after(ack);
        let last = if frames.is_empty() { ack } else { self.last };
        format!(r#"{{"frames":[{}],"last":{last}}}"#, frames.join(","))
    }
}

/// The mailbox of `conn`, or None if the connection is unknown or closed.
pub fn read(bucket: &Bucket, conn: &str) -> Result<Option<Mailbox>, KvError> {
    match bucket.get(&key(conn))? {
        Some(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| KvError(format!("mailbox of {conn} is corrupt: {e}"))),
        None => Ok(None),
    }
}

/// A new, empty mailbox: the connection exists from now on.
pub fn create(bucket: &mut Bucket, conn: &str) -> Result<(), KvError> {
    let value = serde_json::to_vec(&Mailbox::default()).expect("serializes");
    if bucket.compare_and_swap(&key(conn), None, &value)? {
        Ok(())
    } else {
        Err(KvError("connection id collision".into()))
    }
}

/// Change the mailbox of `conn` with `f` (which says whether it changed
/// anything) by compare-and-swap. None if the connection is gone.
fn update(
    bucket: &mut Bucket,
    conn: &str,
    mut f: impl FnMut(&mut Mailbox) -> bool,
) -> Result<Option<Mailbox>, KvError> {
    let k = key(conn);
    for _ in 0..MAX_ATTEMPTS {
        let Some(raw) = bucket.get(&k)? else {
            return Ok(None);
        };
        let mut mb: Mailbox = serde_json::from_slice(&raw)
            .map_err(|e| KvError(format!("mailbox of {conn} is corrupt: {e}")))?;
        if !f(&mut mb) {
            return Ok(Some(mb));
        }
        let value = serde_json::to_vec(&mb).expect("serializes");
        if bucket.compare_and_swap(&k, Some(&raw), &value)? {
            return Ok(Some(mb));
        }
    }
    Err(KvError(format!("mailbox of {conn} kept changing")))
}

/// Append `frames` in order. None if the connection is gone (the frames
/// are dropped, as a closed socket drops them).
pub fn append(
    bucket: &mut Bucket,
    conn: &str,
    frames: &[String],
) -> Result<Option<Mailbox>, KvError> {
    update(bucket, conn, |mb| {
        mb.last += frames.len() as u64;
        mb.frames.extend(frames.iter().cloned());
        true
    })
}

/// The client has handled every frame up to `ack`: forget them.
pub fn acknowledge(bucket: &mut Bucket, conn: &str, ack: u64) -> Result<Option<Mailbox>, KvError> {
    update(bucket, conn, |mb| mb.acknowledge(ack))
}

pub fn remove(bucket: &mut Bucket, conn: &str) -> Result<(), KvError> {
    bucket.delete(&key(conn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(last: u64, n: usize) -> Mailbox {
        Mailbox {
            last,
            frames: (0..n)
                .map(|i| format!(r#"{{"n":{}}}"#, last - n as u64 + 1 + i as u64))
                .collect(),
        }
    }

    #[test]
    fn after_and_acknowledge_count_from_last() {
        let mut m = mb(5, 3); // frames 3, 4, 5
        assert_eq!(m.after(0).len(), 3);
        assert_eq!(m.after(3), [r#"{"n":4}"#, r#"{"n":5}"#]);
        assert!(m.after(5).is_empty());
        assert!(m.after(9).is_empty());
        assert!(m.acknowledge(4));
        assert_eq!(m.frames, [r#"{"n":5}"#]);
        assert!(!m.acknowledge(4));
        assert_eq!(m.answer(4), r#"{"frames":[{"n":5}],"last":5}"#);
        assert_eq!(m.answer(5), r#"{"frames":[],"last":5}"#);
    }

    #[test]
    fn overflow_counts_frames_and_bytes() {
        assert!(!mb(MAX_FRAMES as u64, MAX_FRAMES).overflowing());
        assert!(mb(MAX_FRAMES as u64 + 1, MAX_FRAMES + 1).overflowing());
        let big = Mailbox {
            last: 2,
            frames: vec!["x".repeat(MAX_BYTES / 2), "x".repeat(MAX_BYTES / 2 + 1)],
        };
        assert!(big.overflowing());
    }
}
