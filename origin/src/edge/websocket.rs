//! The WebSocket gateway: terminates browser sockets at `/v1/signal`, feeds
//! each text frame to the signaling component and delivers what it returns
//! to the right sockets.
//!
//! The gateway holds only the map from connection id to socket writer, which
//! is inherently local to this process; everything about rooms and
//! participants lives in the KV and is decided by the component.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use edge_signaling::ErrorCode;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::edge::connections::local_error;
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

pub async fn upgrade(State(app): State<Arc<App>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| serve(app, socket))
}

async fn serve(app: Arc<App>, socket: WebSocket) {
    let id = app.conns.next_id(&app.edge, &app.boot);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    app.conns.insert(&id, tx);
    tracing::debug!(conn = %id, "connected");

    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    // Frames from one socket are handled strictly in order.
    while let Some(msg) = stream.next().await {
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
    writer.abort();
    tracing::debug!(conn = %id, "disconnected");
}
