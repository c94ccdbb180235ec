//! The broker's own SQLite file (`<state dir>/broker.db`): persistent sessions, their
//! subscriptions and offline queues, and retained messages. (Uplink messages live in the
//! journal, a separate file with its own quota.)
//!
//! # Threads and commits
//! One [`sqlite_worker`] thread owns the connection; the async [`SessionsDb`] handle sends
//! jobs over a bounded channel (callers wait when it is full) and awaits the answer. The
//! thread runs every job already queued (up to [`MAX_BATCH`]) in one transaction, commits
//! once and only then answers, so a reply means "committed" (WAL mode, `synchronous`
//! as the journal's). A failing job rolls the whole batch back; all its callers get an
//! error and nothing committed before is touched.
//!
//! # Tables
//! - `sessions(client_id PK, expiry_secs, disconnected_ms NULL while connected)`
//! - `subscriptions(client_id, filter, qos, no_local, retain_as_published, sub_id)`, PK
//!   (client_id, filter); `sub_id` the MQTT 5 Subscription Identifier (NULL: none)
//! - `queue(id, client_id, topic, payload, qos, retain, props, expires_ms, sent, sub_ids)`
//!   (`sub_ids`: the Subscription Identifiers it matched, `1,7`, NULL when none): every
//!   QoS 1/2 message for a persistent session not yet acknowledged by its client, whether
//!   the session is connected or not, delivered in `id` order. `id` is the delivery's
//!   tag (given by the router, larger than every id stored, see [`Snapshot::next_tag`]);
//!   a row is inserted before the publish that produced it is acknowledged and deleted
//!   only when the subscriber acknowledged it ([`SessionsDb::acked`]). `sent` = the
//!   message may have reached the client (it was handed to a connection), so a resend
//!   carries DUP.
//! - `retained(topic PK, payload, qos, props, expires_ms)`
//!
//! A database of an older version gets the columns it lacks at open (`ADDED_COLUMNS`,
//! NULL in its existing rows), so it keeps working. A session that was connected when
//! the agent stopped counts as disconnected from the next start (its expiry runs).
//!
//! `props` is the MQTT 5 properties as JSON (NULL when empty); `expires_ms` the MQTT 5
//! message expiry as Unix ms (NULL = never).
//!
//! # Size
//! The content (pages not on the free list) stays within `sessions.max_db_bytes`: a row
//! or retained message is stored only in room reserved first ([`SessionsDb::reserve`]:
//! content as of the last commit plus reservations not yet committed); the thread
//! measures the content after each batch, before answering it. A resumed session's
//! queue is read in pages ([`SessionsDb::read_queue_page`]), never whole.
//!
//! # Acknowledgements
//! [`SessionsDb::acked`] is called from the connection's synchronous ack path, so it
//! only records the id in a list the thread takes at its next batch (waking the thread
//! if idle). The thread deletes those rows after the batch's jobs, and only when the
//! batch emptied the job queue: a delete is recorded after its row's insert job was
//! queued, so the insert has then run. A lost delete (crash) means a redelivery with
//! DUP, never a loss.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use mqtt::packet::{Message, MessageProperties, QoS};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::journal::SyncMode;
use crate::sqlite_worker::{self, Batches};

/// Most jobs in one transaction.
pub const MAX_BATCH: usize = 256;
/// Jobs queued at most (callers wait beyond).
const QUEUE: usize = 1024;
/// File name inside the state directory.
pub const FILE_NAME: &str = "broker.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT PRIMARY KEY, expiry_secs INTEGER NOT NULL, disconnected_ms INTEGER);
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL,
    no_local INTEGER NOT NULL, retain_as_published INTEGER NOT NULL, sub_id INTEGER,
    PRIMARY KEY (client_id, filter));
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL, topic TEXT NOT NULL,
    payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, props TEXT,
    expires_ms INTEGER, sent INTEGER NOT NULL DEFAULT 0, sub_ids TEXT);
CREATE INDEX IF NOT EXISTS queue_client ON queue (client_id, id);
CREATE TABLE IF NOT EXISTS retained (
    topic TEXT PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL, props TEXT,
    expires_ms INTEGER);
";
/// Columns added after the first release: (table, column, definition).
const ADDED_COLUMNS: [(&str, &str, &str); 5] = [
    ("queue", "expires_ms", "INTEGER"),
    ("queue", "sent", "INTEGER NOT NULL DEFAULT 0"),
    ("retained", "expires_ms", "INTEGER"),
    ("subscriptions", "sub_id", "INTEGER"),
    ("queue", "sub_ids", "TEXT"),
];
const UPSERT_SESSION: &str = "INSERT INTO sessions (client_id, expiry_secs, disconnected_ms) \
     VALUES (?1, ?2, NULL) ON CONFLICT (client_id) DO UPDATE SET expiry_secs = ?2, disconnected_ms = NULL";
