//! A key-value table kept in a RocketMQ compaction topic (topic attribute
//! `cleanup.policy=COMPACTION`). The state that must outlive a bridge and be shared by
//! every bridge lives in four of them: retained messages (key: the MQTT topic),
//! persistent sessions and wills (key: the client id), and the leases of the wildcard
//! filters bridges registered (key: the filter, `wildcards.rs`).
//!
//! Why not the name server's kvconfig, where it was: kvconfig is the name server's
//! configuration store. It keeps every value in its heap, rewrites `kvConfig.json` whole on
//! every write, and a SUBSCRIBE read the retained namespace whole. One client flooding
//! retained messages ran the name server out of heap, and with it the bridges' heartbeats,
//! wildcard updates and every other user of the cluster. A compaction topic is a log on
//! the broker's disk that keeps the latest record per key. Measured on RocketMQ 5.3.3 (2
//! cores): 100k keys of 300 B leave the broker's heap flat (110-120 MB used), are read back
//! whole in 2.5-7 s, survive a graceful restart and a kill -9 with every acknowledged value
//! (`docs` of the security issue; `/work/compaction-study` figures in the commit).
//!
//! # Layout
//! One topic per table, created by `cloud-bridge init` with one queue per broker. A record
//! is one message: `KEYS` = the key (the compaction key), body = the value, property
//! [`STATE_OP`] = `put` or `del`, [`STATE_OWNER`] = the client that wrote it (for quotas),
//! [`STATE_AT`] = when, ms since the epoch. The broker refuses empty bodies, so a deletion
//! is a `del` record with a one-byte body: a deleted key costs one small record for good.
//! The producer sends a key to the queue its hash picks, so while the route is stable a
//! key's records are in one queue, in write order.
//!
//! # Reading
//! Each bridge tails every queue of the table from offset 0 and keeps the table in memory
//! (bounded by [`TableLimits`]). The broker returns each key's latest record, and older
//! ones until compaction removes them: within a queue the later offset wins; across queues
//! (a route change moved a key) the later [`STATE_AT`] wins. A bridge's own write is
//! applied at once when the broker acknowledged it. [`Table::sync`] waits until the tail
//! reached every queue's end as of the call, so that a read after a write acknowledged by
//! any bridge sees it (a session resumed on another bridge, a retained message published
//! there a moment ago).
//!
//! # Bounds
//! Entries and bytes (key + value) are limited in total and per owner. A write is checked
//! and its room reserved before it is sent ([`Table::reserve`]), so concurrent writes of one
//! bridge cannot overshoot; bridges writing at once can, by at most what each had reserved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::Quotas;
use crate::error::{Error, Quota};
use crate::rocketmq::broker_client::PullResult;
use crate::rocketmq::{NameServer, Producer, PullRequest};

/// Property: `put` or `del`.
pub const STATE_OP: &str = "MQTT_STATE_OP";
/// Property: the client that wrote the record.
pub const STATE_OWNER: &str = "MQTT_STATE_OWNER";
/// Property: when the record was written, ms since the epoch.
pub const STATE_AT: &str = "MQTT_STATE_AT";
/// The RocketMQ keys property (the compaction key).
const KEYS: &str = "KEYS";
/// Consumer group of the tail pulls (no offsets are committed under it).
pub const TAIL_GROUP: &str = "CID_MQTT_BRIDGE_STATE";
/// The body of a deletion record.
const DELETED_BODY: &[u8] = b"-";
/// How long one tail pull waits at the broker for new records.
const LONG_POLL: Duration = Duration::from_secs(10);
/// Records per pull.
const PULL_BATCH: u32 = 32;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A table's limits. `0` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableLimits {
    /// Entries in total.
    pub entries: usize,
    /// Bytes (key + value) in total.
    pub bytes: usize,
    /// Entries of one owner.
    pub entries_per_owner: usize,
    /// Bytes of one owner.
    pub bytes_per_owner: usize,
    /// Bytes of one entry.
    pub entry_bytes: usize,
}

impl TableLimits {
    /// The retained table's limits.
    pub fn retained(q: &Quotas) -> Self {
        Self {
            entries: q.retained_messages,
            bytes: q.retained_total_bytes,
            entries_per_owner: q.retained_messages_per_client,
            bytes_per_owner: q.retained_bytes_per_client,
            entry_bytes: 0,
        }
    }

