//! cloud-bridge: an MQTT 3.1.1/5 server whose storage is Apache RocketMQ Light Message
//! Queues, written and read in exactly the layout of Apache rocketmq-mqtt.

pub mod admin;
pub mod auth;
pub mod bridge;
pub mod config;
pub mod error;
pub mod lmq;
pub mod lmq_message;
pub mod meta;
pub mod metrics;
pub mod offsets;
pub mod reader;
pub mod retained;
pub mod retry;
pub mod rocketmq;
pub mod server;
pub mod session;
pub mod session_store;
pub mod state_table;
pub mod topic_order;
pub mod wildcards;
pub mod will_store;

pub use error::Error;
