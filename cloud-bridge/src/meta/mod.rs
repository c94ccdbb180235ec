//! The state shared by every bridge instance outside the message log: rocketmq-mqtt's
//! kvconfig meta, and the tables in RocketMQ compaction topics.
//!
//! - [`kvconfig`]: the first-level topics and their wildcard filters, read from kvconfig;
//! - [`table`]: a key-value table in a compaction topic, tailed into memory, with quotas;
//! - [`retained`]: retained messages (a table);
//! - [`sessions`]: persistent sessions' records (a table);
//! - [`wills`]: wills that outlive their bridge (a table), and the bridges' heartbeats;
//! - [`wildcards`]: the wildcard filters bridges register, their leases and pruning.

pub mod kvconfig;
pub mod retained;
pub mod sessions;
pub mod table;
pub mod wildcards;
pub mod wills;

pub use kvconfig::Meta;
pub use table::{Table, Tables};
