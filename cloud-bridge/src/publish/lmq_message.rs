//! The RocketMQ message written for one MQTT PUBLISH, exactly as rocketmq-mqtt writes it
//! (`LmqQueueStoreManager.toMQMessage` and `putMessage`, `MessageUtil.toMessage`), plus
//! the MQTT 5 properties in properties of their own.
//!
//! | property | value |
//! |---|---|
//! | `INNER_MULTI_DISPATCH` | the LMQ names, joined with `,` |
//! | `UNIQ_KEY` | a unique message id (set by the producer) |
//! | `originMqttTopic` | the topic exactly as published |
//! | `qosLevel` | `0`, `1` or `2` |
//! | `retryTimes` | `0` |
//! | `extData` | always `{"qosLevel":"N"}`, as rocketmq-mqtt writes it |
//! | `IS_EMPTY_MSG` | `true` when the payload was empty, else `false` |
//! | `TAGS` | `MQTT_COMMON` |
//! | `KEYS` | the value of the MQTT 5 user property [`KEY_USER_PROPERTY`], when present |
//! | `mqtt5UserProperties` | the MQTT 5 user properties, in order, repeated keys kept: a JSON array of `[name, value]` pairs; absent when there are none |
//! | `mqtt5PayloadFormat` | the Payload Format Indicator, `0` or `1`; absent when the PUBLISH had none |
//! | `mqtt5ContentType` | the Content Type, as is; absent when none |
//! | `mqtt5ResponseTopic` | the Response Topic, as is; absent when none |
//! | `mqtt5CorrelationData` | the Correlation Data (binary), standard base64 with padding; absent when none |
//! | `mqtt5ExpiresAt` | when the message expires (publish time + Message Expiry Interval), Unix milliseconds; absent when it never does |
//! | `mqtt5Publisher` | the client id of the publisher (for No Local, on every bridge) |
//! | `mqtt5Retain` | `true` when the PUBLISH had the RETAIN flag (for Retain As Published); absent otherwise |
//!
//! `extData` is rocketmq-mqtt's own map of internal fields: it reads the QoS of a p2p
//! message from `qosLevel` in it, the delivered topic from `mqttRealTopic`, and puts every
//! entry back into the messages it re-stores (retry). So a client never writes into it
//! (a user property `mqttRealTopic` would re-route the message for rocketmq-mqtt's
//! subscribers), and nothing in it is ever handed to a client. MQTT 5 properties live in
//! properties named [`prop::MQTT5_PREFIX`]`...` (`mqtt5UserProperties` here; the other
//! MQTT 5 properties join that scheme). rocketmq-mqtt does not read them: its clients
//! (MQTT 3.1.1) never see them.
//!
//! An empty payload is stored as the UTF-8 string [`EMPTY_BODY`] (RocketMQ refuses empty
//! bodies) and restored to empty on delivery.

use base64::Engine;
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
    /// rocketmq-mqtt's internal fields as a JSON object of strings.
    pub const EXT_DATA: &str = "extData";
    /// Whether the payload was empty.
    pub const IS_EMPTY_MSG: &str = "IS_EMPTY_MSG";
    /// RocketMQ tag.
    pub const TAGS: &str = "TAGS";
    /// RocketMQ keys.
    pub const KEYS: &str = "KEYS";
    /// Prefix of the properties that carry MQTT 5 properties (reserved for them).
    pub const MQTT5_PREFIX: &str = "mqtt5";
    /// MQTT 5 user properties: JSON array of `[name, value]` pairs, in order.
    pub const MQTT5_USER_PROPERTIES: &str = "mqtt5UserProperties";
    /// MQTT 5 Payload Format Indicator (`0` or `1`).
    pub const MQTT5_PAYLOAD_FORMAT: &str = "mqtt5PayloadFormat";
    /// MQTT 5 Content Type.
    pub const MQTT5_CONTENT_TYPE: &str = "mqtt5ContentType";
    /// MQTT 5 Response Topic.
    pub const MQTT5_RESPONSE_TOPIC: &str = "mqtt5ResponseTopic";
    /// MQTT 5 Correlation Data, standard base64.
    pub const MQTT5_CORRELATION_DATA: &str = "mqtt5CorrelationData";
    /// Absolute expiry time, Unix milliseconds.
    pub const MQTT5_EXPIRES_AT: &str = "mqtt5ExpiresAt";
    /// The publisher's client id.
    pub const MQTT5_PUBLISHER: &str = "mqtt5Publisher";
    /// `true` when the PUBLISH had the RETAIN flag.
    pub const MQTT5_RETAIN: &str = "mqtt5Retain";
}

