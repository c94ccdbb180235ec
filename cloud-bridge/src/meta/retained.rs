//! Retained messages, shared by every bridge instance and surviving restarts: a table in
//! a RocketMQ compaction topic (`table.rs`, `[topics] retained_topic`), key = the MQTT
//! topic, value = JSON with the QoS, the payload in base64 and the user properties, owner
//! = the client that published it (for the per-client quotas). The MQTT 5 publish
//! properties are kept with it, the expiry interval as an absolute time: an expired
//! message is not sent (and its interval is the time left when it is).
//!
//! A SUBSCRIBE reads the table once for all its filters, from the bridge's memory (after
//! [`Table::sync`], so a message retained through another bridge a moment ago is seen).
//! Each payload is limited (`limits.max_retained_bytes`), the table by `[quotas]`.

use base64::Engine;
use bytes::Bytes;
use mqtt::packet::{Message, MessageProperties, QoS};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::error::Quota;
use crate::meta::table::{Reservation, Table};

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    qos: u8,
    payload: String,
    #[serde(default)]
    user_properties: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_format: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_topic: Option<String>,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_data: Option<String>,
    /// Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<i64>,
}

/// The stored form of a retained message.
fn encode(message: &Message) -> Result<Bytes, Error> {
    let p = &message.properties;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let stored = Stored {
        qos: message.qos.level(),
        payload: b64.encode(&message.payload),
        user_properties: p.user_properties.clone(),
        payload_format: p.payload_format_indicator,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.as_ref().map(|d| b64.encode(d)),
        expires_at_ms: p.message_expiry_interval.map(|secs| {
            mqtt::broker::now_ms().saturating_add(i64::from(secs).saturating_mul(1000))
        }),
    };
    serde_json::to_vec(&stored)
        .map(Bytes::from)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// The stored length of `message` (what the quotas count, besides the topic).
pub fn stored_len(message: &Message) -> usize {
    encode(message).map_or(usize::MAX, |b| b.len())
}

/// Checks the quotas for `message` published by `owner`, and reserves its room. Clearing
/// (an empty payload) always fits.
pub fn reserve(
    table: &Table,
    message: &Message,
    owner: &str,
) -> Result<Option<Reservation>, Quota> {
    if message.payload.is_empty() {
        return Ok(None);
    }
    table
        .reserve(&message.topic, stored_len(message), Some(owner))
        .map(Some)
}

/// Stores `message` as the retained message of its topic; an empty payload clears it.
pub async fn put(table: &Table, message: &Message, owner: &str) -> Result<(), Error> {
    if message.payload.is_empty() {
        return table.delete(&message.topic).await;
    }
    table
        .put(&message.topic, encode(message)?, Some(owner))
        .await
}

fn decode(topic: String, value: &[u8]) -> Option<(Message, Option<i64>)> {
    let s: Stored = serde_json::from_slice(value).ok()?;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(s.payload).ok()?;
    let message = Message {
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
            payload_format_indicator: s.payload_format,
            message_expiry_interval: None,
            content_type: s.content_type,
            response_topic: s.response_topic,
            correlation_data: s
                .correlation_data
                .and_then(|d| b64.decode(d).ok())
                .map(Bytes::from),
        },
    };
    Some((message, s.expires_at_ms))
}

/// The retained messages whose topic matches any of `filters`, each once, by topic, with
/// their expiry time (Unix ms).
pub fn matching(table: &Table, filters: &[&str]) -> Vec<(Message, Option<i64>)> {
    let mut out: Vec<(Message, Option<i64>)> = table
        .select(|topic| filters.iter().any(|f| mqtt::topic::matches(f, topic)))
        .into_iter()
        .filter_map(|(topic, entry)| decode(topic, &entry.value))
        .collect();
    out.sort_by(|a, b| a.0.topic.cmp(&b.0.topic));
    out
}