    /// The session table's limits.
    pub fn sessions(q: &Quotas) -> Self {
        Self {
            entries: q.sessions,
            bytes: q.sessions_total_bytes,
            entry_bytes: q.session_record_bytes,
            ..Default::default()
        }
    }

    /// The will table's limits.
    pub fn wills(q: &Quotas) -> Self {
        Self {
            bytes: q.wills_total_bytes,
            entry_bytes: q.will_record_bytes,
            ..Default::default()
        }
    }
}

/// Where a record was read (or written).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    queue: (Arc<str>, i32),
    offset: i64,
}

/// One entry of the table.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// The client that wrote it.
    pub owner: Option<Arc<str>>,
    at: i64,
    source: Option<Source>,
}

#[derive(Debug, Default)]
struct Usage {
    entries: usize,
    bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    total: Usage,
    owners: HashMap<Arc<str>, Usage>,
    /// Room held by writes in flight: (owner, bytes).
    reserved: Vec<(u64, Option<Arc<str>>, usize)>,
    next_reservation: u64,
    /// Next offset to read, per (broker address, queue).
    positions: HashMap<(Arc<str>, i32), i64>,
    /// The queues being tailed.
    tailed: Vec<(Arc<str>, i32)>,
}

impl State {
    fn account(&mut self, key: &str, entry: &Entry, sign: isize) {
        let bytes = key.len() + entry.value.len();
        let apply = |u: &mut Usage| {
            if sign > 0 {
                u.entries += 1;
                u.bytes += bytes;
            } else {
                u.entries = u.entries.saturating_sub(1);
                u.bytes = u.bytes.saturating_sub(bytes);
            }
        };
        apply(&mut self.total);
        if let Some(owner) = &entry.owner {
            let u = self.owners.entry(owner.clone()).or_default();
            apply(u);
            if u.entries == 0 {
                self.owners.remove(owner);
            }
        }
    }

    /// Applies a record (`None` value: a deletion) if it is newer than what is held.
    fn apply(
        &mut self,
        key: &str,
        value: Option<Bytes>,
        owner: Option<Arc<str>>,
        at: i64,
        source: Option<Source>,
    ) {
        if let Some(held) = self.entries.get(key) {
            let newer = match (&held.source, &source) {
                (Some(h), Some(s)) if h.queue == s.queue => s.offset > h.offset,
                _ => at >= held.at,
            };
            if !newer {
                return;
            }
            if let Some(old) = self.entries.remove(key)
                && !old.value.is_empty()
            {
                self.account(key, &old, -1);
            }
        }
        let entry = Entry {
            value: value.unwrap_or_default(),
            owner,
            at,
            source,
        };
        // A deletion is kept as an empty entry so that an older record read later cannot
        // bring the key back; it costs no quota.
        if !entry.value.is_empty() {
            self.account(key, &entry, 1);
        }
        self.entries.insert(key.to_owned(), entry);
    }
}

#[derive(Debug)]
struct Inner {
    name: &'static str,
    topic: String,
    namesrv: Arc<NameServer>,
    producer: Arc<Producer>,
    limits: TableLimits,
    state: Mutex<State>,
    /// Bumped after every applied pull.
    progress: watch::Sender<u64>,
}

/// A table in a compaction topic. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Table {
    inner: Arc<Inner>,
}

/// Room reserved for one write; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    table: Table,
    id: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.table.inner.state)
            .reserved
            .retain(|(id, _, _)| *id != self.id);
    }
}

