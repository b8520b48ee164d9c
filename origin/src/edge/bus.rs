//! Deliveries between edges. When the component, running on edge A, returns a
//! frame for a connection held by edge B (connection ids start with the
//! edge's name), edge A publishes it on B's Redis channel and B's subscriber
//! writes it to the socket.
//!
//! Why pub/sub and not streams: a delivery is only useful to the one socket
//! it is for, right now; if that socket or its edge is gone, the frame is
//! worthless and the client recovers by resuming (which re-sends state).
//! Pub/sub adds one hop of latency and keeps nothing in Redis. What is lost:
//! frames published while an edge is reconnecting its subscriber (during a
//! Redis failover); signaling state itself is never in these messages.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::edge::{App, Forwarded};
use crate::host::Delivery;

/// Subscribe to this edge's channel for as long as the process runs,
/// reconnecting (and following a Sentinel failover) when the link drops.
pub fn spawn(app: Arc<App>) {
    let Some(redis) = app.kv.bus().cloned() else {
        return;
    };
    let channel = redis.edge_channel(&app.edge);
    tokio::spawn(async move {
        loop {
            match listen(&app, &redis.primary_client(), &channel).await {
                Ok(()) => tracing::warn!("edge bus subscription ended; resubscribing"),
                Err(e) => tracing::warn!(error = %e, "edge bus subscription failed; resubscribing"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let r = redis.clone();
            let _ = tokio::task::spawn_blocking(move || r.refresh_primary()).await;
        }
    });
}

async fn listen(app: &App, client: &redis::Client, channel: &str) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    tracing::info!(%channel, "edge bus subscribed");
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let payload: String = msg.get_payload()?;
        match serde_json::from_str::<Forwarded>(&payload) {
            Ok(f) => app.conns.deliver(
                f.deliveries
                    .into_iter()
                    .map(|(conn, frame)| Delivery { conn, frame })
                    .collect(),
            ),
            Err(e) => tracing::warn!(error = %e, "malformed edge bus message"),
        }
    }
    Ok(())
}
