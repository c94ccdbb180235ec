//! Retained messages, shared by every bridge instance and surviving restarts: kept in the
//! name server's kvconfig (namespace [`NAMESPACE`], key = the MQTT topic, value = JSON with
//! the QoS, the payload in base64 and the user properties).
//!
//! Why kvconfig and not a RocketMQ compacted topic: compaction needs a specially created
//! topic and a full read on every subscribe, while kvconfig answers "every retained
//! message" in one request, is persisted by the name server, and is where rocketmq-mqtt's
//! meta already lives. The cost is size: retained payloads are limited
//! (`limits.max_retained_bytes`), as the name server keeps them in memory.

use base64::Engine;
use bytes::Bytes;
use mqtt::packet::{Message, MessageProperties, QoS};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::rocketmq::NameServer;

/// kvconfig namespace of retained messages.
pub const NAMESPACE: &str = "MQTT_RETAIN";

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    qos: u8,
    payload: String,
    #[serde(default)]
    user_properties: Vec<(String, String)>,
}

/// Stores `message` as the retained message of its topic; an empty payload clears it.
pub async fn put(ns: &NameServer, message: &Message) -> Result<(), Error> {
    if message.payload.is_empty() {
        return ns.delete_kv_config(NAMESPACE, &message.topic).await;
    }
    let stored = Stored {
        qos: message.qos.level(),
        payload: base64::engine::general_purpose::STANDARD.encode(&message.payload),
        user_properties: message.properties.user_properties.clone(),
    };
    let text = serde_json::to_string(&stored).map_err(|e| Error::Invalid(e.to_string()))?;
    ns.put_kv_config(NAMESPACE, &message.topic, &text).await
}

/// The retained messages whose topic matches `filter`.
pub async fn matching(ns: &NameServer, filter: &str) -> Result<Vec<Message>, Error> {
    let all = ns.kv_list(NAMESPACE).await?;
    let mut out: Vec<Message> = all
        .into_iter()
        .filter(|(topic, _)| mqtt::topic::matches(filter, topic))
        .filter_map(|(topic, text)| {
            let s: Stored = serde_json::from_str(&text).ok()?;
            let payload = base64::engine::general_purpose::STANDARD
                .decode(s.payload)
                .ok()?;
            Some(Message {
                topic,
                payload: Bytes::from(payload),
                qos: match s.qos {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                },
                retain: true,
                properties: MessageProperties {
                    user_properties: s.user_properties,
                    ..MessageProperties::default()
                },
            })
        })
        .collect();
    out.sort_by(|a, b| a.topic.cmp(&b.topic));
    Ok(out)
}
