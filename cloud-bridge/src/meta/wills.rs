//! Wills that outlive their bridge. A connection's will is published by the bridge that
//! serves it when the connection ends abnormally (`mqtt::connection`); a copy is kept in the
//! will table (`table.rs`, a compaction topic; key = client id) with the serving
//! bridge's instance id, and every bridge writes a heartbeat (kvconfig namespace
//! [`LIVENESS`]: one small entry per bridge). A new connection of the client replaces the
//! copy, or removes it when it has no will. When
//! a bridge dies with clients connected, another bridge finds their wills under an owner
//! whose heartbeat stopped, and publishes them. A will may then be published twice if two
//! bridges sweep at the same moment: at least once, never lost.

use base64::Engine;
use bytes::Bytes;
use mqtt::packet::{Message, MessageProperties, QoS, Will};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::meta::table::Table;
use crate::rocketmq::{KvMerge, NameServer};

/// kvconfig namespace of bridge heartbeats (instance id -> ms since the epoch).
pub const LIVENESS: &str = "MQTT_BRIDGE";

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    owner: String,
    topic: String,
    qos: u8,
    retain: bool,
    payload: String,
    #[serde(default)]
    user_properties: Vec<(String, String)>,
}

/// Keeps a copy of `will` for `client_id`, owned by bridge `owner`, within the quotas
/// (`Error::QuotaExceeded` otherwise).
pub async fn put(table: &Table, client_id: &str, owner: &str, will: &Will) -> Result<(), Error> {
    let m = &will.message;
    let stored = Stored {
        owner: owner.to_owned(),
        topic: m.topic.clone(),
        qos: m.qos.level(),
        retain: m.retain,
        payload: base64::engine::general_purpose::STANDARD.encode(&m.payload),
        user_properties: m.properties.user_properties.clone(),
    };
    let value = serde_json::to_vec(&stored).map_err(|e| Error::Invalid(e.to_string()))?;
    let _room = table
        .reserve(client_id, value.len(), None)
        .map_err(|q| Error::QuotaExceeded(table.name(), q))?;
    table.put(client_id, value.into(), None).await
}

/// Drops the copy of a client's will if `owner` (`None`: anyone) still owns it.
pub async fn delete(table: &Table, client_id: &str, owner: Option<&str>) -> Result<(), Error> {
    let Some(entry) = table.get(client_id) else {
        return Ok(());
    };
    match serde_json::from_slice::<Stored>(&entry.value) {
        Ok(s) if owner.is_some_and(|o| o != s.owner) => Ok(()),
        _ => table.delete(client_id).await,
    }
}

/// Records that bridge `instance` is alive at `now_ms`.
pub async fn heartbeat(ns: &NameServer, instance: &str, now_ms: u64) -> Result<(), Error> {
    ns.put_kv_config(LIVENESS, instance, &now_ms.to_string())
        .await
        .map(drop)
}

/// Removes bridge `instance`'s heartbeat (clean shutdown).
pub async fn retire(ns: &NameServer, instance: &str) -> Result<(), Error> {
    ns.delete_kv_config(LIVENESS, instance).await.map(drop)
}

/// Wills whose owner has not sent a heartbeat for `stale_ms`: removed from the table and
/// returned for publishing, with their client ids.
pub async fn take_orphans(
    table: &Table,
    ns: &NameServer,
    now_ms: u64,
    stale_ms: u64,
) -> Result<Vec<(String, Message)>, Error> {
    // Read to the end first: a will its owner removed a moment ago must not be published.
    table.sync(std::time::Duration::from_secs(3)).await?;
    let wills = table.select(|_| true);
    if wills.is_empty() {
        return Ok(Vec::new());
    }
    // The latest heartbeat any name server holds: one that was down is behind.
    let alive = ns.kv_list(LIVENESS, KvMerge::Latest).await?;
    let is_alive = |owner: &str| {
        alive
            .get(owner)
            .and_then(|t| t.parse::<u64>().ok())
            .is_some_and(|t| now_ms.saturating_sub(t) < stale_ms)
    };
    let mut out = Vec::new();
    for (client_id, entry) in wills {
        let Ok(s) = serde_json::from_slice::<Stored>(&entry.value) else {
            table.delete(&client_id).await?;
            continue;
        };
        if is_alive(&s.owner) {
            continue;
        }
        table.delete(&client_id).await?;
        let Ok(payload) = base64::engine::general_purpose::STANDARD.decode(&s.payload) else {
            continue;
        };
        out.push((
            client_id,
            Message {
                topic: s.topic,
                payload: Bytes::from(payload),
                qos: match s.qos {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                },
                retain: s.retain,
                properties: MessageProperties {
                    user_properties: s.user_properties,
                    ..MessageProperties::default()
                },
            },
        ));
    }
    Ok(out)
}
