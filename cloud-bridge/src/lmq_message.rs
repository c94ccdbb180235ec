//! The RocketMQ message written for one MQTT PUBLISH, exactly as rocketmq-mqtt writes it.
//!
//! | property | value |
//! |---|---|
//! | `INNER_MULTI_DISPATCH` | the LMQ names, joined with `,` |
//! | `UNIQ_KEY` | a unique message id (set by the producer) |
//! | `originMqttTopic` | the topic exactly as published |
//! | `qosLevel` | `0`, `1` or `2` |
//! | `retryTimes` | `0` |
//! | `extData` | JSON object of the MQTT 5 user properties |
//! | `IS_EMPTY_MSG` | `true` when the payload was empty, else `false` |
//! | `TAGS` | `MQTT_COMMON` |
//! | `KEYS` | the value of the MQTT 5 user property [`KEY_USER_PROPERTY`], when present |
//!
//! An empty payload is stored as the UTF-8 string [`EMPTY_BODY`] (RocketMQ refuses empty
//! bodies) and restored to empty on delivery.

use std::collections::BTreeMap;

use bytes::Bytes;
use mqtt::packet::Message;

/// The body that stands for an empty payload.
pub const EMPTY_BODY: &str = "★\r\n\t☀";
/// Tag of every MQTT message.
pub const TAG: &str = "MQTT_COMMON";
/// MQTT 5 user property whose value becomes the RocketMQ message key (the edge agent's
/// stable message id), so that cloud consumers can drop at-least-once duplicates.
pub const KEY_USER_PROPERTY: &str = "msg-key";

/// Property names.
pub mod prop {
    /// LMQs to dispatch into.
    pub const INNER_MULTI_DISPATCH: &str = "INNER_MULTI_DISPATCH";
    /// Offsets in those LMQs, set by the broker.
    pub const INNER_MULTI_QUEUE_OFFSET: &str = "INNER_MULTI_QUEUE_OFFSET";
    /// Unique id.
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
    /// The MQTT topic.
    pub const ORIGIN_MQTT_TOPIC: &str = "originMqttTopic";
    /// The publish QoS.
    pub const QOS_LEVEL: &str = "qosLevel";
    /// Retry count.
    pub const RETRY_TIMES: &str = "retryTimes";
    /// User properties as JSON.
    pub const EXT_DATA: &str = "extData";
    /// Whether the payload was empty.
    pub const IS_EMPTY_MSG: &str = "IS_EMPTY_MSG";
    /// RocketMQ tag.
    pub const TAGS: &str = "TAGS";
    /// RocketMQ keys.
    pub const KEYS: &str = "KEYS";
}

/// The properties and body of the RocketMQ message for `message`, dispatched to `queues`.
pub fn encode(message: &Message, queues: &[String]) -> (Vec<(&'static str, String)>, Bytes) {
    let empty = message.payload.is_empty();
    let ext: BTreeMap<&str, &str> = message
        .properties
        .user_properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut props = vec![
        (prop::INNER_MULTI_DISPATCH, queues.join(",")),
        (prop::ORIGIN_MQTT_TOPIC, message.topic.clone()),
        (prop::QOS_LEVEL, message.qos.level().to_string()),
        (prop::RETRY_TIMES, "0".to_owned()),
        (
            prop::EXT_DATA,
            serde_json::to_string(&ext).unwrap_or_else(|_| "{}".to_owned()),
        ),
        (prop::IS_EMPTY_MSG, empty.to_string()),
        (prop::TAGS, TAG.to_owned()),
    ];
    if let Some(key) = ext.get(KEY_USER_PROPERTY).filter(|k| !k.is_empty()) {
        props.push((prop::KEYS, (*key).to_owned()));
    }
    let body = if empty {
        Bytes::from_static(EMPTY_BODY.as_bytes())
    } else {
        message.payload.clone()
    };
    (props, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::packet::{MessageProperties, QoS};

    #[test]
    fn empty_payload_and_user_properties() {
        let m = Message {
            topic: "t1/a".into(),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties {
                user_properties: vec![
                    ("k".into(), "v".into()),
                    (KEY_USER_PROPERTY.into(), "gw-1:42".into()),
                ],
                ..MessageProperties::default()
            },
        };
        let (props, body) = encode(&m, &["%LMQ%t1%a%".into(), "%LMQ%t1%+%".into()]);
        assert_eq!(&body[..], EMPTY_BODY.as_bytes());
        let get = |k: &str| props.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get(prop::IS_EMPTY_MSG), Some("true"));
        assert_eq!(
            get(prop::INNER_MULTI_DISPATCH),
            Some("%LMQ%t1%a%,%LMQ%t1%+%")
        );
        assert_eq!(get(prop::QOS_LEVEL), Some("1"));
        assert_eq!(get(prop::KEYS), Some("gw-1:42"));
        let ext: serde_json::Value = serde_json::from_str(get(prop::EXT_DATA).unwrap()).unwrap();
        assert_eq!(ext["k"], "v");
    }
}

/// The MQTT message carried by a RocketMQ message read from an LMQ: the topic is
/// `originMqttTopic`, or else rebuilt from the last non-wildcard LMQ of
/// `INNER_MULTI_DISPATCH` (as rocketmq-mqtt does for plain producers); the empty-payload
/// marker is undone; `qosLevel` (default 1) and `extData` come back as QoS and user
/// properties. `None` when no topic can be found.
pub fn decode(m: &crate::rocketmq::Message) -> Option<Message> {
    let topic = match m.property(prop::ORIGIN_MQTT_TOPIC) {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => topic_from_dispatch(m.property(prop::INNER_MULTI_DISPATCH)?)?,
    };
    let payload = if m.property(prop::IS_EMPTY_MSG) == Some("true") {
        Bytes::new()
    } else {
        m.body.clone()
    };
    let qos = match m.property(prop::QOS_LEVEL) {
        Some("0") => mqtt::packet::QoS::AtMostOnce,
        Some("2") => mqtt::packet::QoS::ExactlyOnce,
        _ => mqtt::packet::QoS::AtLeastOnce,
    };
    let user_properties = m
        .property(prop::EXT_DATA)
        .and_then(|ext| serde_json::from_str::<BTreeMap<String, serde_json::Value>>(ext).ok())
        .map(|map| {
            map.into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Message {
        topic,
        payload,
        qos,
        retain: false,
        properties: mqtt::packet::MessageProperties {
            user_properties,
            ..Default::default()
        },
    })
}

/// `%LMQ%t1%a%b%` -> `t1/a/b`, from the last LMQ without a wildcard.
fn topic_from_dispatch(dispatch: &str) -> Option<String> {
    let lmq = dispatch
        .split(',')
        .rev()
        .find(|q| !q.contains(['+', '#']) && !q.starts_with("%LMQ%%"))?;
    let queue = lmq.strip_prefix(crate::lmq::LMQ_PREFIX)?;
    let queue = queue.strip_suffix('%').unwrap_or(queue);
    (!queue.is_empty()).then(|| queue.replace('%', "/"))
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn topic_is_rebuilt_from_the_last_plain_lmq() {
        assert_eq!(
            topic_from_dispatch("%LMQ%t1%a%b%,%LMQ%t1%+%b%").as_deref(),
            Some("t1/a/b")
        );
        assert_eq!(topic_from_dispatch("%LMQ%t1").as_deref(), Some("t1"));
        assert_eq!(topic_from_dispatch("%LMQ%t1%+%"), None);
    }
}
