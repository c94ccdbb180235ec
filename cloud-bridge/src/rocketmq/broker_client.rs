//! Requests to one broker: send, pull, queue offsets, consumer offsets, topic creation.
//!
//! [`BrokerClient`] is a borrowed handle (`client.broker(addr)`): it costs nothing to make,
//! so make one per call. (Not to be confused with `mqtt::broker::Broker`, the MQTT
//! server's storage backend, which the bridge implements in `connect.rs`.)
//!
//! Result mapping follows the Java client (`MQClientAPIImpl`), except that only response
//! code 0 (SEND_OK) is a successful send: FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT and
//! SLAVE_NOT_AVAILABLE, which the Java client returns as a `SendResult` with another
//! status, are errors here, so that nobody mistakes them for a durable write.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use super::client::Client;
use super::command::{RemotingCommand, request_code, response_code};
use super::connection::OnQueued;
use super::message::{Message, decode_messages, find_property, property};
use super::route::perm;
use crate::Error;

/// The group rocketmq-mqtt pulls LMQs with.
pub const LMQ_PULL_GROUP: &str = "CID_RMQ_SYS_LMQ_PULL";
/// The topic new topics inherit their settings from.
pub const DEFAULT_TOPIC: &str = "TBW102";

/// How often the Java broker checks held pulls for expiry: a long poll with nothing to
/// return is answered up to this long after its suspend time.
pub const HOLD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Pull flags (`PullSysFlag` of the Java code).
mod pull_flag {
    pub const COMMIT_OFFSET: i32 = 0x1;
    pub const SUSPEND: i32 = 0x1 << 1;
    pub const SUBSCRIPTION: i32 = 0x1 << 2;
}

/// A handle on the broker at one address.
#[derive(Debug, Clone, Copy)]
pub struct BrokerClient<'a> {
    client: &'a Client,
    addr: &'a str,
    timeout: Duration,
}

impl Client {
    /// A handle on the broker at `addr`, with the client's request timeout.
    pub fn broker<'a>(&'a self, addr: &'a str) -> BrokerClient<'a> {
        BrokerClient {
            client: self,
            addr,
            timeout: self.config().request_timeout,
        }
    }
}

/// One message to send (SEND_MESSAGE_V2).
#[derive(Debug, Clone)]
pub struct SendRequest<'a> {
    /// The producer group.
    pub producer_group: &'a str,
    /// The (first-level) topic.
    pub topic: &'a str,
    /// The queue to append to.
    pub queue_id: i32,
    /// Encoded properties (see [`encode_properties`](super::message::encode_properties));
    /// should hold a `UNIQ_KEY`.
    pub properties: &'a str,
    /// The payload.
    pub body: Bytes,
    /// The user flag.
    pub flag: i32,
    /// The broker name the queue belongs to (optional for the Java broker).
    pub broker_name: Option<&'a str>,
}

/// A message the broker stored (SEND_OK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// The message's `UNIQ_KEY` (empty when the request had none).
    pub msg_id: String,
    /// The broker-side id (store host and commit log offset).
    pub offset_msg_id: String,
    /// The queue the message went to.
    pub queue_id: i32,
    /// Its offset in that queue.
    pub queue_offset: i64,
}

/// One pull (PULL_MESSAGE).
#[derive(Debug, Clone)]
pub struct PullRequest<'a> {
    /// The consumer group.
    pub consumer_group: &'a str,
    /// The topic: for LMQs, the LMQ name.
    pub topic: &'a str,
    /// The queue (0 for LMQs).
    pub queue_id: i32,
    /// The first offset wanted.
    pub queue_offset: i64,
    /// Most messages returned.
    pub max_msgs: u32,
    /// When set, the broker also stores this as the group's committed offset.
    pub commit_offset: Option<i64>,
    /// When set, the broker holds the request up to this long for a message to arrive.
    pub suspend: Option<Duration>,
    /// Tag expression (`*` for all).
    pub subscription: &'a str,
}

