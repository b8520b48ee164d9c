//! TURN over TCP and TLS (RFC 8656 §3.1; not RFC 6062): the client <-> relay
//! leg is a byte stream of STUN messages and ChannelData frames, the relayed
//! leg stays UDP.
//!
//! Each connection gets a task that cuts the stream into messages and hands
//! them to the engine task, and a writer task that drains a bounded queue of
//! framed messages. The engine sees a connection as a [`FiveTuple`] with
//! transport TCP or TLS; everything it sends to that 5-tuple is routed back to
//! the connection's queue by the driver.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::inbox::{Shards, StreamInput};
use crate::quota::budget_key;
use crate::stun::HEADER_LEN;
use crate::{FiveTuple, Transport};

/// Bound on concurrent stream connections per listener, so a connection
/// flood exhausts a counter rather than file descriptors and memory.
const MAX_CONNECTIONS: usize = 10_000;
/// Framed messages queued towards one client before we drop (a client that
/// does not read must not grow our memory).
const OUT_QUEUE: usize = 256;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is closed (clients refresh
/// permissions every 5 minutes at the latest, so a live one never idles
/// this long).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Stream connections per client IP, shared by the TCP and TLS listeners,
/// and how many were refused. One address holding thousands of idle
/// connections would otherwise use up the listener's budget for everyone.
pub(crate) struct StreamLimits {
    per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    refused_per_ip: AtomicU64,
    refused_total: AtomicU64,
}

/// One admitted connection's place in its IP's budget, given back on drop.
pub(crate) struct IpSlot {
    limits: Arc<StreamLimits>,
    key: IpAddr,
}

impl StreamLimits {
    /// `per_ip == 0` disables the per-IP limit.
    pub(crate) fn new(per_ip: usize) -> StreamLimits {
        StreamLimits {
            per_ip,
            open: Mutex::new(HashMap::new()),
            refused_per_ip: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
        }
    }

    /// A place for one more connection from `ip`, or None (counted) when
    /// its address already holds `per_ip`.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = budget_key(ip);
        let mut open = self.open.lock().expect("stream limits lock");
        let n = open.entry(key).or_insert(0);
        if self.per_ip != 0 && *n >= self.per_ip {
            drop(open);
            self.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        Some(IpSlot {
            limits: self.clone(),
            key,
        })
    }

    fn refused_over_total(&self) {
        self.refused_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus lines for the refusals.
    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP tern_relay_stream_refused_total TCP/TLS connections closed at accept, by reason.\n\
             # TYPE tern_relay_stream_refused_total counter\n\
             tern_relay_stream_refused_total{{reason=\"per_ip\"}} {}\n\
             tern_relay_stream_refused_total{{reason=\"total\"}} {}",
            self.refused_per_ip.load(Ordering::Relaxed),
            self.refused_total.load(Ordering::Relaxed),
        );
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("stream limits lock");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Accept TCP (or, with `tls`, TLS) connections until the task is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    to_engine: Shards,
    limits: Arc<StreamLimits>,
) {
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, client) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%client, "too many connections; closing");
            limits.refused_over_total();
            continue;
        };
        let Some(ip_slot) = limits.admit(client.ip()) else {
            tracing::debug!(%client, "too many connections from this address; closing");
            continue;
        };
        let local = match tcp.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let _ = tcp.set_nodelay(true);
        let ft = FiveTuple {
            client,
            local,
            transport,
        };
        let to_engine = to_engine.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = (permit, ip_slot);
            match tls {
                None => connection(tcp, ft, to_engine).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, ft, to_engine).await,
                        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn connection<S>(stream: S, ft: FiveTuple, to_engine: Shards)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    if to_engine
        .send(StreamInput::Opened { ft, out })
        .await
        .is_err()
    {
        return;
    }
    // The writer ends when the engine drops our sender (after Closed).
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut reader = BufReader::new(reader);
    loop {
        match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut reader)).await {
            Ok(Ok(Some(bytes))) => {
                // Awaiting here (not try_send) pushes back on this client's
                // TCP window when the engine is busy; other clients' tasks
                // are unaffected.
                if to_engine
                    .send(StreamInput::Message { ft, bytes })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::debug!(client = %ft.client, error = %e, "stream closed");
                break;
            }
            Err(_) => {
                tracing::debug!(client = %ft.client, "idle stream closed");
                break;
            }
        }
    }
    let _ = to_engine.send(StreamInput::Closed { ft }).await;
    let _ = writer_task.await;
}

/// Why a stream cannot be framed: we close the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("neither STUN nor ChannelData (first byte {0:#04x})")]
    NotTurn(u8),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Read one STUN message (20-byte header + length) or ChannelData frame
/// (4-byte header + length, padded to 4 on streams). `None` at a clean EOF
/// between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut head[1..]).await?;
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let (total, padding) = match head[0] >> 6 {
        0b00 => (HEADER_LEN + len, 0),
        0b01 => (4 + len, (4 - len % 4) % 4),
        _ => return Err(FrameError::NotTurn(head[0])),
    };
    let mut bytes = vec![0u8; total];
    bytes[..4].copy_from_slice(&head);
    r.read_exact(&mut bytes[4..]).await?;
    let mut pad = [0u8; 3];
    r.read_exact(&mut pad[..padding]).await?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::framing::framed;

    #[tokio::test]
    async fn frames_stun_and_padded_channel_data() {
        let mut stream = Vec::new();
        let stun = crate::stun::MessageBuilder::new(
            crate::stun::Method::BINDING,
            crate::stun::Class::Request,
            [1; 12],
        )
        .finish();
        stream.extend_from_slice(&stun);
        stream.extend_from_slice(&framed(&[0x40, 0, 0, 5, 1, 2, 3, 4, 5]));
        stream.extend_from_slice(&[0x40, 0, 0, 4, 9, 9, 9, 9]);
        let mut r = &stream[..];
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), stun);
        assert_eq!(
            read_frame(&mut r).await.unwrap().unwrap(),
            [0x40, 0, 0, 5, 1, 2, 3, 4, 5]
        );
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap().len(), 8);
        assert!(read_frame(&mut r).await.unwrap().is_none());
        let mut bad = &[0xffu8, 0, 0, 0][..];
        assert!(matches!(
            read_frame(&mut bad).await,
            Err(FrameError::NotTurn(0xff))
        ));
    }
}
