//! cloud-bridge: an MQTT 3.1.1/5 server whose storage is Apache RocketMQ Light Message
//! Queues, written and read in exactly the layout of Apache rocketmq-mqtt.
//!
//! Its modules, from the bottom up: each refers only to modules listed before it
//! (`tests/e2e/tests/modules.rs` checks that no module cycle comes back).
//!
//! - [`error`]: the crate's one error type (and which table quota a write broke);
//! - [`lmq`]: rocketmq-mqtt's queue naming and dispatch rules, used by both paths;
//! - [`rocketmq`]: the RocketMQ remoting client: name servers, brokers, producer;
//! - [`config`]: the TOML configuration, checked;
//! - [`auth`]: credentials (HmacSHA1, client certificates) and topic ACLs;
//! - [`meta`]: shared state: kvconfig meta; retained, sessions, wills, wildcard leases;
//! - [`bridge`]: what every connection shares (config, producer, meta, tables, figures);
//! - [`publish`]: the write path: a PUBLISH becomes one RocketMQ message in its LMQs;
//! - [`subscribe`]: the read path: sessions, LMQ readers, offsets, the retry queue;
//! - [`connect`]: the bridge as the `mqtt::broker::Broker`: CONNECT, delayed wills;
//! - [`metrics`]: the metrics, health and status endpoint;
//! - [`admin`]: `cloud-bridge init` and `cloud-bridge wildcard add|remove|list`;
//! - [`server`]: start and stop: listeners, state table tails, sweepers.

pub mod admin;
pub mod auth;
pub mod bridge;
pub mod config;
pub mod connect;
pub mod error;
pub mod lmq;
pub mod meta;
pub mod metrics;
pub mod publish;
pub mod rocketmq;
pub mod server;
pub mod subscribe;

pub use error::Error;
