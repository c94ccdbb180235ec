//! MQTT 3.1.1 and 5 server-side protocol handling, shared by edge-agent and cloud-bridge:
//! one implementation of connections, sessions' QoS flows, keepalive, wills and topic
//! rules, with storage behind the [`broker::Broker`] and [`broker::Session`] traits.

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
