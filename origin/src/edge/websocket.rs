//! The WebSocket gateway: terminates browser sockets at `/v1/signal`, feeds
//! each text frame to the signaling component and delivers what it returns
//! to the right sockets.
//!
//! The gateway holds only the map from connection id to socket writer, which
//! is inherently local to this process; everything about rooms and
//! participants lives in the KV and is decided by the component.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use edge_signaling::ErrorCode;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};

use crate::edge::connections::local_error;
use crate::edge::outbound::{self, Writing};
use crate::edge::relay_link::Link;
use crate::edge::socket_limits::{FrameRate, IpSlot};
use crate::edge::App;

/// Frames up to this size reach the component; larger ones (up to the
/// WebSocket limit) get a `frame_too_large` error and the socket stays open.
pub const MAX_FRAME_BYTES: usize = edge_signaling::Config::DEFAULT_MAX_FRAME_BYTES;
/// Messages above this close the socket (protects memory before parsing).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Read buffer per WebSocket. tungstenite zero-fills the free part of its
/// read buffer (up to this size) before every read attempt, including the
/// ones that find nothing; at its 128 KiB default that memset costs more
/// than handling a signaling frame. Frames are small; a larger one grows
/// the buffer as it arrives.
pub const READ_BUFFER_BYTES: usize = 4096;

pub async fn upgrade(
    State(app): State<Arc<App>>,
    ConnectInfo(link): ConnectInfo<Link>,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = link.peer().ip();
    let Some(slot) = app.sockets_per_ip.admit(ip, app.limits.sockets_per_ip) else {
        tracing::warn!(%ip, "refusing a socket: too many open from this address");
        let msg = format!(
            "{} sockets are open from this address; that is the limit",
            app.limits.sockets_per_ip
        );
        return (StatusCode::TOO_MANY_REQUESTS, msg).into_response();
    };
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| serve(app, socket, slot))
}

/// How long a socket being closed for its own sake (over its budget) gets to
/// take the close frame before it is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

async fn serve(app: Arc<App>, socket: WebSocket, _slot: IpSlot) {
    let id = app.conns.next_id(&app.edge, &app.boot);
    let (sink, mut stream) = socket.split();
    let (out, writing) = outbound::queue();
    let mut closing = writing.close.clone();
    app.conns.insert(&id, out);
    tracing::debug!(conn = %id, "connected");
    let writer = tokio::spawn(write(sink, writing));
    let mut rate = FrameRate::new(&app.limits, Instant::now());

    // Frames from one socket are handled strictly in order.
    loop {
        let msg = tokio::select! {
            biased;
            _ = closing.changed() => break,
            msg = stream.next() => msg,
        };
        let Some(msg) = msg else { break };
        let out = match msg {
            Ok(Message::Text(text)) if text.len() > MAX_FRAME_BYTES => local_error(
                &id,
                ErrorCode::FrameTooLarge,
                format!(
                    "frame is {} bytes; the limit is {MAX_FRAME_BYTES}",
                    text.len()
                ),
            ),
            Ok(Message::Text(text)) => {
                // Over the rate, the frame waits (and the socket is not
                // read meanwhile), unless the socket is closed first.
                if let Some(wait) = rate.take(Instant::now()) {
                    tokio::select! {
                        biased;
                        _ = closing.changed() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                app.handle_frame(&id, text.to_string()).await;
                continue;
            }
            Ok(Message::Binary(_)) => local_error(
                &id,
                ErrorCode::BadRequest,
                "binary frames are not part of protocol v1; send JSON text".into(),
            ),
            Ok(Message::Close(_)) => break,
            Ok(_) => continue, // ping/pong are answered by the WebSocket layer
            Err(e) => {
                tracing::debug!(conn = %id, error = %e, "socket error");
                break;
            }
        };
        app.conns.deliver(out);
    }

    app.conns.remove(&id);
    app.handle_disconnect(&id).await;
    if closing.borrow().is_some() {
        // The writer is sending our close; give it its bounded time.
        let _ = tokio::time::timeout(CLOSE_WAIT * 2, writer).await;
    } else {
        writer.abort();
    }
    tracing::debug!(conn = %id, "disconnected");
}

/// Write queued frames to the socket until the queue ends or the edge asks
/// for a close (see [`outbound`]); then close, giving a client that does not
/// read [`CLOSE_WAIT`] to take the close frame.
async fn write(mut sink: SplitSink<WebSocket, Message>, mut w: Writing) {
    let close = loop {
        let m = tokio::select! {
            biased;
            _ = w.close.changed() => break w.close.borrow().clone(),
            m = w.rx.recv() => m,
        };
        let Some(m) = m else { break None };
        let len = match &m {
            Message::Text(t) => t.len(),
            _ => 0,
        };
        let sent = tokio::select! {
            biased;
            _ = w.close.changed() => break w.close.borrow().clone(),
            sent = sink.send(m) => sent,
        };
        w.backlog.written(len);
        if sent.is_err() {
            break None;
        }
    };
    if let Some(frame) = close {
        let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
}
