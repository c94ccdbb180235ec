//! edge-agent: the gateway agent. It runs a local MQTT broker for devices ([`broker`],
//! on the shared `mqtt` crate), appends every uplink-bound message to the durable journal
//! ([`journal`]) before acknowledging it, and sends the journal to the cloud ([`uplink`]).
//!
//! # Modules, bottom up (each uses only the ones above it in this list)
//! - [`fault_kind`]: why a sensor fails (shared by sensors and errors).
//! - [`error`]: the crate's one error enum.
//! - [`state_dir`]: where the agent keeps its files.
//! - `sqlite_worker`: the thread that owns a SQLite connection and group-commits the
//!   requests of async callers (the journal's and the sessions database's).
//! - [`acl`]: `[[acl]]` rules, what a client may publish and subscribe to.
//! - [`topic_map`]: local ↔ cloud topic names (`[[uplink.map]]` rules).
//! - [`auth`]: `[auth]`, who may connect (certificates, Argon2 passwords).
//! - [`journal`]: `[journal]`, the durable SQLite queue of uplink-bound messages.
//! - [`broker`]: `[sessions]`, the local broker's backend and `broker.db`.
//! - [`sensors`]: `[[sensor]]`, sensor tasks publishing into the broker.
//! - [`uplink`]: `[uplink]`, `[downlink]`, the MQTT client draining the journal to the cloud.
//! - [`metrics`]: the metrics and health endpoint's figures and `status` text.
//! - [`config`]: the whole file, assembled from the sections above.
//! - [`server`]: starts and stops everything from a `Config`.
//!
//! The rule that keeps this a hierarchy: a module owns the type of its own section of
//! the configuration file (`auth::AuthConfig`, `broker::SessionsConfig`, ...), and
//! [`config`] only assembles those sections into [`config::Config`], checks them and
//! holds what no module owns (`[[listener]]`, `[limits]`, `[metrics]`). No module but
//! [`server`] (and `main`) reads a `Config`; `server` hands each module its section or
//! the values it needs (`broker::Settings`).

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
mod sqlite_worker;
pub mod state_dir;
pub mod topic_map;
pub mod uplink;

pub use error::{Error, Result};
