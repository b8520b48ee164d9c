//! Signed heartbeats to the signaling plane.
//!
//! Every `--heartbeat-ms` we POST a [`Heartbeat`] to
//! `{signaling}/v1/relays/heartbeat`. Failures are logged (first one, then at
//! most every 10 s, and the recovery) and never stop the relay: media keeps
//! flowing while signaling is away, and signaling notices our silence itself.
//!
//! With several signaling edges (`--signaling` takes a comma-separated list)
//! a heartbeat goes to one of them, the same one while it answers; when it
//! fails (refused at once, or no answer within the heartbeat interval) the
//! same heartbeat is sent to the next edge straight away. Edges share the
//! store, so any edge will do, and a dead edge costs at most one interval of
//! delay instead of every relay looking dead to the edges that remain.
//! (Not all edges at once: each edge writes the relay's record on receipt,
//! so duplicates would halve the inter-arrival times the failure detector
//! learns from.)
//!
//! `load.cpu_percent` is this process's CPU over the last interval (100 =
//! one core). A relay started with `--standby` reports state `standby` (a
//! cold standby: signaling gives it calls only when its region has no active
//! relay left) until it drains.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tern_common::relay::{sign, Heartbeat, Listener, Load, RelayState, SIGNATURE_HEADER};
use tokio::sync::Notify;

/// Figures the engine task publishes for the heartbeat and admin tasks, and
/// the drain switch they share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub allocations: AtomicU64,
    pub relayed_packets: AtomicU64,
    pub draining: AtomicBool,
    /// Set once a heartbeat saying "draining" was sent (or there is no
    /// signaling to tell), so a drain never ends before signaling knows.
    pub draining_announced: AtomicBool,
    /// Poked on drain so the draining heartbeat goes out at once.
    pub wake: Notify,
    /// Poked by `POST /drain`; the same path as SIGTERM from there on.
    pub drain_requested: Notify,
}

impl Shared {
    /// Start a drain from the admin endpoint: the flag is set before this
    /// returns, so the next Allocate is already refused or redirected.
    pub(crate) fn request_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        self.drain_requested.notify_one();
    }
}

/// The client heartbeats go out on: `http://` and `https://` signaling
/// alike (operators are told to use HTTPS: a plaintext heartbeat can be
/// read and replayed on the way).
type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client that trusts the system's roots and, if given, the PEM
/// certificates in `extra_roots` (a private CA, or a self-signed edge).
pub(crate) fn client(extra_roots: Option<&std::path::Path>) -> anyhow::Result<HttpClient> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_roots {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
        for c in certs {
            roots
                .add(c)
                .with_context(|| format!("adding a root from {}", path.display()))?;
        }
    } else if added == 0 {
        tracing::warn!("no system root certificates: https:// signaling will not verify");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

pub(crate) struct Heartbeater {
    /// `{edge}/v1/relays/heartbeat` for every signaling edge, in order of
    /// preference.
    pub urls: Vec<String>,
    pub secret: Vec<u8>,
    pub id: String,
    pub region: String,
    pub listeners: Vec<Listener>,
    pub interval: Duration,
    /// Datapath threads, so signaling knows the CPU the relay can use.
    pub threads: u32,
    pub shared: Arc<Shared>,
    /// Cold standby: report `standby` instead of `active`.
    pub standby: bool,
    /// What the heartbeats go out on (see [`client`]).
    pub client: HttpClient,
}

impl Heartbeater {
    pub(crate) async fn run(self) {
        let client = self.client.clone();
        let mut seq = 0u64;
        // This run's epoch: signaling refuses an earlier run's heartbeats
        // once it has heard this one's.
        let boot = format!("{:016x}", rand::random::<u64>());
        let mut last = (
            Instant::now(),
            self.shared.relayed_packets.load(Ordering::Relaxed),
            super::metrics::process_cpu_seconds().unwrap_or(0.0),
        );
        let mut failing_since: Option<Instant> = None;
        // The edge that took the last heartbeat; we stay with it.
        let mut current = 0usize;
        let mut last_log = Instant::now() - Duration::from_secs(3600);
        loop {
            seq += 1;
            let now = Instant::now();
            let packets = self.shared.relayed_packets.load(Ordering::Relaxed);
            let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
            let pps = ((packets - last.1) as f64 / secs).round() as u64;
            let cpu = super::metrics::process_cpu_seconds().unwrap_or(last.2);
            let cpu_percent = ((cpu - last.2) / secs * 100.0).max(0.0);
            last = (now, packets, cpu);
            let draining = self.shared.draining.load(Ordering::Relaxed);
            let hb = Heartbeat {
                id: self.id.clone(),
                region: self.region.clone(),
                listeners: self.listeners.clone(),
                state: if draining {
                    RelayState::Draining
                } else if self.standby {
                    RelayState::Standby
                } else {
                    RelayState::Active
                },
                load: Load {
                    allocations: self.shared.allocations.load(Ordering::Relaxed),
                    pps,
                    cpu_percent: Some((cpu_percent * 10.0).round() / 10.0),
                    threads: Some(self.threads),
                },
                seq,
                sent_at_ms: unix_ms(),
                boot: boot.clone(),
            };
            let result = self.send(&client, &hb, &mut current).await;
            match (result, failing_since) {
                (Ok(()), Some(since)) => {
                    tracing::info!(down_for = ?since.elapsed(), "heartbeats accepted again");
                    failing_since = None;
                }
                (Ok(()), None) => {}
                (Err(e), since) => {
                    if since.is_none() || last_log.elapsed() >= Duration::from_secs(10) {
                        tracing::warn!(urls = ?self.urls, error = %format!("{e:#}"), "heartbeat failed; will keep trying");
                        last_log = Instant::now();
                    }
                    failing_since.get_or_insert(now);
                }
            }
            if draining {
                tracing::info!(seq, "sent draining heartbeat");
                self.shared
                    .draining_announced
                    .store(true, Ordering::Relaxed);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.shared.wake.notified() => {}
            }
        }
    }

    /// Send `hb` to the edge at `current`, moving on to the next edge (and
    /// staying there) on failure, until one takes it or all have failed.
    async fn send(
        &self,
        client: &HttpClient,
        hb: &Heartbeat,
        current: &mut usize,
    ) -> anyhow::Result<()> {
        // With one edge there is nowhere else to go: give it time. With
        // several, a silent edge must not hold the heartbeat past its beat.
        let timeout = if self.urls.len() > 1 {
            self.interval.max(Duration::from_millis(100))
        } else {
            self.interval.max(Duration::from_millis(500)) * 2
        };
        let mut last_err = anyhow::anyhow!("no signaling URL");
        for _ in 0..self.urls.len() {
            let url = &self.urls[*current % self.urls.len()];
            match tokio::time::timeout(timeout, self.post(client, url, hb)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last_err = e.context(url.clone()),
                Err(_) => last_err = anyhow::anyhow!("{url}: timed out after {timeout:?}"),
            }
            if self.urls.len() > 1 {
                *current = (*current + 1) % self.urls.len();
                tracing::info!(next = %self.urls[*current], error = %format!("{last_err:#}"), "heartbeat moves to the next signaling edge");
            }
        }
        Err(last_err)
    }

    async fn post(&self, client: &HttpClient, url: &str, hb: &Heartbeat) -> anyhow::Result<()> {
        let body = serde_json::to_vec(hb)?;
        let signature = sign(&self.secret, &body);
        let req = hyper::Request::post(url)
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

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