const DISCONNECTED: &str = "UPDATE sessions SET disconnected_ms = ?2 WHERE client_id = ?1";
const DELETE_SESSION: &str = "DELETE FROM sessions WHERE client_id = ?1";
const DELETE_SUBS: &str = "DELETE FROM subscriptions WHERE client_id = ?1";
const DELETE_QUEUE: &str = "DELETE FROM queue WHERE client_id = ?1";
const UPSERT_SUB: &str = "INSERT OR REPLACE INTO subscriptions \
     (client_id, filter, qos, no_local, retain_as_published, sub_id) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const DELETE_SUB: &str = "DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2";
const ENQUEUE: &str = "INSERT OR REPLACE INTO queue \
     (id, client_id, topic, payload, qos, retain, props, expires_ms, sent, sub_ids) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const SELECT_QUEUE_PAGE: &str = "SELECT topic, payload, qos, retain, props, expires_ms, id, \
     sent, sub_ids FROM queue WHERE client_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
const QUEUE_TOTALS: &str = "SELECT count(*), coalesce(sum(length(topic) + length(payload)), 0) \
     FROM queue WHERE client_id = ?1";
const MARK_SENT: &str =
    "UPDATE queue SET sent = 1 WHERE client_id = ?1 AND id > ?2 AND id <= ?3 AND sent = 0";
const DELETE_QUEUED: &str = "DELETE FROM queue WHERE id = ?1";
const MAX_QUEUE_ID: &str = "SELECT coalesce(max(id), 0) FROM queue";
const UPSERT_RETAINED: &str = "INSERT OR REPLACE INTO retained (topic, payload, qos, props, \
     expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)";
const DELETE_RETAINED: &str = "DELETE FROM retained WHERE topic = ?1";
const SELECT_RETAINED: &str =
    "SELECT topic, payload, qos, 0, props, expires_ms, 0, 0, NULL FROM retained";
const SELECT_SESSIONS: &str = "SELECT client_id, expiry_secs, disconnected_ms, \
     (SELECT count(*) FROM queue q WHERE q.client_id = s.client_id), \
     (SELECT coalesce(sum(length(topic) + length(payload)), 0) FROM queue q \
     WHERE q.client_id = s.client_id) FROM sessions s";
/// Bytes of content: pages in use (not on the free list).
const USED_BYTES: &str = "SELECT (page_count - freelist_count) * page_size \
     FROM pragma_page_count, pragma_freelist_count, pragma_page_size";
/// Bytes the WAL file is truncated to after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;
/// Rows read at most per page when a session resumes.
pub const PAGE_ROWS: usize = 64;
/// Bytes (topic + payload) read at most per page when a session resumes (at least one
/// row is read, whatever its size).
pub const PAGE_BYTES: usize = 256 * 1024;
const SELECT_SUBS: &str = "SELECT filter, qos, no_local, retain_as_published, sub_id FROM subscriptions \
     WHERE client_id = ?1";
/// Sessions that were connected when the agent stopped count as disconnected from start.
const DISCONNECTED_AT_START: &str =
    "UPDATE sessions SET disconnected_ms = ?1 WHERE disconnected_ms IS NULL";
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
    /// MQTT 5 Subscription Identifier (1..=268435455), if the SUBSCRIBE had one.
    pub id: Option<u32>,
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
    /// Their bytes (topic + payload).
    pub queued_bytes: usize,
}

/// Everything loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Persistent sessions.
    pub sessions: Vec<StoredSession>,
    /// Retained messages (unexpired), with their expiry (Unix ms).
    pub retained: Vec<(Message, Option<i64>)>,
    /// The first delivery tag to use: above every queued row's id.
    pub next_tag: u64,
}

/// A message stored for a persistent session.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Row id, also the delivery tag.
    pub id: u64,
    /// The message, QoS and retain flag as delivered.
    pub message: Message,
    /// MQTT 5 message expiry, Unix ms.
    pub expires_ms: Option<i64>,
    /// Whether it may have reached the client already (resend with DUP).
    pub sent: bool,
    /// The Subscription Identifiers it matched (3.3.4-3).
    pub subscription_ids: Vec<u32>,
}

