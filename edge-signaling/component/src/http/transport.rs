//! The HTTP transport of protocol v1 (docs/protocol.md "HTTP transport"):
//! `connect`, `send`, `poll` and `close`, over mailboxes in the KV.
//!
//! A connection is a server-minted id; its server frames wait in its
//! mailbox until acknowledged, and `http-conn/<conn>` remembers when it last
//! made a request (for the idle close). No instance keeps anything between
//! requests, so any instance can answer any request of any connection.

use std::time::Duration;

use edge_signaling::apply::KvStore;
use edge_signaling::kv::{KvError, KvRead};
use edge_signaling::signaling::ENTROPY_BYTES;
use edge_signaling::{Delivery, ErrorCode};
use serde::{Deserialize, Serialize};

use super::{entropy, housekeeping, mailbox, now_ms, Reply, Request};
use crate::bucket::Bucket;
use crate::core;

/// How long a poll waits for frames before it answers empty, unless
/// `TERN_HTTP_POLL_MS` says otherwise (the server announces it in
/// `connect`'s `poll_ms`). A client that vanishes mid-poll is closed as idle
/// [`housekeeping::IDLE_MS`] after its poll ends, since a waiting poll counts
/// as activity: shorter polls notice vanished clients sooner, at the cost of
/// more requests.
pub const POLL_MS: u64 = 20_000;