/// Every readable queue of a route: (master broker address, queue id).
fn route_queues(route: &crate::rocketmq::TopicRoute) -> Vec<(Arc<str>, i32)> {
    let mut out = Vec::new();
    for (name, addr) in route.readable_masters() {
        let n = route
            .queues
            .iter()
            .find(|q| q.broker_name == name)
            .map_or(1, |q| q.read_queue_nums);
        for queue in 0..n {
            out.push((Arc::from(addr), i32::try_from(queue).unwrap_or(i32::MAX)));
        }
    }
    out
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Table {
    /// A table in `topic` (`name` is for logs and metrics). Call [`Table::run`] to read it.
    pub fn new(
        name: &'static str,
        topic: &str,
        namesrv: Arc<NameServer>,
        producer: Arc<Producer>,
        limits: TableLimits,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                topic: topic.to_owned(),
                namesrv,
                producer,
                limits,
                state: Mutex::new(State::default()),
                progress: watch::channel(0).0,
            }),
        }
    }

    /// The table's name.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The current entry of `key` (call [`Table::sync`] first to see other bridges' writes).
    pub fn get(&self, key: &str) -> Option<Entry> {
        lock(&self.inner.state)
            .entries
            .get(key)
            .filter(|e| !e.value.is_empty())
            .cloned()
    }

    /// Every entry whose key satisfies `wanted`.
    pub fn select(&self, mut wanted: impl FnMut(&str) -> bool) -> Vec<(String, Entry)> {
        lock(&self.inner.state)
            .entries
            .iter()
            .filter(|(k, e)| !e.value.is_empty() && wanted(k))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// Entries and bytes held now.
    pub fn usage(&self) -> (usize, usize) {
        let s = lock(&self.inner.state);
        (s.total.entries, s.total.bytes)
    }

    /// Checks that writing `value_len` bytes under `key` for `owner` keeps every limit,
    /// and holds that room until the returned reservation is dropped.
    pub fn reserve(
        &self,
        key: &str,
        value_len: usize,
        owner: Option<&str>,
    ) -> Result<Reservation, Quota> {
        let l = &self.inner.limits;
        let bytes = key.len() + value_len;
        let over = |limit: usize, value: usize| limit != 0 && value > limit;
        let mut s = lock(&self.inner.state);
        if over(l.entry_bytes, bytes) {
            return Err(Quota::EntryBytes);
        }
        // What the write replaces is given back.
        let (old_entries, old_bytes, old_owner) = match s.entries.get(key) {
            Some(e) if !e.value.is_empty() => (1, key.len() + e.value.len(), e.owner.clone()),
            _ => (0, 0, None),
        };
        let reserved_bytes: usize = s.reserved.iter().map(|(_, _, b)| b).sum();
        let entries = s.total.entries + s.reserved.len() + 1 - old_entries;
        if over(l.entries, entries) {
            return Err(Quota::Entries);
        }
        if over(
            l.bytes,
            (s.total.bytes + reserved_bytes + bytes).saturating_sub(old_bytes),
        ) {
            return Err(Quota::Bytes);
        }
        if let Some(owner) = owner {
            let mine = s.owners.get(owner);
            let same = old_owner.as_deref() == Some(owner);
            let (held_entries, held_bytes) = mine.map_or((0, 0), |u| (u.entries, u.bytes));
            let pending = s
                .reserved
                .iter()
                .filter(|(_, o, _)| o.as_deref() == Some(owner));
            let (pending_entries, pending_bytes) =
                pending.fold((0, 0), |(n, b), (_, _, x)| (n + 1, b + x));
            let entries = held_entries + pending_entries + 1 - usize::from(same) * old_entries;
            let bytes = (held_bytes + pending_bytes + bytes).saturating_sub(if same {
                old_bytes
            } else {
                0
            });
            if over(l.entries_per_owner, entries) {
                return Err(Quota::EntriesPerOwner);
            }
            if over(l.bytes_per_owner, bytes) {
                return Err(Quota::BytesPerOwner);
            }
        }
        let id = s.next_reservation;
        s.next_reservation += 1;
        s.reserved.push((id, owner.map(Arc::from), bytes));
        Ok(Reservation {
            table: self.clone(),
            id,
        })
    }

    /// Writes `value` under `key` (owned by `owner`); applied here once the broker stored it.
    pub async fn put(&self, key: &str, value: Bytes, owner: Option<&str>) -> Result<(), Error> {
        self.write(key, Some(value), owner).await
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.write(key, None, None).await
    }

    async fn write(
        &self,
        key: &str,
        value: Option<Bytes>,
        owner: Option<&str>,
    ) -> Result<(), Error> {
        let at = now_ms();
        let at_text = at.to_string();
        let mut props = vec![
            (KEYS, key),
            (STATE_OP, if value.is_some() { "put" } else { "del" }),
            (STATE_AT, at_text.as_str()),
        ];
        if let Some(owner) = owner {
            props.push((STATE_OWNER, owner));
        }
        let body = value
            .clone()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| Bytes::from_static(DELETED_BODY));
        let value = value.filter(|v| !v.is_empty());
        self.inner
            .producer
            .send(&self.inner.topic, &props, body, key)
            .await?;
        lock(&self.inner.state).apply(key, value, owner.map(Arc::from), at, None);
        Ok(())
    }

    /// Waits (at most `within`) until this bridge has read every queue of the table up to
    /// its end as of now: writes any bridge had acknowledged before the call are then seen.
    pub async fn sync(&self, within: Duration) -> Result<(), Error> {
        let client = self.inner.namesrv.client();
        let mut queues = lock(&self.inner.state).tailed.clone();
        if queues.is_empty() {
            // Not tailing yet (the bridge just started): the route says what to wait for.
            queues = route_queues(&self.inner.namesrv.topic_route(&self.inner.topic).await?);
        }
        let mut targets = Vec::new();
        for (addr, queue) in queues {
            let end = client
                .broker(&addr)
                .max_offset(&self.inner.topic, queue)
                .await?;
            if end > 0 {
                targets.push(((addr, queue), end));
            }
        }
        let mut progress = self.inner.progress.subscribe();
        let caught_up = |s: &State| {
            targets
                .iter()
                .all(|(q, end)| s.positions.get(q).is_some_and(|p| p >= end))
        };
        let wait = async {
            loop {
                if caught_up(&lock(&self.inner.state)) {
                    return;
                }
                if progress.changed().await.is_err() {
                    return;
                }
            }
        };
        let started = std::time::Instant::now();
        let waited = tokio::time::timeout(within, wait).await;
        debug!(table = self.inner.name, waited = ?started.elapsed(), "state table synced");
        waited.map_err(|_| {
            Error::Invalid(format!(
                "the {} table ({}) was not read to its end within {within:?}",
                self.inner.name, self.inner.topic
            ))
        })
    }

    /// Reads the table: one tail per queue of every readable broker, until `shutdown`.
    /// Brokers that join the topic's route are picked up within `route_refresh`.
    pub async fn run(
        self,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        route_refresh: Duration,
    ) {
        let mut started: Vec<(Arc<str>, i32)> = Vec::new();
        let mut failing = false;
        loop {
            match self.inner.namesrv.topic_route(&self.inner.topic).await {
                Ok(route) => {
                    failing = false;
                    for key in route_queues(&route) {
                        if !started.contains(&key) {
                            started.push(key.clone());
                            lock(&self.inner.state).tailed.push(key.clone());
                            tracker.spawn(self.clone().tail(key, shutdown.clone()));
                        }
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    warn!(table = self.inner.name, topic = %self.inner.topic, error = %e,
                        "state topic has no route (run `cloud-bridge init`); retrying");
                }
                Err(_) => {}
            }
            let pause = if started.is_empty() {
                Duration::from_secs(1)
            } else {
                route_refresh
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn tail(self, queue: (Arc<str>, i32), shutdown: CancellationToken) {
        let client = self.inner.namesrv.client().clone();
        let mut offset = 0i64;
        let mut backoff = Duration::from_millis(100);
        loop {
            let request = PullRequest {
                consumer_group: TAIL_GROUP,
                topic: &self.inner.topic,
                queue_id: queue.1,
                queue_offset: offset,
                max_msgs: PULL_BATCH,
                commit_offset: None,
                suspend: None,
                subscription: "*",
            }
            .long_poll(LONG_POLL);
            let broker = client
                .broker(&queue.0)
                .with_timeout(LONG_POLL + Duration::from_secs(5));
            let pulled = tokio::select! {
                r = broker.pull(&request) => r,
                _ = shutdown.cancelled() => return,
            };
            let next = match pulled {
                Ok(PullResult::Found {
                    messages,
                    next_offset,
                    ..
                }) => {
                    let mut s = lock(&self.inner.state);
                    for m in messages {
                        let Some(key) = m.property(KEYS) else {
                            continue;
                        };
                        let at = m
                            .property(STATE_AT)
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(m.store_timestamp);
                        // A copy: the body is a slice of the whole pull response, which
                        // an entry must not keep alive.
                        let value = (m.property(STATE_OP) != Some("del"))
                            .then(|| Bytes::copy_from_slice(&m.body));
                        let owner = m.property(STATE_OWNER).map(Arc::from);
                        let source = Source {
                            queue: queue.clone(),
                            offset: m.queue_offset,
                        };
                        s.apply(key, value, owner, at, Some(source));
                    }
                    Some(next_offset)
                }
                Ok(
                    PullResult::NoNewMsg { next_offset }
                    | PullResult::NoMatched { next_offset }
                    | PullResult::OffsetIllegal { next_offset },
                ) => Some(next_offset),
                Ok(PullResult::TopicNotExist) => None,
                Err(e) => {
                    debug!(table = self.inner.name, broker = %queue.0, error = %e, "state pull failed");
                    None
                }
            };
            match next {
                Some(next) => {
                    backoff = Duration::from_millis(100);
                    offset = next.max(offset);
                    lock(&self.inner.state)
                        .positions
                        .insert(queue.clone(), offset);
                    self.inner.progress.send_modify(|n| *n = n.wrapping_add(1));
                }
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// The bridge's tables.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Retained messages.
    pub retained: Table,
    /// Persistent sessions.
    pub sessions: Table,
    /// Wills.
    pub wills: Table,
    /// Leases of the wildcard filters bridges registered (`wildcards.rs`).
    pub wildcards: Table,
}

impl Tables {
    /// The tables of `config`, written through `producer`.
    pub fn new(
        config: &crate::config::Config,
        namesrv: Arc<NameServer>,
        producer: Arc<Producer>,
    ) -> Self {
        let t = &config.topics;
        let q = &config.quotas;
        let table = |name, topic: &str, limits| {
            Table::new(name, topic, namesrv.clone(), producer.clone(), limits)
        };
        Self {
            retained: table("retained", &t.retained_topic, TableLimits::retained(q)),
            sessions: table("sessions", &t.session_topic, TableLimits::sessions(q)),
            wills: table("wills", &t.will_topic, TableLimits::wills(q)),
            // Written by bridges only, for filters the wildcard quota already bounds.
            wildcards: table("wildcards", &t.wildcard_topic, TableLimits::default()),
        }
    }

    /// All four.
    pub fn all(&self) -> [&Table; 4] {
        [&self.retained, &self.sessions, &self.wills, &self.wildcards]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(q: i32, offset: i64) -> Option<Source> {
        Some(Source {
            queue: (Arc::from("b"), q),
            offset,
        })
    }

    #[test]
    fn later_offsets_win_in_a_queue_and_later_times_across_queues() {
        let mut s = State::default();
        s.apply("k", Some(Bytes::from_static(b"v2")), None, 5, src(0, 2));
        // An older record of the same queue, read after a newer one: ignored.
        s.apply("k", Some(Bytes::from_static(b"v1")), None, 9, src(0, 1));
        assert_eq!(&s.entries["k"].value[..], b"v2");
        // Another queue: the time decides.
        s.apply("k", Some(Bytes::from_static(b"old")), None, 4, src(1, 7));
        assert_eq!(&s.entries["k"].value[..], b"v2");
        s.apply("k", None, None, 6, src(1, 8));
        assert!(s.entries["k"].value.is_empty());
        assert_eq!((s.total.entries, s.total.bytes), (0, 0));
        // The deletion read again (a local write, then its record in the tail): no change.
        s.apply("j", Some(Bytes::from_static(b"x")), None, 1, None);
        s.apply("k", None, None, 7, None);
        s.apply("k", None, None, 7, src(1, 9));
        assert_eq!((s.total.entries, s.total.bytes), (1, 2));
        // A deletion stays, so an older put cannot bring the key back.
        s.apply("k", Some(Bytes::from_static(b"v1")), None, 5, src(0, 1));
        assert!(s.entries["k"].value.is_empty());
    }

    #[test]
    fn usage_follows_owners_and_replacements() {
        let mut s = State::default();
        let a: Option<Arc<str>> = Some(Arc::from("a"));
        s.apply("t/1", Some(Bytes::from_static(b"xx")), a.clone(), 1, None);
        s.apply("t/2", Some(Bytes::from_static(b"yyy")), a.clone(), 1, None);
        assert_eq!((s.total.entries, s.total.bytes), (2, 3 + 2 + 3 + 3));
        s.apply(
            "t/1",
            Some(Bytes::from_static(b"z")),
            Some(Arc::from("b")),
            2,
            None,
        );
        assert_eq!(s.owners["a"].entries, 1);
        assert_eq!(s.owners["b"].bytes, 4);
        assert_eq!(s.total.entries, 2);
    }
}
