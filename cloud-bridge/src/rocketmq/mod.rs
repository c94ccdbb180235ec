//! RocketMQ remoting client (being written).
