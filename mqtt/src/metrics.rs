//! Metrics and health of an MQTT server, shared by edge-agent and cloud-bridge: one
//! implementation of the connection and publish counters ([`ServerCounters`], updated by
//! `listener.rs` and `connection.rs`), of the OpenMetrics encoding helpers
//! ([`encode`]), of the HTTP endpoint that serves `/metrics`, `/health` and `/status`
//! ([`endpoint`]), and of the small HTTP GET the `status` commands use ([`fetch`]).
//!
//! Each binary implements [`Exporter`]: it gathers its figures at scrape time (journal,
//! broker, RocketMQ) and renders them with `prometheus-client` (the official Prometheus
//! client, OpenMetrics text).

pub mod counters;
pub mod encode;
pub mod endpoint;
pub mod fetch;

pub use counters::{ServerCounterValues, ServerCounters};
pub use endpoint::{Exporter, Health, MetricsConfig};
