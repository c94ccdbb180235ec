//! cloud-bridge: an MQTT 3.1.1/5 server whose storage is Apache RocketMQ Light Message
//! Queues, written and read in exactly the layout of Apache rocketmq-mqtt.

pub mod error;
pub mod rocketmq;

pub use error::Error;
