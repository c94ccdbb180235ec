//! Retained messages, shared by every bridge instance and surviving restarts: a table in
//! a RocketMQ compaction topic (`state_table.rs`, `[topics] retained_topic`), key = the MQTT
//! topic, value = JSON with the QoS, the payload in base64 and the user properties, owner
//! = the client that published it (for the per-client quotas).
//!
//! A SUBSCRIBE reads the table once for all its filters, from the bridge's memory (after
//! [`Table::sync`], so a message retained through another bridge a moment ago is seen).
//! Each payload is limited (`limits.max_retained_bytes`), the table by `[quotas]`.

use base64::Engine;
use bytes::Bytes;
use mqtt::packet::{Message, MessageProperties, QoS};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::state_table::{Quota, Reservation, Table};

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    qos: u8,
    payload: String,
    #[serde(default)]
    user_properties: Vec<(String, String)>,
}

/// The stored form of a retained message.
fn encode(message: &Message) -> Result<Bytes, Error> {
    let stored = Stored {
        qos: message.qos.level(),
        payload: base64::engine::general_purpose::STANDARD.encode(&message.payload),
        user_properties: message.properties.user_properties.clone(),
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

fn decode(topic: String, value: &[u8]) -> Option<Message> {
    let s: Stored = serde_json::from_slice(value).ok()?;
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
}

/// The retained messages whose topic matches any of `filters`, each once, by topic.
pub fn matching(table: &Table, filters: &[&str]) -> Vec<Message> {
    let mut out: Vec<Message> = table
        .select(|topic| filters.iter().any(|f| mqtt::topic::matches(f, topic)))
        .into_iter()
        .filter_map(|(topic, entry)| decode(topic, &entry.value))
        .collect();
    out.sort_by(|a, b| a.topic.cmp(&b.topic));
    out
}
