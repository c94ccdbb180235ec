//! The broker's own SQLite file (`<state dir>/broker.db`): persistent sessions, their
//! subscriptions and offline queues, and retained messages. (Uplink messages live in the
//! journal, a separate file with its own quota.)
//!
//! # Threads and commits
//! One dedicated OS thread owns the connection; the async [`BrokerStore`] handle sends
//! jobs over a bounded channel (callers wait when it is full) and awaits the answer. The
//! thread runs every job already queued (up to [`MAX_BATCH`]) in one transaction, commits
//! once and only then answers, so a reply means "committed" (WAL mode, `synchronous`
//! as the journal's). A failing job rolls the whole batch back; all its callers get an
//! error and nothing committed before is touched.
//!
//! # Tables
//! - `sessions(client_id PK, expiry_secs, disconnected_ms NULL while connected)`
//! - `subscriptions(client_id, filter, qos, no_local, retain_as_published)`, PK
//!   (client_id, filter)
//! - `queue(id AUTOINCREMENT, client_id, topic, payload, qos, retain, props)`: messages
//!   for disconnected persistent sessions, delivered in `id` order
//! - `retained(topic PK, payload, qos, props)`
//!
//! `props` is the MQTT 5 properties as JSON (NULL when empty).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use mqtt::packet::{Message, MessageProperties, QoS};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::journal::SyncMode;

/// Most jobs in one transaction.
pub const MAX_BATCH: usize = 256;
/// File name inside the state directory.
pub const FILE_NAME: &str = "broker.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT PRIMARY KEY, expiry_secs INTEGER NOT NULL, disconnected_ms INTEGER);
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL,
    no_local INTEGER NOT NULL, retain_as_published INTEGER NOT NULL,
    PRIMARY KEY (client_id, filter));
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL, topic TEXT NOT NULL,
    payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, props TEXT);
CREATE INDEX IF NOT EXISTS queue_client ON queue (client_id, id);
CREATE TABLE IF NOT EXISTS retained (
    topic TEXT PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL, props TEXT);
";
const UPSERT_SESSION: &str = "INSERT INTO sessions (client_id, expiry_secs, disconnected_ms) \
     VALUES (?1, ?2, NULL) ON CONFLICT (client_id) DO UPDATE SET expiry_secs = ?2, disconnected_ms = NULL";
const DISCONNECTED: &str = "UPDATE sessions SET disconnected_ms = ?2 WHERE client_id = ?1";
const DELETE_SESSION: &str = "DELETE FROM sessions WHERE client_id = ?1";
const DELETE_SUBS: &str = "DELETE FROM subscriptions WHERE client_id = ?1";
const DELETE_QUEUE: &str = "DELETE FROM queue WHERE client_id = ?1";
const UPSERT_SUB: &str = "INSERT OR REPLACE INTO subscriptions \
     (client_id, filter, qos, no_local, retain_as_published) VALUES (?1, ?2, ?3, ?4, ?5)";
const DELETE_SUB: &str = "DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2";
const ENQUEUE: &str = "INSERT INTO queue (client_id, topic, payload, qos, retain, props) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SELECT_QUEUE: &str =
    "SELECT topic, payload, qos, retain, props FROM queue WHERE client_id = ?1 ORDER BY id";
const UPSERT_RETAINED: &str =
    "INSERT OR REPLACE INTO retained (topic, payload, qos, props) VALUES (?1, ?2, ?3, ?4)";
const DELETE_RETAINED: &str = "DELETE FROM retained WHERE topic = ?1";
const SELECT_RETAINED: &str = "SELECT topic, payload, qos, 0, props FROM retained";
const SELECT_SESSIONS: &str = "SELECT client_id, expiry_secs, disconnected_ms, \
     (SELECT count(*) FROM queue q WHERE q.client_id = s.client_id) FROM sessions s";
const SELECT_SUBS: &str =
    "SELECT filter, qos, no_local, retain_as_published FROM subscriptions WHERE client_id = ?1";
const EXPIRED: &str = "SELECT client_id FROM sessions WHERE disconnected_ms IS NOT NULL \
     AND disconnected_ms + expiry_secs * 1000 <= ?1";

/// Subscription options kept for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOptions {
    /// Granted QoS.
    pub qos: QoS,
    /// MQTT 5 no-local.
    pub no_local: bool,
    /// MQTT 5 retain-as-published.
    pub retain_as_published: bool,
}

/// A persistent session as stored.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// Client identifier.
    pub client_id: String,
    /// Session expiry interval, seconds.
    pub expiry_secs: u32,
    /// When it disconnected (Unix ms), `None` if it was connected when the agent stopped.
    pub disconnected_ms: Option<i64>,
    /// Its subscriptions.
    pub subscriptions: Vec<(String, SubOptions)>,
    /// Messages in its offline queue.
    pub queued: usize,
}