/// Who published a message and when: what [`encode`] records besides the message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// The publisher's client id (a will: its client's); `None`: not recorded.
    pub publisher: Option<&'a str>,
    /// The publish time, Unix milliseconds (the Message Expiry Interval counts from it).
    pub now_ms: i64,
}

/// A message read back from RocketMQ.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The message; `retain` is the publisher's RETAIN flag; the expiry interval is unset
    /// (see `expires_ms`).
    pub message: Message,
    /// The publisher's client id, when recorded.
    pub publisher: Option<String>,
    /// When the message expires, Unix milliseconds.
    pub expires_ms: Option<i64>,
}

/// `extData` as rocketmq-mqtt writes it for a publish at `qos` (fastjson's
/// `toJSONString` of the map `{qosLevel: "N"}`).
pub fn ext_data(qos: mqtt::packet::QoS) -> String {
    format!("{{\"{}\":\"{}\"}}", prop::QOS_LEVEL, qos.level())
}

/// The properties and body of the RocketMQ message for `message`, dispatched to `queues`.
pub fn encode(
    message: &Message,
    queues: &[String],
    origin: Origin<'_>,
) -> (Vec<(&'static str, String)>, Bytes) {
    let empty = message.payload.is_empty();
    let user = &message.properties.user_properties;
    let mut props = vec![
        (prop::INNER_MULTI_DISPATCH, queues.join(",")),
        (prop::ORIGIN_MQTT_TOPIC, message.topic.clone()),
        (prop::QOS_LEVEL, message.qos.level().to_string()),
        (prop::RETRY_TIMES, "0".to_owned()),
        (prop::EXT_DATA, ext_data(message.qos)),
        (prop::IS_EMPTY_MSG, empty.to_string()),
        (prop::TAGS, TAG.to_owned()),
    ];
    if !user.is_empty() {
        let pairs: Vec<[&str; 2]> = user.iter().map(|(k, v)| [k.as_str(), v.as_str()]).collect();
        if let Ok(json) = serde_json::to_string(&pairs) {
            props.push((prop::MQTT5_USER_PROPERTIES, json));
        }
    }
    let p = &message.properties;
    if let Some(f) = p.payload_format_indicator {
        props.push((prop::MQTT5_PAYLOAD_FORMAT, f.to_string()));
    }
    if let Some(c) = &p.content_type {
        props.push((prop::MQTT5_CONTENT_TYPE, c.clone()));
    }
    if let Some(r) = &p.response_topic {
        props.push((prop::MQTT5_RESPONSE_TOPIC, r.clone()));
    }
    if let Some(d) = &p.correlation_data {
        props.push((
            prop::MQTT5_CORRELATION_DATA,
            base64::engine::general_purpose::STANDARD.encode(d),
        ));
    }
    if let Some(secs) = p.message_expiry_interval {
        let at = origin
            .now_ms
            .saturating_add(i64::from(secs).saturating_mul(1000));
        props.push((prop::MQTT5_EXPIRES_AT, at.to_string()));
    }
    if let Some(publisher) = origin.publisher {
        props.push((prop::MQTT5_PUBLISHER, publisher.to_owned()));
    }
    if message.retain {
        props.push((prop::MQTT5_RETAIN, "true".to_owned()));
    }
    if let Some((_, key)) = user
        .iter()
        .find(|(k, v)| k == KEY_USER_PROPERTY && !v.is_empty())
    {
        props.push((prop::KEYS, key.clone()));
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

    fn get<'a>(props: &'a [(&str, String)], k: &str) -> Option<&'a str> {
        props.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str())
    }

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
                    ("k".into(), "v2".into()),
                ],
                ..MessageProperties::default()
            },
        };
        let (props, body) = encode(
            &m,
            &["%LMQ%t1%a%".into(), "%LMQ%t1%+%".into()],
            Origin::default(),
        );
        assert_eq!(&body[..], EMPTY_BODY.as_bytes());
        assert_eq!(get(&props, prop::IS_EMPTY_MSG), Some("true"));
        assert_eq!(
            get(&props, prop::INNER_MULTI_DISPATCH),
            Some("%LMQ%t1%a%,%LMQ%t1%+%")
        );
        assert_eq!(get(&props, prop::QOS_LEVEL), Some("1"));
        assert_eq!(get(&props, prop::KEYS), Some("gw-1:42"));
        // Order and the repeated key are kept, in a property of their own.
        assert_eq!(
            get(&props, prop::MQTT5_USER_PROPERTIES),
            Some(r#"[["k","v"],["msg-key","gw-1:42"],["k","v2"]]"#)
        );
        // extData is rocketmq-mqtt's, byte for byte.
        assert_eq!(get(&props, prop::EXT_DATA), Some(r#"{"qosLevel":"1"}"#));
    }

    /// A client's user property named like one of rocketmq-mqtt's internal fields
    /// (`mqttRealTopic` re-routes a message in `PushAction.write`, `qosLevel` sets a p2p
    /// message's QoS) never reaches `extData`.
    #[test]
    fn user_properties_never_reach_ext_data() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let m = Message {
                topic: "t1/a/b".into(),
                payload: Bytes::from_static(b"x"),
                qos,
                retain: false,
                properties: MessageProperties {
                    user_properties: vec![
                        ("mqttRealTopic".into(), "t1/spoofed/topic".into()),
                        ("qosLevel".into(), "2".into()),
                    ],
                    ..MessageProperties::default()
                },
            };
            let (props, _) = encode(&m, &["%LMQ%t1%a%b%".into()], Origin::default());
            let ext = get(&props, prop::EXT_DATA).unwrap_or_default();
            assert_eq!(ext, format!(r#"{{"qosLevel":"{}"}}"#, qos.level()));
            assert_eq!(
                get(&props, prop::QOS_LEVEL),
                Some(&*qos.level().to_string())
            );
        }
    }
}

/// The MQTT message carried by a RocketMQ message read from an LMQ: the topic is
/// `originMqttTopic`, or else rebuilt from the last non-wildcard LMQ of
/// `INNER_MULTI_DISPATCH` (as rocketmq-mqtt does for plain producers); the empty-payload
/// marker is undone; the QoS is `qosLevel` (else `extData`'s `qosLevel`, as rocketmq-mqtt
/// reads it; default 1); the user properties come from `mqtt5UserProperties` only (never
/// from `extData`, which holds rocketmq-mqtt's internal fields), the other MQTT 5
/// properties from their `mqtt5*` properties (a malformed one is left out). `None` when
/// no topic can be found.
pub fn decode(m: &crate::rocketmq::Message) -> Option<Decoded> {
    let topic = match m.property(prop::ORIGIN_MQTT_TOPIC) {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => topic_from_dispatch(m.property(prop::INNER_MULTI_DISPATCH)?)?,
    };
    let payload = if m.property(prop::IS_EMPTY_MSG) == Some("true") {
        Bytes::new()
    } else {
        m.body.clone()
    };
    let ext_qos = || {
        m.property(prop::EXT_DATA)
            .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
            .and_then(|v| v.get(prop::QOS_LEVEL)?.as_str().map(str::to_owned))
    };
    let level = m
        .property(prop::QOS_LEVEL)
        .map(str::to_owned)
        .or_else(ext_qos);
    let qos = match level.as_deref() {
        Some("0") => mqtt::packet::QoS::AtMostOnce,
        Some("2") => mqtt::packet::QoS::ExactlyOnce,
        _ => mqtt::packet::QoS::AtLeastOnce,
    };
    let user_properties = m
        .property(prop::MQTT5_USER_PROPERTIES)
        .and_then(|p| serde_json::from_str::<Vec<(String, String)>>(p).ok())
        .unwrap_or_default();
    let message = Message {
        topic,
        payload,
        qos,
        retain: m.property(prop::MQTT5_RETAIN) == Some("true"),
        properties: mqtt::packet::MessageProperties {
            payload_format_indicator: m
                .property(prop::MQTT5_PAYLOAD_FORMAT)
                .and_then(|f| f.parse::<u8>().ok())
                .filter(|f| *f <= 1),
            message_expiry_interval: None,
            content_type: m.property(prop::MQTT5_CONTENT_TYPE).map(str::to_owned),
            response_topic: m
                .property(prop::MQTT5_RESPONSE_TOPIC)
                .filter(|t| !t.is_empty() && !mqtt::topic::is_wildcard(t))
                .map(str::to_owned),
            correlation_data: m
                .property(prop::MQTT5_CORRELATION_DATA)
                .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                .map(Bytes::from),
            user_properties,
        },
    };
    Some(Decoded {
        message,
        publisher: m.property(prop::MQTT5_PUBLISHER).map(str::to_owned),
        expires_ms: m
            .property(prop::MQTT5_EXPIRES_AT)
            .and_then(|e| e.parse::<i64>().ok()),
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
    use mqtt::packet::QoS;

    #[test]
    fn topic_is_rebuilt_from_the_last_plain_lmq() {
        assert_eq!(
            topic_from_dispatch("%LMQ%t1%a%b%,%LMQ%t1%+%b%").as_deref(),
            Some("t1/a/b")
        );
        assert_eq!(topic_from_dispatch("%LMQ%t1").as_deref(), Some("t1"));
        assert_eq!(topic_from_dispatch("%LMQ%t1%+%"), None);
    }

    fn stored(props: &[(&str, &str)]) -> crate::rocketmq::Message {
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        crate::rocketmq::Message {
            topic: "t1".into(),
            queue_id: 0,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag: 0,
            flag: 0,
            body_crc: 0,
            born_timestamp: 0,
            born_host: addr,
            store_timestamp: 0,
            store_host: addr,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from_static(b"x"),
            properties: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Every MQTT 5 publish property goes into an `mqtt5*` property of its own and comes
    /// back unchanged; the expiry becomes an absolute time; `extData` stays rocketmq-mqtt's.
    #[test]
    fn mqtt5_properties_round_trip() {
        let m = Message {
            topic: "t1/a".into(),
            payload: Bytes::from_static(b"{}"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: mqtt::packet::MessageProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(30),
                content_type: Some("application/json".into()),
                response_topic: Some("t1/reply".into()),
                correlation_data: Some(Bytes::from_static(&[0, 1, 0xff])),
                user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            },
        };
        let origin = Origin {
            publisher: Some("dev-1"),
            now_ms: 1_000_000,
        };
        let (props, body) = encode(&m, &["%LMQ%t1%a%".into()], origin);
        let get = |k: &str| props.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get(prop::MQTT5_PAYLOAD_FORMAT), Some("1"));
        assert_eq!(get(prop::MQTT5_CONTENT_TYPE), Some("application/json"));
        assert_eq!(get(prop::MQTT5_RESPONSE_TOPIC), Some("t1/reply"));
        assert_eq!(get(prop::MQTT5_CORRELATION_DATA), Some("AAH/"));
        assert_eq!(get(prop::MQTT5_EXPIRES_AT), Some("1030000"));
        assert_eq!(get(prop::MQTT5_PUBLISHER), Some("dev-1"));
        assert_eq!(get(prop::MQTT5_RETAIN), Some("true"));
        assert_eq!(get(prop::EXT_DATA), Some(r#"{"qosLevel":"2"}"#));
        let mut stored_msg = stored(&[]);
        stored_msg.body = body;
        stored_msg.properties = props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let d = decode(&stored_msg).expect("a message");
        assert_eq!(d.publisher.as_deref(), Some("dev-1"));
        assert_eq!(d.expires_ms, Some(1_030_000));
        let mut want = m.clone();
        want.properties.message_expiry_interval = None;
        assert_eq!(d.message, want);
    }

    /// A message stored by rocketmq-mqtt: its `extData` fields are not user properties;
    /// a p2p message's QoS is read from `extData` when `qosLevel` is absent.
    #[test]
    fn ext_data_is_never_surfaced() {
        let m = stored(&[
            (prop::ORIGIN_MQTT_TOPIC, "t1/a"),
            (prop::QOS_LEVEL, "1"),
            (prop::EXT_DATA, r#"{"qosLevel":"1","mqttRealTopic":"t1/x"}"#),
        ]);
        let d = decode(&m).expect("a message").message;
        assert_eq!(d.topic, "t1/a");
        assert!(d.properties.user_properties.is_empty());
        let m = stored(&[
            (prop::ORIGIN_MQTT_TOPIC, "t1/p2p/c"),
            (prop::EXT_DATA, r#"{"qosLevel":"2"}"#),
        ]);
        assert_eq!(
            decode(&m).map(|d| d.message.qos),
            Some(mqtt::packet::QoS::ExactlyOnce)
        );
        let m = stored(&[
            (prop::ORIGIN_MQTT_TOPIC, "t1/a"),
            (prop::MQTT5_USER_PROPERTIES, r#"[["a","1"],["a","2"]]"#),
        ]);
        assert_eq!(
            decode(&m).map(|d| d.message.properties.user_properties),
            Some(vec![("a".into(), "1".into()), ("a".into(), "2".into())])
        );
    }
}