fn poll_ms() -> u64 {
    std::env::var("TERN_HTTP_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&ms| ms > 0)
        .unwrap_or(POLL_MS)
}
/// How often a waiting poll looks at its mailbox: the bound on how late it
/// wakes after a frame lands (the KV has no notifications to wait on).
const POLL_STEP_MS: u64 = 20;
/// How often a waiting poll counts as activity of its connection, well
/// inside [`housekeeping::IDLE_MS`] so a connection whose only request is a
/// long poll is never closed as idle.
const POLL_TOUCH_MS: u64 = 5_000;

pub fn seen_key(conn: &str) -> String {
    format!("http-conn/{conn}")
}

/// Prefix of every [`seen_key`]: the idle sweep lists it.
pub const SEEN_PREFIX: &str = "http-conn/";

/// Value of [`seen_key`].
#[derive(Serialize, Deserialize)]
pub struct Seen {
    /// The connection's last request (unix ms).
    pub at_ms: u64,
}

fn unavailable(e: KvError) -> Reply {
    Reply::error(503, "unavailable", e.to_string())
}

fn unknown(conn: &str) -> Reply {
    Reply::error(
        404,
        "unknown_connection",
        format!("no open connection {conn:?}; connect again and join with your session"),
    )
}

/// `conn` and `ack` of a request, or the 400 answer.
fn params(req: &Request) -> Result<(String, u64), Reply> {
    let conn = req
        .query("conn")
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .ok_or_else(|| Reply::error(400, "bad_request", "missing ?conn="))?;
    let ack = match req.query("ack") {
        None => 0,
        Some(a) => a
            .parse()
            .map_err(|_| Reply::error(400, "bad_request", "ack must be a whole number"))?,
    };
    Ok((conn.to_string(), ack))
}

fn touch(bucket: &mut Bucket, conn: &str, now: u64) -> Result<(), KvError> {
    // Last writer wins: any request of the connection proves it is alive.
    let v = serde_json::to_vec(&Seen { at_ms: now }).expect("serializes");
    bucket.put(&seen_key(conn), &v)
}

/// `POST /v1/http/connect`.
pub fn connect(now: u64) -> Reply {
    let conn = hex::encode(entropy(16));
    let made = Bucket::open().and_then(|mut b| {
        mailbox::create(&mut b, &conn)?;
        touch(&mut b, &conn, now)
    });
    if let Err(e) = made {
        return unavailable(e);
    }
    housekeeping::maybe_tick(now);
    Reply::json(
        200,
        serde_json::json!({"conn": conn, "poll_ms": poll_ms()}).to_string(),
    )
}

/// The first step of every send and poll: the connection and `ack` named in
/// the query, its mailbox trimmed to what the client has not acknowledged, or the
/// answer to give instead (bad query, unknown connection, store down).
fn acknowledged(req: &Request) -> Result<(String, u64, Bucket), Reply> {
    let (conn, ack) = params(req)?;
    let mut bucket = Bucket::open().map_err(unavailable)?;
    match mailbox::acknowledge(&mut bucket, &conn, ack) {
        Ok(Some(_)) => Ok((conn, ack, bucket)),
        Ok(None) => Err(unknown(&conn)),
        Err(e) => Err(unavailable(e)),
    }
}

/// `POST /v1/http/send?conn=C&ack=N`: handle one client frame, answer with
/// every mailbox frame after `N` (so `joined`, `pong` and errors come back
/// in the same round trip).
pub fn send(now: u64, req: &Request) -> Reply {
    let (conn, ack, mut bucket) = match acknowledged(req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(e) = touch(&mut bucket, &conn, now) {
        return unavailable(e);
    }
    let out = match std::str::from_utf8(&req.body) {
        Ok(text) => core::frame(now, &conn, text, &entropy(ENTROPY_BYTES as u64 + 8)),
        Err(_) => core::error(
            &conn,
            ErrorCode::BadRequest,
            "frames are JSON text (UTF-8); binary is not part of protocol v1".into(),
        ),
    };
    deliver(&mut bucket, now, out);
    housekeeping::maybe_tick(now);
    match mailbox::read(&bucket, &conn) {
        Ok(Some(mb)) => Reply::json(200, mb.answer(ack)),
        // Closed while we handled the frame (its mailbox overflowed).
        Ok(None) => unknown(&conn),
        Err(e) => unavailable(e),
    }
}

/// `GET /v1/http/poll?conn=C&ack=N`: long poll.
pub fn poll(now: u64, req: &Request) -> Reply {
    let (conn, ack, mut bucket) = match acknowledged(req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let wait_ms = poll_ms();
    let mut touched = 0;
    let mut t = now;
    loop {
        if t.saturating_sub(touched) >= POLL_TOUCH_MS {
            if let Err(e) = touch(&mut bucket, &conn, t) {
                return unavailable(e);
            }
            touched = t;
        }
        match mailbox::read(&bucket, &conn) {
            Ok(Some(mb)) if !mb.after(ack).is_empty() => return Reply::json(200, mb.answer(ack)),
            Ok(Some(_)) => {}
            Ok(None) => return unknown(&conn),
            Err(e) => return unavailable(e),
        }
        if t.saturating_sub(now) >= wait_ms {
            return Reply::json(200, format!(r#"{{"frames":[],"last":{ack}}}"#));
        }
        // A waiting poll keeps failover going while nothing else arrives.
        housekeeping::maybe_tick(t);
        std::thread::sleep(Duration::from_millis(POLL_STEP_MS));
        t = now_ms();
    }
}

/// `POST /v1/http/close?conn=C`: as if the socket dropped.
pub fn close(now: u64, req: &Request) -> Reply {
    let (conn, _) = match params(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut bucket = match Bucket::open() {
        Ok(b) => b,
        Err(e) => return unavailable(e),
    };
    match mailbox::read(&bucket, &conn) {
        Ok(Some(_)) => {}
        Ok(None) => return unknown(&conn),
        Err(e) => return unavailable(e),
    }
    match drop_connection(&mut bucket, now, &conn) {
        Ok(()) => Reply::empty(204),
        Err(e) => unavailable(e),
    }
}

/// Close `conn` like a dropped socket: forget its mailbox, then let the
/// core mark its participant away (it may resume within the grace period).
pub fn drop_connection(bucket: &mut Bucket, now: u64, conn: &str) -> Result<(), KvError> {
    mailbox::remove(bucket, conn)?;
    bucket.delete(&seen_key(conn))?;
    let out = core::disconnect(now, conn)?;
    deliver(bucket, now, out);
    Ok(())
}

/// Put each frame in its connection's mailbox, in order. Frames for
/// connections that are not (or no longer) HTTP connections are dropped, as
/// a closed socket drops them. A mailbox that overflows closes its
/// connection.
pub fn deliver(bucket: &mut Bucket, now: u64, deliveries: Vec<Delivery>) {
    // Group per connection, keeping each connection's order: one swap each.
    let mut by_conn: Vec<(String, Vec<String>)> = Vec::new();
    for d in deliveries {
        match by_conn.iter_mut().find(|(c, _)| *c == d.conn) {
            Some((_, frames)) => frames.push(d.frame),
            None => by_conn.push((d.conn, vec![d.frame])),
        }
    }
    for (conn, frames) in by_conn {
        match mailbox::append(bucket, &conn, &frames) {
            Ok(Some(mb)) if mb.overflowing() => {
                eprintln!("tern: closing HTTP connection {conn}: mailbox overflow");
                // Disconnect produces no frames for the closed connection
                // itself, so this does not recurse into the same mailbox.
                if let Err(e) = drop_connection(bucket, now, &conn) {
                    eprintln!("tern: closing {conn} failed: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("tern: delivering to {conn} failed: {e}"),
        }
    }
}

/// Read the `at_ms` of a connection's last request.
pub fn last_seen(bucket: &Bucket, conn: &str) -> Result<Option<u64>, KvError> {
    Ok(bucket
        .get(&seen_key(conn))?
        .and_then(|raw| serde_json::from_slice::<Seen>(&raw).ok())
        .map(|s| s.at_ms))
}
