//! The write path: an MQTT PUBLISH (or will) becomes one RocketMQ message on its
//! first-level topic, dispatched into the LMQs of rocketmq-mqtt.
//!
//! - [`topic_order`]: one connection's stores to one topic go out in publish order;
//! - [`lmq_message`]: the RocketMQ message of a PUBLISH, exactly as rocketmq-mqtt writes
//!   it (and its decoding, for the read path).

pub mod lmq_message;
pub mod topic_order;
