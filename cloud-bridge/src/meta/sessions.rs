//! Persistent sessions, kept where every bridge instance can read them: the subscriptions
//! of a session in the session table (`table.rs`, a compaction topic; key = client
//! id, value = JSON), its read positions as RocketMQ consumer offsets (group
//! `%LMQ%{clientId}`, see `subscribe/offsets.rs`). A session that reconnects to any bridge resumes
//! from both. The table is bounded by `[quotas] sessions*`; it used to be the name
//! server's kvconfig, which holds everything in the name server's heap.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::meta::table::Table;

/// The consumer group under which a client's offsets are committed.
pub fn offset_group(client_id: &str) -> String {
    format!("{}{client_id}", crate::lmq::LMQ_PREFIX)
}

/// One stored subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    /// Topic filter.
    pub filter: String,
    /// Granted QoS.
    pub qos: u8,
    /// MQTT 5 No Local.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retain_as_published: bool,
    /// MQTT 5 Subscription Identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<u32>,
    /// When the subscription was made, Unix ms (absent in records of older bridges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
}

/// A message at the head of a queue that the client left unacknowledged when its
/// connection ended, and how many connections in a row did so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    /// LMQ name.
    pub lmq: String,
    /// Broker address.
    pub broker: String,
    /// LMQ offset of the message.
    pub offset: i64,
    /// Connections that ended with it unacknowledged.
    pub count: u32,
}

/// How far a queue was handed to the client when its last connection ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handed {
    /// LMQ name.
    pub lmq: String,
    /// Broker address.
    pub broker: String,
    /// One past the last offset handed.
    pub to: i64,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// Subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
    /// Unacknowledged queue heads (see `subscribe/session.rs`, retries).
    #[serde(default)]
    pub stalls: Vec<Stall>,
    /// Delivery marks at the last clean end of a connection (for DUP flags).
    #[serde(default)]
    pub handed: Vec<Handed>,
    /// The connection that holds the session (`{bridge instance}/{nonce}`), while one
    /// does: a bridge whose connection is no longer the owner closes it (takeover across
    /// bridges).
    #[serde(default)]
    pub owner: Option<String>,
    /// Session expiry interval, seconds (`u32::MAX`: never).
    pub expiry_secs: u32,
    /// When the last connection ended, ms since the epoch (`None` while connected).
    pub disconnected_at_ms: Option<u64>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl StoredSession {
    /// Whether the session expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        match self.disconnected_at_ms {
            None => false,
            Some(_) if self.expiry_secs == u32::MAX => false,
            Some(at) => now_ms > at + u64::from(self.expiry_secs) * 1000,
        }
    }
}

/// How long a load waits for the session table to be read to its end.
pub const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Loads a client's session; expired or unreadable sessions count as none. Sees every
/// save acknowledged before the call, by any bridge.
pub async fn load(table: &Table, client_id: &str) -> Result<Option<StoredSession>, Error> {
    table.sync(SYNC_WAIT).await?;
    Ok(load_local(table, client_id))
}

/// Loads a client's session as this bridge has read it so far.
pub fn load_local(table: &Table, client_id: &str) -> Option<StoredSession> {
    let entry = table.get(client_id)?;
    match serde_json::from_slice::<StoredSession>(&entry.value) {
        Ok(s) if !s.expired(now_ms()) => Some(s),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(client = %client_id, error = %e, "unreadable stored session; starting a new one");
            None
        }
    }
}

/// The stored form of a session.
pub fn encode(session: &StoredSession) -> Result<bytes::Bytes, Error> {
    serde_json::to_vec(session)
        .map(bytes::Bytes::from)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// Saves a client's session, within the quotas (`Error::QuotaExceeded` otherwise).
pub async fn save(table: &Table, client_id: &str, session: &StoredSession) -> Result<(), Error> {
    let value = encode(session)?;
    let _room = table
        .reserve(client_id, value.len(), None)
        .map_err(|q| Error::QuotaExceeded(table.name(), q))?;
    table.put(client_id, value, None).await
}

/// Forgets a client's session.
pub async fn delete(table: &Table, client_id: &str) -> Result<(), Error> {
    table.delete(client_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let mut s = StoredSession {
            subscriptions: vec![],
            stalls: vec![],
            handed: vec![],
            owner: None,
            expiry_secs: 10,
            disconnected_at_ms: None,
        };
        assert!(!s.expired(u64::MAX));
        s.disconnected_at_ms = Some(1_000);
        assert!(!s.expired(11_000));
        assert!(s.expired(11_001));
        s.expiry_secs = u32::MAX;
        assert!(!s.expired(u64::MAX));
        assert_eq!(offset_group("c1"), "%LMQ%c1");
    }
}
