//! The MQTT storage backend on RocketMQ: CONNECTs are authenticated here, and every
//! PUBLISH (and will) becomes one RocketMQ message on its first-level topic, dispatched
//! into the LMQs of rocketmq-mqtt (`lmq.rs`, `lmq_message.rs`).
//!
//! A publish is acknowledged to the client only when the broker answered SEND_OK: the
//! store future completes after the send, and the connection sends PUBACK/PUBREC then.
//! A refused or failed send is answered with an MQTT 5 reason code (or, under 3.1.1, by
//! closing the connection unacknowledged) so the client's retry is safe.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use mqtt::broker::{Accepted, Broker, Close, Peer, Refusal, Session};
use mqtt::packet::{Connect, Message, Reason, SubscribeOutcome, SubscriptionRequest};
use tracing::warn;

use crate::auth::{self, Access};
use crate::config::Config;
use crate::lmq;
use crate::lmq_message;
use crate::meta::Meta;
use crate::rocketmq::Producer;

/// What every connection of the bridge shares.
#[derive(Debug, Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<Config>,
    meta: Arc<Meta>,
    producer: Producer,
}

impl Bridge {
    /// A bridge writing through `producer`, with topic meta from `meta`.
    pub fn new(config: Arc<Config>, meta: Arc<Meta>, producer: Producer) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                meta,
                producer,
            }),
        }
    }

    /// Stores one MQTT message in RocketMQ on behalf of `identity`.
    pub async fn store(self, identity: Arc<str>, message: Message) -> Result<Reason, Refusal> {
        let this = &self.inner;
        let first = mqtt::topic::first_level(&message.topic);
        if !this.meta.is_first_topic(first) {
            return Err(Refusal::new(
                Reason::TopicNameInvalid,
                format!("{first:?} is not a first-level topic of this service"),
            ));
        }
        if !auth::allowed(&this.config.acl, &identity, Access::Publish, &message.topic) {
            return Err(Refusal::new(
                Reason::NotAuthorized,
                format!("{identity} may not publish to {:?}", message.topic),
            ));
        }
        let wildcards = this.meta.wildcards(first);
        let queues = lmq::dispatch_queues(&message.topic, &wildcards);
        let (properties, body) = lmq_message::encode(&message, &queues);
        let properties: Vec<(&str, &str)> =
            properties.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let sent = tokio::time::timeout(
            this.config.send_timeout(),
            send_while_busy(&this.producer, first, &properties, body, &message.topic),
        )
        .await;
        match sent {
            Ok(Ok(_)) => Ok(Reason::Success),
            Ok(Err(e)) => {
                warn!(topic = %message.topic, error = %e, "RocketMQ send failed");
                Err(Refusal::new(
                    Reason::ImplementationSpecificError,
                    format!("RocketMQ did not store the message: {e}"),
                ))
            }
            Err(_) => {
                warn!(topic = %message.topic, "RocketMQ send timed out");
                Err(Refusal::new(
                    Reason::ImplementationSpecificError,
                    "RocketMQ did not answer in time",
                ))
            }
        }
    }
}

/// Response code of a broker that refused a message unprocessed (flow control).
const SYSTEM_BUSY: i32 = 2;

/// Sends, retrying while the broker answers "busy": it refused the message before storing
/// it, so a retry cannot duplicate it (the Java producer retries it too). The caller's
/// timeout bounds the retries.
async fn send_while_busy(
    producer: &Producer,
    topic: &str,
    properties: &[(&str, &str)],
    body: bytes::Bytes,
    order_key: &str,
) -> Result<(), crate::Error> {
    let mut backoff = std::time::Duration::from_millis(20);
    loop {
        match producer
            .send(topic, properties, body.clone(), order_key)
            .await
        {
            Err(crate::Error::Remoting { code, .. }) if code == SYSTEM_BUSY => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
            }
            other => return other.map(|_| ()),
        }
    }
}

impl Broker for Bridge {
    type Session = BridgeSession;

    fn connect(
        &self,
        connect: &Connect,
        peer: &Peer,
    ) -> BoxFuture<'static, Result<Accepted<BridgeSession>, Refusal>> {
        let result = auth::authenticate(&self.inner.config.auth, connect, peer);
        let client_id = connect.client_id.clone();
        let bridge = self.clone();
        Box::pin(async move {
            let identity = result?;
            Ok(Accepted {
                session: BridgeSession {
                    bridge,
                    identity: Arc::from(identity.as_str()),
                },
                session_present: false,
                client_id,
                deliveries: None,
            })
        })
    }

    fn validate_topic(&self, topic: &str) -> Result<(), Refusal> {
        if topic.contains('%') {
            return Err(Refusal::new(
                Reason::TopicNameInvalid,
                "'%' is not allowed in topics: it would collide in LMQ names",
            ));
        }
        Ok(())
    }

    fn publish_will(&self, client_id: &str, message: Message) -> BoxFuture<'static, ()> {
        let bridge = self.clone();
        let identity: Arc<str> = Arc::from(client_id);
        Box::pin(async move {
            if let Err(refusal) = bridge.store(identity.clone(), message).await {
                warn!(client = %identity, %refusal, "delayed will not published");
            }
        })
    }
}

/// One client's session on the bridge.
#[derive(Debug)]
pub struct BridgeSession {
    bridge: Bridge,
    identity: Arc<str>,
}

impl Session for BridgeSession {
    fn publish(&self, message: Message) -> BoxFuture<'static, Result<Reason, Refusal>> {
        Box::pin(self.bridge.clone().store(self.identity.clone(), message))
    }

    fn subscribe(
        &mut self,
        requests: Vec<SubscriptionRequest>,
    ) -> BoxFuture<'static, Vec<SubscribeOutcome>> {
        // The read path (LMQ pulls, sessions, deliveries) is not served yet.
        let outcomes = requests
            .iter()
            .map(|_| SubscribeOutcome::Refused(Reason::ImplementationSpecificError))
            .collect();
        Box::pin(async move { outcomes })
    }

    fn unsubscribe(&mut self, filters: Vec<String>) -> BoxFuture<'static, Vec<Reason>> {
        let reasons = filters
            .iter()
            .map(|_| Reason::NoSubscriptionExisted)
            .collect();
        Box::pin(async move { reasons })
    }

    fn acked(&mut self, _tag: u64) {}

    fn closed(self, _how: Close) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
