//! A small RocketMQ remoting client for the Java broker and name server, on tokio.
//!
//! # Why not rocketmq-client-rust
//! We chose not to use the `rocketmq-client-rust` crate: it pulls about 270 crates; its
//! pull consumer finds brokers through the pulled topic's own route, so it cannot address
//! LMQ topics (which the name server does not know); and its one-shot transport opens a
//! connection per request, while cloud-bridge sends every MQTT publish through here and
//! needs many requests pipelined over one connection. The wire format is small and
//! documented, so this module speaks it directly.
//!
//! # Wire format (RocketMQ remoting, JSON serialization)
//! ```text
//! frame  = [u32 BE: length of what follows]
//!          [u32 BE: high byte = serialize type (0 = JSON), low 3 bytes = header length]
//!          [header JSON][body]
//! header = {"code":int, "language":"JAVA", "version":int, "opaque":int,
//!           "flag":int (bit 0 response, bit 1 one-way), "remark":string?,
//!           "extFields":{string:string}, "serializeTypeCurrentRPC":"JSON"}
//! ```
//! A response carries its request's `opaque`; responses may come in any order. Request
//! parameters travel in `extFields` (the Java "custom header"), message payloads and
//! JSON documents (routes, kvconfig lists) in the body. Stored messages and property
//! strings are described in [`message`].
//!
//! # Layout
//! - [`command`]: the command and its frame codec;
//! - [`connection`] (private) and [`client`]: multiplexed connections, pooled by address;
//! - [`message`]: properties, unique ids, stored-message decoding;
//! - [`route`] and [`namesrv`]: name server requests (routes, cluster info, kvconfig);
//! - [`broker_client`]: requests to one broker (send, pull, offsets, topic creation);
//! - [`producer`]: route-cached, order-keyed sending.

pub mod broker_client;
pub mod client;
pub mod command;
mod connection;
pub use connection::OnQueued;
pub mod message;
pub mod namesrv;
pub mod producer;
pub mod route;

pub use broker_client::{
    BrokerClient, LMQ_PULL_GROUP, PullRequest, PullResult, SendRequest, SendResult, TopicConfig,
};
pub use client::{Client, ClientConfig};
pub use command::{RemotingCodec, RemotingCommand};
pub use message::{Message, property};
pub use namesrv::{KvMerge, NameServer, Written};
pub use producer::{Producer, ProducerConfig};
pub use route::{BrokerData, ClusterInfo, QueueData, TopicRoute};
