//! The edge as the prober's host ([`crate::probe::ProbeHost`]): the
//! directory it probes is this edge's view, its verdicts and crash reports
//! go into the store, and a relay found failing runs the tick at once.

use std::sync::Arc;

use edge_signaling::directory::RelayView;
use edge_signaling::kv::KvError;
use edge_signaling::model::{CrashReport, ProbeRecord};

use crate::edge::{now_ms, App};

/// This edge, seen by its prober.
pub struct EdgeProbes(pub Arc<App>);

impl crate::probe::ProbeHost for EdgeProbes {
    async fn relays(&self) -> Result<Vec<RelayView>, KvError> {
        self.0.relay_view().await
    }

    async fn record(&self, relay: &str, record: &ProbeRecord) {
        let key = edge_signaling::keys::relay_probe(&self.0.edge, relay);
        let value = serde_json::to_vec(record).expect("serializes");
        if let Err(e) = self.0.put("default", key, value).await {
            tracing::warn!(error = %e, "recording a probe verdict failed");
        }
    }

    /// Other edges never had this relay's connection: tell them it
    /// crashed, so that they move their calls as soon as this one does.
    async fn report_crash(&self, relay: &str) {
        let report = CrashReport {
            at_ms: now_ms(),
            edge: self.0.edge.clone(),
        };
        let key = edge_signaling::keys::relay_crashed(relay);
        let value = serde_json::to_vec(&report).expect("serializes");
        if let Err(e) = self.0.put("default", key, value).await {
            tracing::warn!(error = %e, "recording a crash report failed");
        }
    }

    fn tick_now(&self) {
        self.0.tick_now.notify_one();
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }
}