/// Everything loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Persistent sessions.
    pub sessions: Vec<StoredSession>,
    /// Retained messages.
    pub retained: Vec<Message>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Props {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pfi: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expiry: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    user: Vec<(String, String)>,
}

fn props_to_json(p: &MessageProperties) -> Option<String> {
    if *p == MessageProperties::default() {
        return None;
    }
    serde_json::to_string(&Props {
        pfi: p.payload_format_indicator,
        expiry: p.message_expiry_interval,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation: p.correlation_data.as_ref().map(|b| b.to_vec()),
        user: p.user_properties.clone(),
    })
    .ok()
}

fn props_from_json(s: Option<String>) -> MessageProperties {
    let p: Props = s
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    MessageProperties {
        payload_format_indicator: p.pfi,
        message_expiry_interval: p.expiry,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation.map(Bytes::from),
        user_properties: p.user,
    }
}

fn qos_of(n: i64) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn read_messages(
    c: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Vec<Message>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok(Message {
            topic: r.get(0)?,
            payload: Bytes::from(r.get::<_, Vec<u8>>(1)?),
            qos: qos_of(r.get(2)?),
            retain: r.get(3)?,
            properties: props_from_json(r.get(4)?),
        })
    })?;
    rows.collect()
}

type Reply = Box<dyn FnOnce(Option<&Error>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (Reply, bool) + Send>;

/// Handle to the broker database thread. Clones share the thread.
#[derive(Debug, Clone)]
pub struct BrokerStore {
    tx: mpsc::Sender<Job>,
    path: Arc<PathBuf>,
}

fn sqlite(path: &Path, e: rusqlite::Error) -> Error {
    Error::Sqlite {
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

impl BrokerStore {
    /// Opens (or creates) the database and starts its thread; returns what it holds.
    pub async fn open(path: &Path, synchronous: SyncMode) -> Result<(Self, Snapshot)> {
        let (tx, mut rx) = mpsc::channel::<Job>(1024);
        let (ready_tx, ready_rx) = oneshot::channel();
        let p = path.to_path_buf();
        let open = move || -> rusqlite::Result<(Connection, Snapshot)> {
            let c = Connection::open(&p)?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", synchronous.pragma_value())?;
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            c.execute_batch(SCHEMA)?;
            let snapshot = load(&c)?;
            Ok((c, snapshot))
        };
        let name = path.to_path_buf();
        std::thread::Builder::new()
            .name("broker-db".to_owned())
            .spawn(move || {
                let c = match open() {
                    Ok((c, snapshot)) => {
                        let _ = ready_tx.send(Ok(snapshot));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Open {
                            path: name.clone(),
                            source: e,
                        }));
                        return;
                    }
                };
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    run_batch(&c, &name, &mut batch);
                }
                drop(c);
                tracing::debug!(path = %name.display(), "broker database closed");
            })
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let snapshot = ready_rx.await.map_err(|_| Error::Closed)??;
        Ok((
            Self {
                tx,
                path: Arc::new(path.to_path_buf()),
            },
            snapshot,
        ))
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let path = self.path.clone();
        let job: Job = Box::new(move |c: &Connection| {
            let r = f(c);
            let failed = r.is_err();
            let reply: Reply = Box::new(move |batch: Option<&Error>| {
                let out = match (r, batch) {
                    (Err(e), _) => Err(sqlite(&path, e)),
                    (Ok(_), Some(e)) => Err(e.duplicate()),
                    (Ok(v), None) => Ok(v),
                };
                let _ = tx.send(out);
            });
            (reply, failed)
        });
        self.tx.send(job).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Creates or refreshes a persistent session (marks it connected).
    pub async fn save_session(&self, client_id: &str, expiry_secs: u32) -> Result<()> {
        let id = client_id.to_owned();
        self.call(move |c| {
            c.execute(UPSERT_SESSION, params![id, expiry_secs])
                .map(drop)
        })
        .await
    }

    /// Records when a persistent session went offline (its expiry counts from then).
    pub async fn disconnected(&self, client_id: &str, now_ms: i64) -> Result<()> {
        let id = client_id.to_owned();
        self.call(move |c| c.execute(DISCONNECTED, params![id, now_ms]).map(drop))
            .await
    }

    /// Deletes a session with its subscriptions and queue.
    pub async fn delete_session(&self, client_id: &str) -> Result<()> {
        let id = client_id.to_owned();
        self.call(move |c| {
            for sql in [DELETE_SESSION, DELETE_SUBS, DELETE_QUEUE] {
                c.execute(sql, params![id])?;
            }
            Ok(())
        })
        .await
    }

    /// Stores a subscription of a persistent session.
    pub async fn subscribe(&self, client_id: &str, filter: &str, o: SubOptions) -> Result<()> {
        let (id, f) = (client_id.to_owned(), filter.to_owned());
        self.call(move |c| {
            c.execute(
                UPSERT_SUB,
                params![id, f, o.qos.level(), o.no_local, o.retain_as_published],
            )
            .map(drop)
        })
        .await
    }

    /// Removes a subscription of a persistent session.
    pub async fn unsubscribe(&self, client_id: &str, filter: &str) -> Result<()> {
        let (id, f) = (client_id.to_owned(), filter.to_owned());
        self.call(move |c| c.execute(DELETE_SUB, params![id, f]).map(drop))
            .await
    }

    /// Appends messages to a session's offline queue, in order.
    pub async fn enqueue(&self, client_id: &str, messages: Vec<Message>) -> Result<()> {
        let id = client_id.to_owned();
        self.call(move |c| {
            let mut stmt = c.prepare_cached(ENQUEUE)?;
            for m in &messages {
                stmt.execute(params![
                    id,
                    m.topic,
                    &m.payload[..],
                    m.qos.level(),
                    m.retain,
                    props_to_json(&m.properties)
                ])?;
            }
            Ok(())
        })
        .await
    }

    /// Removes and returns a session's offline queue, oldest first.
    pub async fn take_queue(&self, client_id: &str) -> Result<Vec<Message>> {
        let id = client_id.to_owned();
        self.call(move |c| {
            let messages = read_messages(c, SELECT_QUEUE, &[&id])?;
            c.execute(DELETE_QUEUE, params![id])?;
            Ok(messages)
        })
        .await
    }

    /// Sets (`Some`) or clears (`None`) the retained message of `topic`.
    pub async fn retain(&self, topic: &str, message: Option<Message>) -> Result<()> {
        let t = topic.to_owned();
        self.call(move |c| match message {
            Some(m) => c
                .execute(
                    UPSERT_RETAINED,
                    params![
                        t,
                        &m.payload[..],
                        m.qos.level(),
                        props_to_json(&m.properties)
                    ],
                )
                .map(drop),
            None => c.execute(DELETE_RETAINED, params![t]).map(drop),
        })
        .await
    }

    /// Deletes the sessions whose expiry passed by `now_ms`; returns their identifiers.
    pub async fn expire(&self, now_ms: i64) -> Result<Vec<String>> {
        self.call(move |c| {
            let ids: Vec<String> = c
                .prepare_cached(EXPIRED)?
                .query_map(params![now_ms], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for id in &ids {
                for sql in [DELETE_SESSION, DELETE_SUBS, DELETE_QUEUE] {
                    c.execute(sql, params![id])?;
                }
            }
            Ok(ids)
        })
        .await
    }

    /// Runs `PRAGMA integrity_check`; returns the problems (empty = healthy).
    pub async fn integrity_check(&self) -> Result<Vec<String>> {
        self.call(|c| {
            let rows: Vec<String> = c
                .prepare("PRAGMA integrity_check")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows.into_iter().filter(|r| r != "ok").collect())
        })
        .await
    }
}

fn load(c: &Connection) -> rusqlite::Result<Snapshot> {
    let mut sessions: Vec<StoredSession> = c
        .prepare(SELECT_SESSIONS)?
        .query_map([], |r| {
            Ok(StoredSession {
                client_id: r.get(0)?,
                expiry_secs: r.get(1)?,
                disconnected_ms: r.get(2)?,
                subscriptions: Vec::new(),
                queued: r.get::<_, i64>(3)?.try_into().unwrap_or(0),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = c.prepare(SELECT_SUBS)?;
    for s in &mut sessions {
        s.subscriptions = stmt
            .query_map(params![s.client_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    SubOptions {
                        qos: qos_of(r.get(1)?),
                        no_local: r.get(2)?,
                        retain_as_published: r.get(3)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    let mut retained = read_messages(c, SELECT_RETAINED, &[])?;
    for m in &mut retained {
        m.retain = true;
    }
    Ok(Snapshot { sessions, retained })
}

fn run_batch(c: &Connection, path: &Path, batch: &mut Vec<Job>) {
    let mut failure = c
        .execute_batch("BEGIN IMMEDIATE")
        .err()
        .map(|e| sqlite(path, e));
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        let (reply, failed) = job(c);
        replies.push(reply);
        if failed && failure.is_none() {
            failure = Some(Error::Internal(
                "broker database batch rolled back".to_owned(),
            ));
        }
    }
    if failure.is_none()
        && let Err(e) = c.execute_batch("COMMIT")
    {
        failure = Some(sqlite(path, e));
    }
    if let Some(e) = &failure {
        tracing::warn!(error = %e, "broker database batch rolled back");
        let _ = c.execute_batch("ROLLBACK");
    }
    for reply in replies {
        reply(failure.as_ref());
    }
}