/// Subscription identifiers as stored (`1,7`; NULL when none).
fn ids_to_text(ids: &[u32]) -> Option<String> {
    (!ids.is_empty()).then(|| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

fn ids_from_text(s: Option<String>) -> Vec<u32> {
    s.map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
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
) -> rusqlite::Result<Vec<Queued>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(args, queued_row)?;
    rows.collect()
}

fn queued_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Queued> {
    Ok(Queued {
        message: Message {
            topic: r.get(0)?,
            payload: Bytes::from(r.get::<_, Vec<u8>>(1)?),
            qos: qos_of(r.get(2)?),
            retain: r.get(3)?,
            properties: props_from_json(r.get(4)?),
        },
        expires_ms: r.get(5)?,
        id: r.get::<_, i64>(6)?.try_into().unwrap_or(0),
        sent: r.get(7)?,
        subscription_ids: ids_from_text(r.get(8)?),
    })
}

/// Content bytes of the database (pages not on the free list); 0 if unknown.
fn used_bytes(c: &Connection) -> u64 {
    c.query_row(USED_BYTES, [], |r| r.get::<_, i64>(0))
        .map(|n| u64::try_from(n).unwrap_or(0))
        .unwrap_or(0)
}

/// Room reserved in the database for content not yet committed; released on drop.
#[derive(Debug)]
pub struct Reserved {
    room: Arc<Room>,
    bytes: u64,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.room.reserved.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

type Reply = Box<dyn FnOnce(Option<&Error>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (Reply, bool) + Send>;

/// Ids of acknowledged rows waiting for the thread (see the module doc).
type Acks = Arc<std::sync::Mutex<Vec<u64>>>;

fn take_acks(acks: &Acks) -> Vec<u64> {
    std::mem::take(&mut *acks.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Handle to the broker database thread. Clones share the thread.
#[derive(Debug, Clone)]
pub struct SessionsDb {
    tx: mpsc::Sender<Job>,
    path: Arc<PathBuf>,
    acks: Acks,
    room: Arc<Room>,
}

/// The database's size against its bound (`sessions.max_db_bytes`): content bytes as of
/// the last commit, plus the bytes of rows reserved and not yet committed.
#[derive(Debug)]
struct Room {
    max: u64,
    used: AtomicU64,
    reserved: AtomicU64,
}

/// A job queued to the thread; resolves once its batch committed.
pub type Committed<T> = oneshot::Receiver<Result<T>>;

/// Waits for a queued job's commit.
pub async fn committed<T>(rx: Committed<T>) -> Result<T> {
    rx.await.map_err(|_| Error::Closed)?
}

fn sqlite(path: &Path, e: rusqlite::Error) -> Error {
    Error::Sqlite {
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

/// The database's side of its [`sqlite_worker`] thread.
struct DbThread {
    c: Connection,
    path: PathBuf,
    room: Arc<Room>,
    acks: Acks,
    /// Acknowledged rows to delete (see the module doc).
    deletes: Vec<u64>,
}

impl Batches for DbThread {
    type Job = Job;

    fn starting(&mut self) {
        // Taken before the jobs: their inserts were queued before them.
        self.deletes.extend(take_acks(&self.acks));
    }

    fn run(&mut self, jobs: &mut Vec<Job>, drained: bool) -> ControlFlow<()> {
        let now: &[u64] = if drained { &self.deletes } else { &[] };
        run_batch(&self.c, &self.path, jobs, now, &self.room);
        if drained {
            self.deletes.clear();
        }
        ControlFlow::Continue(())
    }

    fn finish(mut self) {
        self.deletes.extend(take_acks(&self.acks));
        if !self.deletes.is_empty() {
            run_batch(
                &self.c,
                &self.path,
                &mut Vec::new(),
                &self.deletes,
                &self.room,
            );
        }
        tracing::debug!(path = %self.path.display(), "broker database closed");
    }
}

impl SessionsDb {
    /// Opens (or creates) the database and starts its thread; returns what it holds.
    /// Rows and retained messages are stored while its content stays within `max_bytes`
    /// ([`SessionsDb::reserve`]).
    pub async fn open(
        path: &Path,
        synchronous: SyncMode,
        max_bytes: u64,
    ) -> Result<(Self, Snapshot)> {
        let room = Arc::new(Room {
            max: max_bytes,
            used: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
        });
        let thread_room = room.clone();
        let p = path.to_path_buf();
        let acks = Acks::default();
        let thread_acks = acks.clone();
        let open = move || -> Result<(DbThread, Snapshot)> {
            let opened = || -> rusqlite::Result<(Connection, Snapshot)> {
                let c = Connection::open(&p)?;
                c.pragma_update(None, "journal_mode", "WAL")?;
                // The WAL file is cut back to this after each checkpoint (it would
                // otherwise keep the size of the largest batch).
                c.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
                c.pragma_update(None, "synchronous", synchronous.pragma_value())?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c.execute_batch(SCHEMA)?;
                migrate(&c)?;
                let snapshot = load(&c, crate::broker::now_ms())?;
                thread_room.used.store(used_bytes(&c), Ordering::Relaxed);
                Ok((c, snapshot))
            };
            let (c, snapshot) = opened().map_err(|source| Error::Open {
                path: p.clone(),
                source,
            })?;
            let thread = DbThread {
                c,
                path: p,
                room: thread_room,
                acks: thread_acks,
                deletes: Vec::new(),
            };
            Ok((thread, snapshot))
        };
        let (tx, ready_rx) = sqlite_worker::spawn("broker-db", QUEUE, MAX_BATCH, open)?;
        let snapshot = ready_rx.await.map_err(|_| Error::Closed)??;
        Ok((
            Self {
                tx,
                path: Arc::new(path.to_path_buf()),
                acks,
                room,
            },
            snapshot,
        ))
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        committed(self.submit(f, None).await?).await
    }

    /// Queues a job; returns once it is queued (jobs run in queue order). `hold` (the
    /// room reserved for its bytes) is released once the job's batch is over.
    async fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        hold: Option<Reserved>,
    ) -> Result<Committed<T>> {
        let (tx, rx) = oneshot::channel();
        let path = self.path.clone();
        let job: Job = Box::new(move |c: &Connection| {
            let r = f(c);
            let failed = r.is_err();
            let reply: Reply = Box::new(move |batch: Option<&Error>| {
                drop(hold);
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
        Ok(rx)
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
                params![
                    id,
                    f,
                    o.qos.level(),
                    o.no_local,
                    o.retain_as_published,
                    o.id
                ],
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

    /// Queues `message` (as delivered, matching the subscriptions `ids`) for a
    /// persistent session as row `tag`, in the room `hold` reserved for it; returns once
    /// queued, with the commit to wait for before the publish may be acknowledged.
    #[allow(clippy::too_many_arguments)]
    pub async fn enqueue(
        &self,
        client_id: &Arc<str>,
        tag: u64,
        message: &Message,
        expires_ms: Option<i64>,
        sent: bool,
        ids: &[u32],
        hold: Reserved,
    ) -> Result<Committed<()>> {
        let ids = ids_to_text(ids);
        let id = client_id.clone();
        let (topic, payload, qos, retain) = (
            message.topic.clone(),
            message.payload.clone(),
            message.qos.level(),
            message.retain,
        );
        let props = props_to_json(&message.properties);
        let row = i64::try_from(tag).unwrap_or(i64::MAX);
        self.submit(
            move |c| {
                c.prepare_cached(ENQUEUE)?
                    .execute(params![
                        row,
                        &*id,
                        topic,
                        &payload[..],
                        qos,
                        retain,
                        props,
                        expires_ms,
                        sent,
                        ids
                    ])
                    .map(drop)
            },
            Some(hold),
        )
        .await
    }

    /// Reserves room for `bytes` more content, if the database stays within its bound;
    /// the reservation ends when the job that stores them has committed
    /// ([`Reserved`] is moved into it).
    pub fn reserve(&self, bytes: usize) -> Option<Reserved> {
        let bytes = bytes as u64;
        let r = &self.room;
        r.reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                let total = r.used.load(Ordering::Relaxed) + held + bytes;
                (total <= r.max).then_some(held + bytes)
            })
            .ok()?;
        Some(Reserved {
            room: r.clone(),
            bytes,
        })
    }

    /// Bytes of content in the database as of its last commit.
    pub fn used_bytes(&self) -> u64 {
        self.room.used.load(Ordering::Relaxed)
    }

    /// A session's stored rows and their bytes (topic + payload).
    pub async fn queue_totals(&self, client_id: &str) -> Result<(usize, usize)> {
        let id = client_id.to_owned();
        self.call(move |c| {
            c.prepare_cached(QUEUE_TOTALS)?.query_row(params![id], |r| {
                Ok((
                    usize::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })
        })
        .await
    }

    /// One page of a session's stored messages after row `after`, oldest first: at most
    /// [`PAGE_ROWS`] rows and about [`PAGE_BYTES`] (at least one row). They stay until
    /// acknowledged, and are marked as sent (a later resend carries DUP).
    pub async fn read_queue_page(&self, client_id: &str, after: u64) -> Result<Vec<Queued>> {
        let id = client_id.to_owned();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.call(move |c| {
            let mut stmt = c.prepare_cached(SELECT_QUEUE_PAGE)?;
            let mut rows = stmt.query(params![id, after, PAGE_ROWS as i64])?;
            let mut page = Vec::new();
            let mut bytes = 0;
            while let Some(r) = rows.next()? {
                let q = queued_row(r)?;
                bytes += q.message.topic.len() + q.message.payload.len();
                page.push(q);
                if bytes >= PAGE_BYTES {
                    break;
                }
            }
            drop(rows);
            drop(stmt);
            if let Some(last) = page.last() {
                let last = i64::try_from(last.id).unwrap_or(i64::MAX);
                c.prepare_cached(MARK_SENT)?
                    .execute(params![id, after, last])?;
            }
            Ok(page)
        })
        .await
    }

    /// The client acknowledged row `tag` (PUBACK or PUBCOMP; or it expired): deleted
    /// with the thread's next batch. Never waits.
    pub fn acked(&self, tag: u64) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        acks.push(tag);
        if acks.len() == 1 {
            drop(acks);
            // Wakes an idle thread; a full queue means it is busy and takes them soon.
            let nothing: Job = Box::new(|_| (Box::new(|_| {}), false));
            let _ = self.tx.try_send(nothing);
        }
    }

    /// Sets (`Some`, in the room `hold` reserved for it) or clears (`None`) the retained
    /// message of `topic`.
    pub async fn retain(
        &self,
        topic: &str,
        message: Option<(Message, Option<i64>)>,
        hold: Option<Reserved>,
    ) -> Result<()> {
        let t = topic.to_owned();
        let job = move |c: &Connection| match message {
            Some((m, expires_ms)) => c
                .execute(
                    UPSERT_RETAINED,
                    params![
                        t,
                        &m.payload[..],
                        m.qos.level(),
                        props_to_json(&m.properties),
                        expires_ms
                    ],
                )
                .map(drop),
            None => c.execute(DELETE_RETAINED, params![t]).map(drop),
        };
        committed(self.submit(job, hold).await?).await
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

/// Adds the columns a database created by an older version lacks.
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    for (table, column, definition) in ADDED_COLUMNS {
        let present: bool = c
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists(params![column])?;
        if !present {
            c.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

fn load(c: &Connection, now_ms: i64) -> rusqlite::Result<Snapshot> {
    c.execute(DISCONNECTED_AT_START, params![now_ms])?;
    let mut sessions: Vec<StoredSession> = c
        .prepare(SELECT_SESSIONS)?
        .query_map([], |r| {
            Ok(StoredSession {
                client_id: r.get(0)?,
                expiry_secs: r.get(1)?,
                disconnected_ms: r.get(2)?,
                subscriptions: Vec::new(),
                queued: r.get::<_, i64>(3)?.try_into().unwrap_or(0),
                queued_bytes: r.get::<_, i64>(4)?.try_into().unwrap_or(0),
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
                        id: r.get(4)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    let retained = read_messages(c, SELECT_RETAINED, &[])?
        .into_iter()
        .filter(|q| q.expires_ms.is_none_or(|e| e > now_ms))
        .map(|mut q| {
            q.message.retain = true;
            (q.message, q.expires_ms)
        })
        .collect();
    let max_id: i64 = c.query_row(MAX_QUEUE_ID, [], |r| r.get(0))?;
    Ok(Snapshot {
        sessions,
        retained,
        next_tag: u64::try_from(max_id).unwrap_or(0) + 1,
    })
}

fn run_batch(c: &Connection, path: &Path, batch: &mut Vec<Job>, deletes: &[u64], room: &Room) {
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
    if failure.is_none() && !deletes.is_empty() {
        let deleted = c.prepare_cached(DELETE_QUEUED).and_then(|mut stmt| {
            for id in deletes {
                stmt.execute(params![i64::try_from(*id).unwrap_or(i64::MAX)])?;
            }
            Ok(())
        });
        if let Err(e) = deleted {
            failure = Some(sqlite(path, e));
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
    // Before the replies: a reservation ends (with its job's reply) only once the bytes
    // it stood for are counted as used.
    room.used.store(used_bytes(c), Ordering::Relaxed);
    for reply in replies {
        reply(failure.as_ref());
    }
}
