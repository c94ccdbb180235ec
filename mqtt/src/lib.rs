//! MQTT 3.1.1 and 5 server-side protocol handling, shared by edge-agent and cloud-bridge:
//! one implementation of connections, sessions' QoS flows, keepalive, wills and topic
//! rules, with storage behind the [`broker::Broker`] and [`broker::Session`] traits.
//!
//! Modules, from the wire inwards (each one's doc states its invariants):
//! - [`listener`]: accept loops (TCP, TLS, WebSocket), with [`admission`] (connections per
//!   server and per address, accept rate), [`tls`], [`websocket`] and [`quickack`];
//! - [`codec`]: bytes ⇄ [`packet`]s (version-neutral packets as the server sees them), with
//!   [`wellformed`] (the spec's rules rumqttc's decoders let through) and the MQTT 5
//!   reason codes and QoS levels mapped onto rumqttc's types (`reason_codes`, private);
//! - [`connection`]: one connection from CONNECT to close, the I/O driver of
//!   [`protocol`], the session core without I/O (packet ids, in-flight and QoS 2
//!   tables, Receive Maximum, topic aliases, keepalive), whose client side
//!   ([`protocol::ClientCore`]) the edge-agent's uplink drives;
//! - [`broker`]: the seam to storage ([`broker::Broker`], [`broker::Session`]), which
//!   each binary implements; [`registry`]: who is connected, and delayed wills;
//!   [`budget`]: bytes held by publishes being stored, server-wide;
//! - [`topic`]: topic and filter rules and matching; [`cloud_topic`]: what RocketMQ
//!   cannot carry;
//! - [`server`]: the scaffold both binaries start and stop on (the shared `[limits]`
//!   keys, binding listeners and the metrics endpoint, `stop(grace)`);
//! - around a server: [`config_file`] (shared TOML handling), [`metrics`] (counters and
//!   the `/metrics` endpoint), [`systemd`] (notify) and [`signal`] (SIGTERM/SIGINT);
//!   [`error`]: the crate's one error enum.

pub mod admission;
pub mod broker;
pub mod budget;
pub mod cloud_topic;
pub mod codec;
pub mod config_file;
pub mod connection;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod packet;
pub mod protocol;
pub mod quickack;
mod reason_codes;
pub mod registry;
pub mod server;
pub mod signal;
pub mod systemd;
pub mod tls;
pub mod topic;
pub mod websocket;
pub mod wellformed;

pub use error::Error;
