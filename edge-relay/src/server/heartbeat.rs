//! Signed heartbeats to the signaling plane.
//!
//! Every `--heartbeat-ms` we POST a [`Heartbeat`] to
//! `{signaling}/v1/relays/heartbeat`. Failures are logged (first one, then at
//! most every 10 s, and the recovery) and never stop the relay: media keeps
//! flowing while signaling is away, and signaling notices our silence itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tern_common::relay::{sign, Heartbeat, Listener, Load, RelayState, SIGNATURE_HEADER};
use tokio::sync::Notify;

/// Figures the UDP loop publishes for the heartbeat task.
#[derive(Debug, Default)]
pub struct Shared {
    pub allocations: AtomicU64,
    pub relayed_packets: AtomicU64,
    pub draining: AtomicBool,
    /// Poked on SIGTERM so the draining heartbeat goes out at once.
    pub wake: Notify,
}

pub struct Heartbeater {
    pub url: String,
    pub secret: Vec<u8>,
    pub id: String,
    pub region: String,
    pub advertise: String,
    pub interval: Duration,
    pub shared: Arc<Shared>,
}

impl Heartbeater {
    pub async fn run(self) {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mut seq = 0u64;
        let mut last = (
            Instant::now(),
            self.shared.relayed_packets.load(Ordering::Relaxed),
        );
        let mut failing_since: Option<Instant> = None;
        let mut last_log = Instant::now() - Duration::from_secs(3600);
        loop {
            seq += 1;
            let now = Instant::now();
            let packets = self.shared.relayed_packets.load(Ordering::Relaxed);
            let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
            let pps = ((packets - last.1) as f64 / secs).round() as u64;
            last = (now, packets);
            let draining = self.shared.draining.load(Ordering::Relaxed);
            let hb = Heartbeat {
                id: self.id.clone(),
                region: self.region.clone(),
                listeners: vec![Listener {
                    transport: "udp".into(),
                    address: self.advertise.clone(),
                }],
                state: if draining {
                    RelayState::Draining
                } else {
                    RelayState::Active
                },
                load: Load {
                    allocations: self.shared.allocations.load(Ordering::Relaxed),
                    pps,
                },
                seq,
                sent_at_ms: unix_ms(),
            };
            let timeout = self.interval.max(Duration::from_millis(500)) * 2;
            let result = tokio::time::timeout(timeout, self.post(&client, &hb))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {timeout:?}")));
            match (result, failing_since) {
                (Ok(()), Some(since)) => {
                    tracing::info!(down_for = ?since.elapsed(), "heartbeats accepted again");
                    failing_since = None;
                }
                (Ok(()), None) => {}
                (Err(e), since) => {
                    if since.is_none() || last_log.elapsed() >= Duration::from_secs(10) {
                        tracing::warn!(url = %self.url, error = %format!("{e:#}"), "heartbeat failed; will keep trying");
                        last_log = Instant::now();
                    }
                    failing_since.get_or_insert(now);
                }
            }
            if draining {
                tracing::info!(seq, "sent draining heartbeat");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.shared.wake.notified() => {}
            }
        }
    }

    async fn post(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        hb: &Heartbeat,
    ) -> anyhow::Result<()> {
        let body = serde_json::to_vec(hb)?;
        let signature = sign(&self.secret, &body);
        let req = hyper::Request::post(&self.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(Full::new(Bytes::from(body)))
            .context("building request")?;
        let resp = client.request(req).await.context("sending")?;
        let status = resp.status();
        if !status.is_success() {
            bail!("signaling answered {status}");
        }
        Ok(())
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
