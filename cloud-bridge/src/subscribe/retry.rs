//! The retry queue of rocketmq-mqtt: a message a persistent session keeps leaving
//! unacknowledged is re-put into `clientRetryTopic`, dispatched to the client's retry LMQ
//! `%LMQ%%retry%{clientId}%` with `retryTimes` + 1, so that the queue behind it flows again;
//! after `subscriptions.max_retry_times` trips it is dropped (and logged).

use tracing::{info, warn};

use crate::bridge::Bridge;
use crate::error::Error;
use crate::lmq;
use crate::subscribe::offsets::QueueKey;

/// Re-puts the message at `offset` of `key` into the client's retry queue (topic
/// `clientRetryTopic`, LMQ `%LMQ%%retry%{clientId}%`, `retryTimes` + 1), or drops it
/// when it has been retried `max_retry_times` already.
pub async fn move_to_retry(
    bridge: &Bridge,
    client_id: &str,
    key: &QueueKey,
    offset: i64,
) -> Result<(), Error> {
    use crate::publish::lmq_message::prop;
    use crate::rocketmq::{PullRequest, PullResult};
    let b = bridge.client().broker(&key.broker);
    let PullResult::Found { messages, .. } = b.pull(&PullRequest::lmq(&key.lmq, offset, 1)).await?
    else {
        return Err(Error::Invalid(format!(
            "message {offset} of {} is gone",
            key.lmq
        )));
    };
    let Some(m) = messages
        .into_iter()
        .find(|m| m.lmq_offset(&key.lmq) == Some(offset))
    else {
        return Err(Error::Invalid(format!(
            "message {offset} of {} not found",
            key.lmq
        )));
    };
    let config = bridge.config();
    let tries: u32 = m
        .property(prop::RETRY_TIMES)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
        + 1;
    if tries > config.subscriptions.max_retry_times {
        warn!(client = %client_id, lmq = %key.lmq, offset, tries, "message dropped after its retries");
        return Ok(());
    }
    let tries = tries.to_string();
    let retry_lmq = lmq::retry_lmq(client_id);
    const BROKER_SET: [&str; 5] = [
        prop::INNER_MULTI_DISPATCH,
        prop::INNER_MULTI_QUEUE_OFFSET,
        "MIN_OFFSET",
        "MAX_OFFSET",
        "CLUSTER",
    ];
    let mut properties: Vec<(&str, &str)> = m
        .properties
        .iter()
        .filter(|(k, _)| !BROKER_SET.contains(&k.as_str()) && k.as_str() != prop::RETRY_TIMES)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    properties.push((prop::INNER_MULTI_DISPATCH, retry_lmq.as_str()));
    properties.push((prop::RETRY_TIMES, tries.as_str()));
    bridge
        .producer()
        .send(
            &config.topics.client_retry_topic,
            &properties,
            m.body.clone(),
            client_id,
        )
        .await?;
    info!(client = %client_id, lmq = %key.lmq, offset, "unacknowledged message moved to the retry queue");
    Ok(())
}