impl<'a> PullRequest<'a> {
    /// A pull of LMQ `lmq` (queue 0, group [`LMQ_PULL_GROUP`], every tag) from `offset`.
    pub fn lmq(lmq: &'a str, offset: i64, max_msgs: u32) -> Self {
        Self {
            consumer_group: LMQ_PULL_GROUP,
            topic: lmq,
            queue_id: 0,
            queue_offset: offset,
            max_msgs,
            commit_offset: None,
            suspend: None,
            subscription: "*",
        }
    }

    /// Long-polls up to `suspend`.
    #[must_use]
    pub fn long_poll(mut self, suspend: Duration) -> Self {
        self.suspend = Some(suspend);
        self
    }
}

/// What a pull found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullResult {
    /// Messages, in queue order.
    Found {
        /// The messages.
        messages: Vec<Message>,
        /// Where the next pull starts.
        next_offset: i64,
        /// The queue's first offset.
        min_offset: i64,
        /// The queue's end offset.
        max_offset: i64,
    },
    /// Nothing new (the long poll, if any, ended without a message).
    NoNewMsg {
        /// Where the next pull starts.
        next_offset: i64,
    },
    /// Messages exist, but none matched the subscription.
    NoMatched {
        /// Where the next pull starts.
        next_offset: i64,
    },
    /// The offset is outside the queue; start again at `next_offset`.
    OffsetIllegal {
        /// Where the next pull starts.
        next_offset: i64,
    },
    /// The broker has no such queue (code 17). On an LMQ: it never received a message,
    /// so it is empty.
    TopicNotExist,
}

/// A topic to create on a broker (UPDATE_AND_CREATE_TOPIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// The topic name.
    pub topic: String,
    /// Queues consumers read.
    pub read_queue_nums: u32,
    /// Queues producers write.
    pub write_queue_nums: u32,
    /// [`perm`] bits.
    pub perm: u32,
    /// Whether the topic is ordered.
    pub order: bool,
    /// Topic attributes (RocketMQ 5.x), e.g. `+cleanup.policy=COMPACTION`.
    pub attributes: Option<String>,
}

impl TopicConfig {
    /// A read-write topic with 8 queues (the admin tool's default).
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            read_queue_nums: 8,
            write_queue_nums: 8,
            perm: perm::READ_WRITE,
            order: false,
            attributes: None,
        }
    }
}

