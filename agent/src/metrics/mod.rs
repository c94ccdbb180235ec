//! The agent's metrics and health endpoint (`[metrics] bind`, 127.0.0.1:9181 by default)
//! and what `edge-agent status` prints.
//!
//! Every figure is read when asked (a scrape, a health check, `status`), from where it
//! lives: the journal's statistics (`Journal::stats`: depth, bytes, oldest age, drop
//! counters by reason), the broker's delivery counters, the shared `mqtt` crate's
//! connection and publish counters, the uplink's status handle and the sensors' stats.
//! One [`Snapshot`] is gathered and then encoded as OpenMetrics text (`prometheus-client`,
//! the official Prometheus client), as JSON (`/status`), or as text for a person
//! (`render.rs`), so all three always agree. The HTTP side is `mqtt::metrics::endpoint`,
//! shared with cloud-bridge.

mod render;
mod snapshot;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use mqtt::metrics::{Exporter, Health, ServerCounters};

pub use render::render_status;
pub use snapshot::{
    BrokerFigures, JournalFigures, ListenerInfo, SensorValues, Snapshot, UplinkValues,
};

use crate::broker::LocalBroker;
use crate::journal::Journal;

/// The endpoint's address when `[metrics] bind` is unset.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9181));

/// Reads the uplink's figures (its status handle lives in the uplink).
pub type UplinkSource = Arc<dyn Fn() -> UplinkValues + Send + Sync>;
/// Reads every sensor's figures.
pub type SensorSource = Arc<dyn Fn() -> Vec<SensorValues> + Send + Sync>;

/// Where the figures come from. Cheap to clone.
#[derive(Clone)]
pub struct AgentExporter {
    /// The journal.
    pub journal: Journal,
    /// The local broker.
    pub broker: LocalBroker,
    /// Connection and publish counters of the MQTT listeners.
    pub server: Arc<ServerCounters>,
    /// The bound MQTT listeners.
    pub listeners: Vec<ListenerInfo>,
    /// The uplink, once it runs.
    pub uplink: Option<UplinkSource>,
    /// The sensors, when configured.
    pub sensors: Option<SensorSource>,
}

impl std::fmt::Debug for AgentExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentExporter")
            .field("listeners", &self.listeners)
            .field("uplink", &self.uplink.is_some())
            .field("sensors", &self.sensors.is_some())
            .finish_non_exhaustive()
    }
}

impl AgentExporter {
    /// Gathers every figure now.
    pub async fn snapshot(&self) -> Snapshot {
        let (journal, journal_error) = match self.journal.stats().await {
            Ok(s) => (Some(JournalFigures::from(&s)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let b = self.broker.counters();
        Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            listeners: self.listeners.clone(),
            server: self.server.values(),
            broker: BrokerFigures {
                sessions: self.broker.sessions() as u64,
                delivered: b.delivered,
                dropped_subscriber_full: b.dropped_subscriber_full,
                dropped_queue_full: b.dropped_queue_full,
                dropped_cloud_topic_refused: self.broker.uplink_refused(),
                dropped_db_full: b.dropped_db_full,
                retained_refused: b.retained_refused,
                retained: b.retained.0,
                retained_bytes: b.retained.1,
                sessions_refused: b.sessions_refused,
                subscriptions_refused: b.subscriptions_refused,
                auth_busy: self.broker.auth_busy(),
                db_bytes: self.broker.db_bytes(),
            },
            journal,
            journal_error,
            uplink: self.uplink.as_ref().map(|u| u()).unwrap_or_default(),
            sensors: self.sensors.as_ref().map(|s| s()).unwrap_or_default(),
        }
    }
}

impl Exporter for AgentExporter {
    fn metrics(&self) -> BoxFuture<'static, String> {
        let this = self.clone();
        Box::pin(async move { this.snapshot().await.openmetrics() })
    }

    fn health(&self) -> BoxFuture<'static, Health> {
        let this = self.clone();
        Box::pin(async move {
            let journal = this.journal.stats().await;
            // After a failed WAL flush the journal refuses appends until a restart.
            let usable = journal.as_ref().is_ok_and(|s| !s.writer.wal_flush_failed);
            let body = serde_json::json!({
                "status": if usable { "ok" } else { "unavailable" },
                "listeners": this.listeners.len(),
                "journal": match &journal {
                    Ok(s) if s.writer.wal_flush_failed => {
                        "a WAL flush failed: appends are refused until a restart".to_owned()
                    }
                    Ok(_) => "open".to_owned(),
                    Err(e) => e.to_string(),
                },
            });
            Health {
                ok: usable && !this.listeners.is_empty(),
                json: body.to_string(),
            }
        })
    }

    fn status(&self) -> BoxFuture<'static, String> {
        let this = self.clone();
        Box::pin(async move {
            serde_json::to_string(&this.snapshot().await)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
        })
    }
}
