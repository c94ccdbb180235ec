//! edge-agent: the gateway agent. It runs a local MQTT broker for devices ([`broker`],
//! on the shared `mqtt` crate), appends every uplink-bound message to the durable journal
//! ([`journal`]) before acknowledging it, and (next) sends the journal to the cloud.

pub mod acl;
pub mod auth;
pub mod broker;
pub mod config;
pub mod error;
pub mod fault_kind;
pub mod journal;
pub mod metrics;
pub mod sensors;
pub mod server;
pub mod state_dir;
pub mod uplink;

pub use error::{Error, Result};