impl BrokerClient<'_> {
    /// The broker's address.
    pub fn addr(&self) -> &str {
        self.addr
    }

    /// The same broker with another request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn invoke(&self, request: RemotingCommand) -> Result<RemotingCommand, Error> {
        self.client.invoke(self.addr, request, self.timeout).await
    }

    /// Sends one message. Only SEND_OK is `Ok`; see the module doc.
    pub async fn send(&self, req: &SendRequest<'_>) -> Result<SendResult, Error> {
        self.send_queued(req, &mut OnQueued::default()).await
    }

    /// [`BrokerClient::send`], firing `on_queued` once the request is queued for writing
    /// on the connection to the broker.
    pub async fn send_queued(
        &self,
        req: &SendRequest<'_>,
        on_queued: &mut OnQueued,
    ) -> Result<SendResult, Error> {
        let born = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut request = RemotingCommand::request(request_code::SEND_MESSAGE_V2)
            .field("a", req.producer_group.to_owned())
            .field("b", req.topic.to_owned())
            .field("c", DEFAULT_TOPIC)
            .field("d", "4")
            .field("e", req.queue_id.to_string())
            .field("f", "0")
            .field("g", born.to_string())
            .field("h", req.flag.to_string())
            .field("i", req.properties.to_owned())
            .field("j", "0")
            .field("k", "false")
            .field("m", "false");
        if let Some(name) = req.broker_name {
            request = request.field("n", name.to_owned());
        }
        let request = request.with_body(req.body.clone());
        let response = self
            .client
            .invoke_queued(self.addr, request, self.timeout, on_queued)
            .await?;
        let msg_id = find_property(req.properties, property::UNIQ_KEY)
            .unwrap_or_default()
            .to_owned();
        match response.code {
            response_code::SUCCESS => Ok(SendResult {
                offset_msg_id: response.ext("msgId").unwrap_or_default().to_owned(),
                queue_id: response.parse_ext("queueId")?,
                queue_offset: response.parse_ext("queueOffset")?,
                msg_id,
            }),
            response_code::FLUSH_DISK_TIMEOUT => Err(Error::FlushDiskTimeout { msg_id }),
            response_code::FLUSH_SLAVE_TIMEOUT => Err(Error::FlushSlaveTimeout { msg_id }),
            response_code::SLAVE_NOT_AVAILABLE => Err(Error::SlaveNotAvailable { msg_id }),
            _ => Err(response.into_error()),
        }
    }

    /// Pulls messages. With long polling, the request deadline is this handle's timeout
    /// plus the suspend time plus [`HOLD_CHECK_INTERVAL`].
    pub async fn pull(&self, req: &PullRequest<'_>) -> Result<PullResult, Error> {
        let mut sys_flag = pull_flag::SUBSCRIPTION;
        if req.commit_offset.is_some() {
            sys_flag |= pull_flag::COMMIT_OFFSET;
        }
        let suspend = req.suspend.unwrap_or_default();
        if req.suspend.is_some() {
            sys_flag |= pull_flag::SUSPEND;
        }
        let request = RemotingCommand::request(request_code::PULL_MESSAGE)
            .field("consumerGroup", req.consumer_group.to_owned())
            .field("topic", req.topic.to_owned())
            .field("queueId", req.queue_id.to_string())
            .field("queueOffset", req.queue_offset.to_string())
            .field("maxMsgNums", req.max_msgs.to_string())
            .field("sysFlag", sys_flag.to_string())
            .field("commitOffset", req.commit_offset.unwrap_or(0).to_string())
            .field("suspendTimeoutMillis", suspend.as_millis().to_string())
            .field("subscription", req.subscription.to_owned())
            .field("subVersion", "0")
            .field("expressionType", "TAG");
        let deadline = if req.suspend.is_some() {
            self.timeout + suspend + HOLD_CHECK_INTERVAL
        } else {
            self.timeout
        };
        let response = self.client.invoke(self.addr, request, deadline).await?;
        let next_offset = || {
            response
                .parse_ext::<i64>("nextBeginOffset")
                .unwrap_or(req.queue_offset)
        };
        Ok(match response.code {
            response_code::SUCCESS => PullResult::Found {
                next_offset: response.parse_ext("nextBeginOffset")?,
                min_offset: response.parse_ext("minOffset").unwrap_or(0),
                max_offset: response.parse_ext("maxOffset").unwrap_or(0),
                messages: decode_messages(&response.body)?,
            },
            response_code::PULL_NOT_FOUND => PullResult::NoNewMsg {
                next_offset: next_offset(),
            },
            response_code::PULL_RETRY_IMMEDIATELY => PullResult::NoMatched {
                next_offset: next_offset(),
            },
            response_code::PULL_OFFSET_MOVED => PullResult::OffsetIllegal {
                next_offset: next_offset(),
            },
            response_code::TOPIC_NOT_EXIST => PullResult::TopicNotExist,
            _ => return Err(response.into_error()),
        })
    }

    async fn offset(&self, code: i32, topic: &str, queue_id: i32) -> Result<i64, Error> {
        let request = RemotingCommand::request(code)
            .field("topic", topic.to_owned())
            .field("queueId", queue_id.to_string());
        self.invoke(request)
            .await?
            .into_success()?
            .parse_ext("offset")
    }

    /// The offset after the last message of a queue (GET_MAX_OFFSET).
    pub async fn max_offset(&self, topic: &str, queue_id: i32) -> Result<i64, Error> {
        self.offset(request_code::GET_MAX_OFFSET, topic, queue_id)
            .await
    }

    /// The offset of the oldest message still stored in a queue (GET_MIN_OFFSET).
    pub async fn min_offset(&self, topic: &str, queue_id: i32) -> Result<i64, Error> {
        self.offset(request_code::GET_MIN_OFFSET, topic, queue_id)
            .await
    }

    /// The offset of the first message of a queue stored at or after `timestamp_ms` (Unix
    /// milliseconds, the broker's store time), or the queue's end when none is
    /// (SEARCH_OFFSET_BY_TIMESTAMP; works on an LMQ, queue 0). A reader that lost its place
    /// starts there: e.g. a broker that lost a committed offset in a crash.
    pub async fn offset_at_time(
        &self,
        topic: &str,
        queue_id: i32,
        timestamp_ms: u64,
    ) -> Result<i64, Error> {
        let request = RemotingCommand::request(request_code::SEARCH_OFFSET_BY_TIMESTAMP)
            .field("topic", topic.to_owned())
            .field("queueId", queue_id.to_string())
            .field("timestamp", timestamp_ms.to_string());
        self.invoke(request)
            .await?
            .into_success()?
            .parse_ext("offset")
    }

    /// The committed offset of `group` in a queue, `None` when it never committed one
    /// (QUERY_CONSUMER_OFFSET; `setZeroIfNotFound=false`, without which 5.x brokers
    /// answer 0 for an empty queue).
    pub async fn query_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Result<Option<i64>, Error> {
        let request = RemotingCommand::request(request_code::QUERY_CONSUMER_OFFSET)
            .field("consumerGroup", group.to_owned())
            .field("topic", topic.to_owned())
            .field("queueId", queue_id.to_string())
            .field("setZeroIfNotFound", "false");
        let response = self.invoke(request).await?;
        match response.code {
            response_code::SUCCESS => response.parse_ext("offset").map(Some),
            response_code::QUERY_NOT_FOUND => Ok(None),
            _ => Err(response.into_error()),
        }
    }

    /// Commits `offset` (the next offset to read) for `group` in a queue
    /// (UPDATE_CONSUMER_OFFSET, waiting for the broker's answer).
    pub async fn update_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) -> Result<(), Error> {
        let request = RemotingCommand::request(request_code::UPDATE_CONSUMER_OFFSET)
            .field("consumerGroup", group.to_owned())
            .field("topic", topic.to_owned())
            .field("queueId", queue_id.to_string())
            .field("commitOffset", offset.to_string());
        self.invoke(request).await?.into_success().map(drop)
    }

    /// The broker's configuration (GET_BROKER_CONFIG): every setting as key and value.
    pub async fn config(&self) -> Result<HashMap<String, String>, Error> {
        let request = RemotingCommand::request(request_code::GET_BROKER_CONFIG);
        let response = self.invoke(request).await?.into_success()?;
        let text = String::from_utf8_lossy(&response.body);
        Ok(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// Deletes a topic on this broker (DELETE_TOPIC_IN_BROKER). For an LMQ this drops its
    /// consume queue and closes its file (each LMQ holds one open file on the broker).
    pub async fn delete_topic(&self, topic: &str) -> Result<(), Error> {
        let request = RemotingCommand::request(request_code::DELETE_TOPIC_IN_BROKER)
            .field("topic", topic.to_owned());
        self.invoke(request).await?.into_success().map(drop)
    }

    /// Creates or updates a topic on this broker (UPDATE_AND_CREATE_TOPIC). The broker
    /// registers it with the name servers itself.
    pub async fn create_topic(&self, config: &TopicConfig) -> Result<(), Error> {
        let request = RemotingCommand::request(request_code::UPDATE_AND_CREATE_TOPIC)
            .field("topic", config.topic.clone())
            .field("defaultTopic", DEFAULT_TOPIC)
            .field("readQueueNums", config.read_queue_nums.to_string())
            .field("writeQueueNums", config.write_queue_nums.to_string())
            .field("perm", config.perm.to_string())
            .field("topicFilterType", "SINGLE_TAG")
            .field("topicSysFlag", "0")
            .field("order", config.order.to_string());
        let request = match &config.attributes {
            Some(a) => request.field("attributes", a.clone()),
            None => request,
        };
        self.invoke(request).await?.into_success().map(drop)
    }
}
