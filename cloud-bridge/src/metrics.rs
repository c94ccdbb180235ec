//! The bridge's metrics and health endpoint (`[metrics] bind`, 127.0.0.1:9182 by default).
//!
//! `/metrics` (OpenMetrics text, `prometheus-client`): the shared `mqtt` crate's
//! connection and publish counters, the persistent sessions connected here, and the
//! RocketMQ sends (latency histogram of successful sends, failures, timeouts; see
//! `bridge/send_metrics.rs`), the state tables' size and the writes refused by quotas.
//! `/health` is 200 when the routes of every first-level topic are known (the name
//! server answered, cached for 30 s like publishes use them), 503 otherwise.
//! `/status` is the same figures as JSON. The HTTP side is `mqtt::metrics::endpoint`,
//! shared with edge-agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use mqtt::metrics::encode::{counter, counter_family, gauge, gauge_family};
use mqtt::metrics::{Exporter, Health, ServerCounterValues, ServerCounters};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::bridge::{Bridge, SendValues};

/// How long `/health` waits for the name server.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// The bridge's figures at one instant (`/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The bridge's version.
    pub version: String,
    /// Bound MQTT listeners: (name, address).
    pub listeners: Vec<(String, SocketAddr)>,
    /// Connections and publishes.
    pub server: ServerCounterValues,
    /// Persistent sessions connected to this bridge.
    pub persistent_sessions: u64,
    /// RocketMQ sends.
    pub rocketmq: SendValues,
    /// State tables held by this bridge: (table, entries, bytes).
    #[serde(default)]
    pub state: Vec<(String, u64, u64)>,
    /// Writes refused by a `[quotas]` bound: (table, quota, count).
    #[serde(default)]
    pub quota_refused: Vec<(String, String, u64)>,
    /// Wildcard registrations this bridge pruned (`meta/wildcards.rs`).
    #[serde(default)]
    pub wildcards_pruned: u64,
}

/// Where the figures come from.
#[derive(Debug, Clone)]
pub struct BridgeExporter {
    /// The bridge.
    pub bridge: Bridge,
    /// Connection and publish counters of the listeners.
    pub server: Arc<ServerCounters>,
    /// The bound listeners.
    pub listeners: Vec<(String, SocketAddr)>,
}

impl BridgeExporter {
    /// Gathers every figure now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            listeners: self.listeners.clone(),
            server: self.server.values(),
            persistent_sessions: self.bridge.local_session_count() as u64,
            rocketmq: self.bridge.send_metrics().values(),
            state: self
                .bridge
                .tables()
                .all()
                .iter()
                .map(|t| {
                    let (entries, bytes) = t.usage();
                    (t.name().to_owned(), entries as u64, bytes as u64)
                })
                .collect(),
            quota_refused: self
                .bridge
                .quota_refusals()
                .into_iter()
                .map(|((table, quota), n)| (table.to_owned(), quota.to_owned(), n))
                .collect(),
            wildcards_pruned: self.bridge.wildcards().pruned(),
        }
    }

    /// The OpenMetrics exposition (metric names prefixed `cloud_bridge_`).
    pub fn openmetrics(&self) -> String {
        let mut registry = Registry::with_prefix("cloud_bridge");
        registry.register_collector(Box::new(Encoded {
            snapshot: self.snapshot(),
            latency: self.bridge.send_metrics().latency.clone(),
        }));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "metrics not encoded");
        }
        out
    }
}

/// A snapshot and the live histogram, as a `prometheus-client` collector.
#[derive(Debug)]
struct Encoded {
    snapshot: Snapshot,
    latency: Histogram,
}

impl Collector for Encoded {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.snapshot;
        let version = [([("version", s.version.as_str())], 1)];
        gauge_family(&mut e, "build_info", "The bridge's version", &version)?;
        s.server.encode(&mut e)?;
        gauge(
            &mut e,
            "persistent_sessions",
            "Persistent sessions connected to this bridge",
            s.persistent_sessions,
        )?;
        let entries: Vec<_> = s
            .state
            .iter()
            .map(|(t, n, _)| ([("table", t.as_str())], *n))
            .collect();
        gauge_family(
            &mut e,
            "state_entries",
            "Entries of the state tables (retained messages, sessions, wills, wildcard leases) held here",
            &entries,
        )?;
        let bytes: Vec<_> = s
            .state
            .iter()
            .map(|(t, _, b)| ([("table", t.as_str())], *b))
            .collect();
        gauge_family(
            &mut e,
            "state_bytes",
            "Bytes (keys + values) of the state tables held here",
            &bytes,
        )?;
        let refused: Vec<_> = s
            .quota_refused
            .iter()
            .map(|(t, q, n)| ([("table", t.as_str()), ("quota", q.as_str())], *n))
            .collect();
        counter_family(
            &mut e,
            "quota_refused",
            "Writes refused by a [quotas] bound (MQTT reason 0x97)",
            &refused,
        )?;
        counter(
            &mut e,
            "wildcards_pruned",
            "Wildcard registrations taken out of kvconfig after no subscriber used them for [subscriptions] prune_wildcards_after_secs",
            s.wildcards_pruned,
        )?;
        let r = &s.rocketmq;
        counter(
            &mut e,
            "rocketmq_sent",
            "Messages stored in RocketMQ",
            r.sent,
        )?;
        counter(
            &mut e,
            "rocketmq_send_failed",
            "RocketMQ sends refused or failed",
            r.failed,
        )?;
        counter(
            &mut e,
            "rocketmq_sends_pipelined",
            "Sends queued in order on a broker with one send thread, letting the next send of their topic go before their answer",
            r.pipelined,
        )?;
        counter(
            &mut e,
            "rocketmq_send_timeouts",
            "RocketMQ sends without an answer within send_timeout_ms",
            r.timed_out,
        )?;
        let h = &self.latency;
        h.encode(e.encode_descriptor(
            "rocketmq_send_seconds",
            "Latency of successful RocketMQ sends (first attempt to SEND_OK)",
            None,
            h.metric_type(),
        )?)
    }
}

impl Exporter for BridgeExporter {
    fn metrics(&self) -> BoxFuture<'static, String> {
        let this = self.clone();
        Box::pin(async move { this.openmetrics() })
    }

    fn health(&self) -> BoxFuture<'static, Health> {
        let this = self.clone();
        Box::pin(async move {
            let routes = tokio::time::timeout(HEALTH_TIMEOUT, this.bridge.cluster_brokers()).await;
            let problem = match routes {
                Ok(Ok(brokers)) if !brokers.is_empty() => None,
                Ok(Ok(_)) => Some("no broker serves the first-level topics".to_owned()),
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!(
                    "no answer from the name server in {HEALTH_TIMEOUT:?}"
                )),
            };
            let body = serde_json::json!({
                "status": if problem.is_none() { "ok" } else { "unavailable" },
                "listeners": this.listeners.len(),
                "rocketmq": problem.as_deref().unwrap_or("routes known"),
            });
            Health {
                ok: problem.is_none() && !this.listeners.is_empty(),
                json: body.to_string(),
            }
        })
    }

    fn status(&self) -> BoxFuture<'static, String> {
        let this = self.clone();
        Box::pin(async move {
            serde_json::to_string(&this.snapshot())
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
        })
    }
}
