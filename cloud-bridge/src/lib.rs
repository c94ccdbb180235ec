//! cloud-bridge: an MQTT 3.1.1/5 server whose storage is Apache RocketMQ Light Message
//! Queues, written and read in exactly the layout of Apache rocketmq-mqtt.

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
