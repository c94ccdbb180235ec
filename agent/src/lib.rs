//! edge-agent: the gateway agent. Today it holds the durable journal ([`journal`]) that
//! the local MQTT broker appends uplink-bound messages to and the uplink drains; the
//! broker and the uplink come in later modules.

pub mod error;
pub mod journal;
pub mod state_dir;

pub use error::{Error, Result};
