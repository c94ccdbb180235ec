//! The write path: every PUBLISH (and will) becomes one RocketMQ message on its
//! first-level topic, dispatched into the LMQs of rocketmq-mqtt (`lmq.rs`,
//! [`lmq_message`]); [`Bridge::store`] is where it happens.
//!
//! A publish is acknowledged to the client only when the broker answered SEND_OK: the
//! store future completes after the send, and the connection sends PUBACK/PUBREC then.
//! A refused or failed send is answered with an MQTT 5 reason code (or, under 3.1.1, by
//! closing the connection unacknowledged) so the client's retry is safe.
//!
//! - [`topic_order`]: one connection's stores to one topic go out in publish order;
//! - [`lmq_message`]: the RocketMQ message of a PUBLISH, exactly as rocketmq-mqtt writes
//!   it (and its decoding, for the read path).

pub mod lmq_message;
pub mod topic_order;

use std::sync::Arc;
use std::time::Instant;

use mqtt::broker::Refusal;
use mqtt::packet::{Message, Reason};
use tracing::warn;

use crate::auth::{self, Access};
use crate::bridge::{Bridge, SendOutcome};
use crate::lmq;
use crate::meta::retained;
use crate::rocketmq::{OnQueued, Producer};

impl Bridge {
    /// Stores one MQTT message in RocketMQ on behalf of `identity`, a client id (a will).
    pub async fn store(self, identity: Arc<str>, message: Message) -> Result<Reason, Refusal> {
        let publisher = identity.clone();
        self.store_queued(identity, &publisher, message, OnQueued::default())
            .await
    }

    /// [`Bridge::store`], firing `on_queued` when the send is queued on a broker
    /// connection that keeps arrival order (`Producer::send_queued`).
    pub async fn store_queued(
        self,
        identity: Arc<str>,
        publisher: &str,
        message: Message,
        on_queued: OnQueued,
    ) -> Result<Reason, Refusal> {
        let first = lmq::first_topic(&message.topic);
        if !self.meta().is_first_topic(first) {
            // 0x90 Topic Name invalid ("not malformed, but not accepted by this server"),
            // not 0x87 Not authorized: no identity may publish there, the topic has no
            // RocketMQ topic to go to.
            return Err(Refusal::new(
                Reason::TopicNameInvalid,
                format!(
                    "{first:?} is not a first-level topic of this service (LMQ/ALL_FIRST_TOPICS)"
                ),
            ));
        }
        if !auth::allowed(
            &self.config().acl,
            &identity,
            Access::Publish,
            &message.topic,
        ) {
            return Err(Refusal::new(
                Reason::NotAuthorized,
                format!("{identity} may not publish to {:?}", message.topic),
            ));
        }
        let wildcards = self.meta().wildcards(first);
        let Some(queues) = lmq::dispatch_queues(&message.topic, &wildcards) else {
            return Err(Refusal::new(
                Reason::TopicNameInvalid,
                format!(
                    "{:?} is a point-to-point topic without a client id ({{first}}/p2p/{{client}})",
                    message.topic
                ),
            ));
        };
        if message.retain && message.payload.len() > self.config().limits.max_retained_bytes {
            return Err(Refusal::new(
                Reason::QuotaExceeded,
                "retained message larger than limits.max_retained_bytes",
            ));
        }
        let retained_room = if message.retain {
            retained::reserve(&self.tables().retained, &message, &identity)
                .map_err(|q| self.quota_refusal("retained", q.name()))?
        } else {
            None
        };
        let origin = lmq_message::Origin {
            publisher: Some(publisher),
            now_ms: mqtt::broker::now_ms(),
        };
        let (properties, body) = lmq_message::encode(&message, &queues, origin);
        let properties: Vec<(&str, &str)> =
            properties.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let sent = tokio::time::timeout(
            self.config().send_timeout(),
            send_while_busy(
                self.producer(),
                first,
                &properties,
                body,
                &message.topic,
                on_queued,
            ),
        )
        .await;
        if let Ok(Ok(true)) = &sent {
            self.send_metrics().record_pipelined();
        }
        let outcome = match &sent {
            Ok(Ok(_)) => SendOutcome::Ok,
            Ok(Err(_)) => SendOutcome::Failed,
            Err(_) => SendOutcome::TimedOut,
        };
        self.send_metrics().record(outcome, started.elapsed());
        match sent {
            Ok(Ok(_)) if message.retain => {
                retained::put(&self.tables().retained, &message, &identity)
                    .await
                    .map_err(|e| {
                        Refusal::new(
                            Reason::ImplementationSpecificError,
                            format!("retained message not stored: {e}"),
                        )
                    })?;
                drop(retained_room);
                Ok(Reason::Success)
            }
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
/// timeout bounds the retries. A send that was queued in order, with the next message of
/// its topic maybe sent behind it, is not retried: that one would overtake it.
async fn send_while_busy(
    producer: &Producer,
    topic: &str,
    properties: &[(&str, &str)],
    body: bytes::Bytes,
    order_key: &str,
    mut on_queued: OnQueued,
) -> Result<bool, crate::Error> {
    let mut backoff = std::time::Duration::from_millis(20);
    loop {
        match producer
            .send_queued(topic, properties, body.clone(), order_key, &mut on_queued)
            .await
        {
            Err(crate::Error::Remoting { code, .. })
                if code == SYSTEM_BUSY && !on_queued.fired() =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
            }
            other => return other.map(|_| on_queued.fired()),
        }
    }
}
