//! In-memory routing: which clients exist (connected, or persistent and offline), what
//! they subscribed to, and the retained messages; and handing a message to a client.
//!
//! # Invariants
//! - One [`Client`] per client identifier; its `state` (a tokio mutex) serialises
//!   everything that delivers to it, so deliveries keep publish order per publisher and
//!   a resumed session's stored queue goes out before any newer message.
//! - Memory is bounded: a connected client's queue is a bounded channel
//!   (`limits.subscriber_queue` messages) with a byte budget (`subscriber_queue_bytes`,
//!   topic + payload, given back once the connection wrote the message); a QoS 1/2
//!   delivery waits up to `subscriber_wait_ms` for room in both (the publisher's store
//!   future waits, so its connection stops reading: the back-pressure reaches the
//!   socket), then a clean session misses it (counted as
//!   `dropped_subscriber_full`) and a persistent session gets it as a stored row,
//!   delivered when it next resumes. QoS 0 never waits: dropped at once when full.
//! - A persistent session holds at most `sessions.max_queued_messages` rows and
//!   `sessions.max_queued_bytes` (topic + payload) while its connection cannot take a
//!   message (offline, or its queue full); newer messages are then dropped (counted as
//!   `dropped_queue_full`), as the spec allows. The counts include its unacknowledged
//!   rows. QoS 0 messages are not queued offline. A row is stored only in room reserved
//!   in `broker.db` (`sessions.max_db_bytes`): without room, an offline session misses
//!   the message (counted as `dropped_db_full`), a connected one gets it without a row.
//! - Retained messages: at most `sessions.max_retained` topics and
//!   `sessions.max_retained_bytes` (topic + payload); a retained publish past either is
//!   not retained (counted as `retained_refused`), and is still delivered.
//! - Every QoS 1/2 message for a persistent session, connected or not, is a row in
//!   `broker.db` (`sessions_db.rs`), queued to the database thread before the message is handed
//!   to the connection and committed before the publish that produced it is
//!   acknowledged (the publish's future waits for the returned commit). The row goes
//!   when the client acknowledges it (PUBACK/PUBCOMP: the delivery's tag is the row id).
//!   A resumed (or taken-over) session gets its rows again, the ones that may have been
//!   sent with DUP. So a kill -9 loses nothing acknowledged to a publisher.
//! - MQTT 5 message expiry: the deadline travels with the delivery, the row and the
//!   retained message; expired messages are not delivered (the connection checks at
//!   write time and sends the remaining interval).
//!
//! Matching walks every client's subscriptions: the local broker of a gateway serves
//! tens of clients, not millions, and a trie would be more code than it saves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mqtt::broker::Delivery;
use mqtt::budget::{BudgetShare, StoreBudget};
use mqtt::packet::{Message, QoS};
use mqtt::topic;
use tokio::sync::mpsc;

use super::sessions_db::{Committed, SessionsDb, SubOptions};

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// Counters of messages the broker did not deliver.
#[derive(Debug, Default)]
pub struct Counters {
    /// A connected subscriber's queue stayed full for `subscriber_wait_ms` (or was full
    /// for a QoS 0 message).
    pub dropped_subscriber_full: AtomicU64,
    /// A disconnected persistent session's queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Messages delivered to local subscribers (handed to their connection).
    pub delivered: AtomicU64,
    /// An offline persistent session's message found no room in `broker.db`.
    pub dropped_db_full: AtomicU64,
    /// Retained publishes not retained: the retained table was full (count or bytes, or
    /// no room in `broker.db`).
    pub retained_refused: AtomicU64,
    /// CONNECTs refused because `sessions.max_sessions` sessions exist.
    pub sessions_refused: AtomicU64,
    /// Subscriptions refused: over `limits.max_subscriptions`, or a filter too long or
    /// too deep.
    pub subscriptions_refused: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterValues {
    /// See [`Counters::dropped_subscriber_full`].
    pub dropped_subscriber_full: u64,
    /// See [`Counters::dropped_queue_full`].
    pub dropped_queue_full: u64,
    /// See [`Counters::delivered`].
    pub delivered: u64,
    /// See [`Counters::dropped_db_full`].
    pub dropped_db_full: u64,
    /// See [`Counters::retained_refused`].
    pub retained_refused: u64,
    /// See [`Counters::sessions_refused`].
    pub sessions_refused: u64,
    /// See [`Counters::subscriptions_refused`].
    pub subscriptions_refused: u64,
    /// Retained messages held now, and their bytes.
    pub retained: (u64, u64),
}

/// Where a client's messages go right now.
#[derive(Debug, Default)]
pub(crate) struct ClientState {
    /// Kept in `broker.db` (session expiry > 0, or a stored session resumed by a
    /// connection with expiry 0: it ends when that connection closes).
    pub persistent: bool,
    /// The session expiry interval in force (seconds; capped), applied when the
    /// connection closes.
    pub expiry_secs: u32,
    /// While offline: when the session expires (Unix ms). A session past it is not
    /// resumed, even before the sweep deleted it.
    pub expires_at_ms: Option<i64>,
    /// The connection's queue, its byte budget and its generation, while connected.
    pub online: Option<Online>,
}

/// A connected client's queue.
#[derive(Debug)]
pub(crate) struct Online {
    /// Which connection of the client this is.
    pub generation: u64,
    pub tx: mpsc::Sender<Delivery>,
    /// Bytes (topic + payload) of the messages in `tx` and not yet written.
    pub bytes: StoreBudget,
}

impl Online {
    /// Room for `message` in the queue: at once (`wait` is `None`) or within `wait`.
    /// `Err(true)`: the connection is gone; `Err(false)`: no room in time.
    async fn room(
        &self,
        message: &Message,
        wait: Option<Duration>,
    ) -> Result<(mpsc::Permit<'_, Delivery>, BudgetShare), bool> {
        let size = message.topic.len() + message.payload.len();
        let Some(wait) = wait else {
            let share = self.bytes.try_take(size).ok_or(false)?;
            let slot = self
                .tx
                .try_reserve()
                .map_err(|e| matches!(e, mpsc::error::TrySendError::Closed(_)))?;
            return Ok((slot, share));
        };
        let both = async {
            let share = self.bytes.take(size).await;
            let slot = self.tx.reserve().await;
            (share, slot)
        };
        match tokio::time::timeout(wait, both).await {
            Ok((Some(share), Ok(slot))) => Ok((slot, share)),
            Ok((_, Err(_))) | Ok((None, _)) => Err(true),
            Err(_) => Err(false),
        }
    }
}

/// A QoS 1/2 message sent on a shared subscription to a session that ends with its
/// connection: given to another member of the group if the connection closes before
/// the client acknowledged it (4.8.2).
#[derive(Debug, Clone)]
pub(crate) struct SharedCopy {
    /// `$share/{group}/{filter}`.
    pub key: Arc<str>,
    pub message: Message,
    pub expires_ms: Option<i64>,
}

/// Where a message goes: a client, with the options it is delivered with.
#[derive(Debug)]
pub(crate) struct Target {
    pub client: Arc<Client>,
    /// Granted QoS (the highest of the matching subscriptions), retain-as-published.
    pub opts: SubOptions,
    /// Subscription identifiers of every matching subscription.
    pub ids: Vec<u32>,
    /// The shared subscription (`$share/...`) it was chosen for, if any.
    pub shared: Option<Arc<str>>,
}

/// `$share/{group}/{filter}` split into (group, filter); `None` for other filters or a
/// malformed one (empty group, group with a wildcard, no filter).
pub(crate) fn shared_parts(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, f) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || f.is_empty() {
        return None;
    }
    Some((group, f))
}

/// One client identifier's session.
#[derive(Debug)]
pub(crate) struct Client {
    pub id: Arc<str>,
    /// A connection is attached (mirrors `state.online`, readable without its lock).
    pub connected: std::sync::atomic::AtomicBool,
    /// Shared-subscription copies sent and not yet acknowledged, by tag (only for a
    /// session that ends with its connection; bounded by its queue and in-flight window).
    pub shared_inflight: std::sync::Mutex<HashMap<u64, SharedCopy>>,
    /// Topics this client may not receive (`[[acl]] deny`, substituted at CONNECT).
    pub deny: RwLock<Arc<[String]>>,
    pub subs: RwLock<HashMap<String, SubOptions>>,
    pub state: Arc<tokio::sync::Mutex<ClientState>>,
    /// Its rows in `broker.db` (unacknowledged QoS 1/2 messages of a persistent session).
    pub queued: AtomicUsize,
    /// Their bytes (topic + payload).
    pub queued_bytes: AtomicUsize,
    /// The bytes of its rows known here (queued, or read at resume), by row id: what an
    /// acknowledgement gives back.
    pub sizes: std::sync::Mutex<HashMap<u64, usize>>,
}

impl Client {
    pub fn new(id: &str) -> Arc<Self> {
        Arc::new(Self {
            id: Arc::from(id),
            connected: std::sync::atomic::AtomicBool::new(false),
            shared_inflight: std::sync::Mutex::default(),
            deny: RwLock::new(Arc::from(Vec::new())),
            subs: RwLock::default(),
            state: Arc::default(),
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            sizes: std::sync::Mutex::default(),
        })
    }

    /// The shared copies not yet acknowledged.
    pub fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SharedCopy>> {
        self.shared_inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the topics it may not receive.
    pub fn set_deny(&self, deny: Vec<String>) {
        *write(&self.deny) = Arc::from(deny);
    }

    fn sizes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, usize>> {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Row `tag` of `bytes` is stored for it.
    pub fn queued(&self, tag: u64, bytes: usize) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.sizes().insert(tag, bytes);
    }

    /// Row `tag` (read back at resume, `bytes`) may be acknowledged.
    pub fn known(&self, tag: u64, bytes: usize) {
        self.sizes().insert(tag, bytes);
    }

    /// Sets its row count and bytes (read from `broker.db`), forgetting the sizes known.
    pub fn resync(&self, rows: usize, bytes: usize) {
        self.queued.store(rows, Ordering::Relaxed);
        self.queued_bytes.store(bytes, Ordering::Relaxed);
        self.sizes().clear();
    }

    /// Row `tag` is gone (acknowledged or expired).
    pub fn unqueued(&self, tag: u64) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if let Some(bytes) = self.sizes().remove(&tag) {
            let _ = self
                .queued_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(bytes))
                });
        }
    }

    /// Adds or replaces a subscription; `true` if it replaced one.
    pub fn subscribe(&self, filter: &str, opts: SubOptions) -> bool {
        write(&self.subs).insert(filter.to_owned(), opts).is_some()
    }

    /// Its subscriptions other than `filter` (what one more would count against).
    pub fn subscription_count(&self, filter: &str) -> usize {
        let subs = read(&self.subs);
        subs.len() - usize::from(subs.contains_key(filter))
    }

    /// Removes a subscription; `false` if there was none.
    pub fn unsubscribe(&self, filter: &str) -> bool {
        write(&self.subs).remove(filter).is_some()
    }

    /// Drops every subscription.
    pub fn clear_subscriptions(&self) {
        write(&self.subs).clear();
    }
}

/// The routing table, shared by every connection.
#[derive(Debug)]
pub(crate) struct Router {
    clients: RwLock<HashMap<Arc<str>, Arc<Client>>>,
    retained: RwLock<Retained>,
    next_tag: AtomicU64,
    /// Round-robin position of each shared subscription (`$share/{group}/{filter}`);
    /// an entry per shared subscription that ever had a message (bounded by the
    /// subscriptions' bound).
    turns: std::sync::Mutex<HashMap<Arc<str>, usize>>,
    pub counters: Counters,
    pub db: SessionsDb,
    pub limits: RouterLimits,
}

/// The retained messages and their bytes (topic + payload).
#[derive(Debug, Default)]
struct Retained {
    messages: HashMap<String, (Message, Option<i64>)>,
    bytes: usize,
}

/// The router's bounds (from `[sessions]` and `[limits]`).
#[derive(Debug, Clone)]
pub(crate) struct RouterLimits {
    pub max_queued: usize,
    pub max_queued_bytes: usize,
    pub max_retained: usize,
    pub max_retained_bytes: usize,
    pub wait: Duration,
}

fn size(m: &Message) -> usize {
    m.topic.len() + m.payload.len()
}

impl Router {
    pub fn new(db: SessionsDb, limits: RouterLimits) -> Self {
        Self {
            clients: RwLock::default(),
            retained: RwLock::default(),
            next_tag: AtomicU64::new(1),
            turns: std::sync::Mutex::default(),
            counters: Counters::default(),
            db,
            limits,
        }
    }

    /// The client with this identifier, if it has a session.
    pub fn existing(&self, id: &str) -> Option<Arc<Client>> {
        read(&self.clients).get(id).cloned()
    }

    pub fn tag(&self) -> u64 {
        self.next_tag.fetch_add(1, Ordering::Relaxed)
    }

    pub fn counter_values(&self) -> CounterValues {
        let c = &self.counters;
        CounterValues {
            dropped_subscriber_full: c.dropped_subscriber_full.load(Ordering::Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped_db_full: c.dropped_db_full.load(Ordering::Relaxed),
            retained_refused: c.retained_refused.load(Ordering::Relaxed),
            sessions_refused: c.sessions_refused.load(Ordering::Relaxed),
            subscriptions_refused: c.subscriptions_refused.load(Ordering::Relaxed),
            retained: {
                let r = read(&self.retained);
                (r.messages.len() as u64, r.bytes as u64)
            },
        }
    }

    /// The client with this identifier, created if new.
    pub fn client(&self, id: &str) -> Arc<Client> {
        if let Some(c) = read(&self.clients).get(id) {
            return c.clone();
        }
        write(&self.clients)
            .entry(Arc::from(id))
            .or_insert_with(|| Client::new(id))
            .clone()
    }

    /// Forgets a client (its session ended).
    pub fn remove(&self, client: &Arc<Client>) {
        let mut m = write(&self.clients);
        if m.get(&client.id).is_some_and(|c| Arc::ptr_eq(c, client)) {
            m.remove(&client.id);
        }
    }

    /// Whether `client` is the one registered for its identifier.
    pub fn is_current(&self, client: &Arc<Client>) -> bool {
        read(&self.clients)
            .get(&client.id)
            .is_some_and(|c| Arc::ptr_eq(c, client))
    }

    /// Number of sessions (connected or persistent).
    pub fn len(&self) -> usize {
        read(&self.clients).len()
    }

    /// Starts tags (row ids) at `next`.
    pub fn start_tags_at(&self, next: u64) {
        self.next_tag.fetch_max(next.max(1), Ordering::Relaxed);
    }

    /// Sets or clears a retained message (expiring at `expires_ms`); `false` (counted)
    /// if the retained table is full, in topics or in bytes.
    pub fn set_retained(&self, message: &Message, expires_ms: Option<i64>) -> bool {
        let mut guard = write(&self.retained);
        let r = &mut *guard;
        let old = r.messages.get(&message.topic).map(|(m, _)| size(m));
        if message.payload.is_empty() {
            if r.messages.remove(&message.topic).is_some() {
                r.bytes -= old.unwrap_or(0);
            }
            return true;
        }
        let bytes = r.bytes - old.unwrap_or(0) + size(message);
        let full = old.is_none() && r.messages.len() >= self.limits.max_retained;
        if full || bytes > self.limits.max_retained_bytes {
            self.counters
                .retained_refused
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut m = message.clone();
        m.retain = true;
        r.messages.insert(message.topic.clone(), (m, expires_ms));
        r.bytes = bytes;
        true
    }

    /// Undoes [`Router::set_retained`] of `message` when it could not be stored.
    pub fn unset_retained(&self, message: &Message) {
        let mut r = write(&self.retained);
        if let Some((m, _)) = r.messages.remove(&message.topic) {
            r.bytes -= size(&m);
        }
    }

    /// Unexpired retained messages matching `filter`, with their expiry.
    pub fn retained_matching(&self, filter: &str, now_ms: i64) -> Vec<(Message, Option<i64>)> {
        read(&self.retained)
            .messages
            .values()
            .filter(|(m, e)| e.is_none_or(|e| e > now_ms) && topic::matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    /// Where a message on `topic` from `publisher` goes:
    /// - every client with a (non-shared) subscription matching it, once, at the highest
    ///   QoS of its matching subscriptions, with the identifiers of all of them
    ///   (3.3.4-2/3: one copy per client, as mosquitto with per-subscription copies is
    ///   also allowed; we send one);
    /// - for each shared subscription `$share/{group}/{filter}` matching it, one member:
    ///   the next connected one in turn (round robin, by client id), or, when none is
    ///   connected, the next member (a persistent session, which queues it).
    ///
    /// A client's `deny` topics are never delivered to it.
    pub fn matching(&self, topic: &str, publisher: &str) -> Vec<Target> {
        let clients = read(&self.clients);
        let mut out = Vec::new();
        let mut groups: HashMap<Arc<str>, Vec<(Arc<Client>, SubOptions)>> = HashMap::new();
        for c in clients.values() {
            if read(&c.deny).iter().any(|d| topic::matches(d, topic)) {
                continue;
            }
            let subs = read(&c.subs);
            let mut best: Option<SubOptions> = None;
            let mut ids = Vec::new();
            for (f, o) in subs.iter() {
                if let Some((_, filter)) = shared_parts(f) {
                    if topic::matches(filter, topic) {
                        groups
                            .entry(Arc::from(f.as_str()))
                            .or_default()
                            .push((c.clone(), *o));
                    }
                    continue;
                }
                if !topic::matches(f, topic) || (o.no_local && &*c.id == publisher) {
                    continue;
                }
                ids.extend(o.id);
                best = Some(match best {
                    Some(b) => SubOptions {
                        qos: b.qos.max(o.qos),
                        retain_as_published: b.retain_as_published || o.retain_as_published,
                        ..b
                    },
                    None => *o,
                });
            }
            if let Some(opts) = best {
                ids.sort_unstable();
                ids.dedup();
                out.push(Target {
                    client: c.clone(),
                    opts,
                    ids,
                    shared: None,
                });
            }
        }
        drop(clients);
        if groups.is_empty() {
            return out;
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, members) in groups {
            let Some((client, opts)) = self.pick(&key, members) else {
                continue;
            };
            out.push(Target {
                client,
                opts,
                ids: opts.id.into_iter().collect(),
                shared: Some(key),
            });
        }
        out
    }

    /// The member of shared subscription `key` whose turn it is: the next connected one
    /// (by client id, after the last one chosen), else the next one.
    fn pick(
        &self,
        key: &Arc<str>,
        mut members: Vec<(Arc<Client>, SubOptions)>,
    ) -> Option<(Arc<Client>, SubOptions)> {
        if members.is_empty() {
            return None;
        }
        members.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        let turn = turns.entry(key.clone()).or_insert(0);
        let n = members.len();
        let start = *turn % n;
        let pick = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| members[i].0.connected.load(Ordering::Relaxed))
            .unwrap_or(start);
        *turn = pick + 1;
        Some(members.swap_remove(pick))
    }

    /// A member of shared subscription `key` other than `except`, in turn.
    pub fn shared_member(&self, key: &Arc<str>, except: &str) -> Option<(Arc<Client>, SubOptions)> {
        let members: Vec<_> = read(&self.clients)
            .values()
            .filter(|c| &*c.id != except)
            .filter_map(|c| read(&c.subs).get(&**key).map(|o| (c.clone(), *o)))
            .collect();
        self.pick(key, members)
    }

    /// Hands `message` (QoS and retain flag already as delivered) to `client`: into its
    /// connection's queue, or its offline queue. Waits while the client's queue is full,
    /// up to the configured bound. For a persistent session's QoS 1/2 message, returns
    /// the commit of its row (to wait for before acknowledging the publish).
    pub async fn deliver(
        &self,
        client: &Client,
        message: Message,
        expires_ms: Option<i64>,
        ids: Vec<u32>,
        shared: Option<Arc<str>>,
    ) -> Option<Committed<()>> {
        let mut st = client.state.lock().await;
        self.deliver_locked(client, &mut st, message, expires_ms, ids, shared)
            .await
    }

    /// [`Router::deliver`] with the client's state already locked. `ids`: the
    /// Subscription Identifiers it matched; `shared`: the shared subscription it was
    /// chosen for (a copy to a session that ends with its connection is kept until
    /// acknowledged, for another member if the connection closes first).
    pub async fn deliver_locked(
        &self,
        client: &Client,
        st: &mut ClientState,
        message: Message,
        expires_ms: Option<i64>,
        ids: Vec<u32>,
        shared: Option<Arc<str>>,
    ) -> Option<Committed<()>> {
        let qos = message.qos;
        let keep = st.persistent && qos != QoS::AtMostOnce;
        if let Some(online) = &st.online {
            let wait = (qos != QoS::AtMostOnce).then_some(self.limits.wait);
            match online.room(&message, wait).await {
                Ok((p, share)) => {
                    // Without room in broker.db it goes out without a row.
                    let hold = keep.then(|| self.db.reserve(size(&message))).flatten();
                    let (tag, commit) = match (hold, shared) {
                        (Some(hold), _) => {
                            let tag = self.tag();
                            let commit = self
                                .queue(client, tag, &message, expires_ms, true, &ids, hold)
                                .await;
                            (tag, commit)
                        }
                        (None, Some(key)) if qos != QoS::AtMostOnce && !st.persistent => {
                            let tag = self.tag();
                            client.inflight().insert(
                                tag,
                                SharedCopy {
                                    key,
                                    message: message.clone(),
                                    expires_ms,
                                },
                            );
                            (tag, None)
                        }
                        (None, _) => (0, None),
                    };
                    p.send(Delivery {
                        message: Box::new(message),
                        dup: false,
                        tag,
                        expires_ms,
                        share: Some(share),
                        subscription_ids: ids,
                    });
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    return commit;
                }
                // A persistent session keeps it as a row for its next resume instead.
                Err(false) if !keep => {
                    self.counters
                        .dropped_subscriber_full
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(client = %client.id, "subscriber queue full; message dropped");
                    return None;
                }
                Err(false) => {
                    tracing::debug!(client = %client.id, "subscriber queue full; message stored");
                }
                // The connection is gone and its session not yet closed: a shared copy
                // for a session ending with it waits in `inflight` for another member
                // (the session's close hands it on); else queue offline.
                Err(true) if !keep && qos != QoS::AtMostOnce => {
                    if let Some(key) = shared {
                        let tag = self.tag();
                        client.inflight().insert(
                            tag,
                            SharedCopy {
                                key,
                                message,
                                expires_ms,
                            },
                        );
                    }
                    return None;
                }
                Err(true) => {}
            }
        }
        if !keep {
            return None;
        }
        let bytes = client.queued_bytes.load(Ordering::Relaxed) + size(&message);
        if client.queued.load(Ordering::Relaxed) >= self.limits.max_queued
            || bytes > self.limits.max_queued_bytes
        {
            self.counters
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let Some(hold) = self.db.reserve(size(&message)) else {
            self.counters
                .dropped_db_full
                .fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let tag = self.tag();
        self.queue(client, tag, &message, expires_ms, false, &ids, hold)
            .await
    }

    /// Queues row `tag` for `client`; its commit, or `None` if the database is closed.
    #[allow(clippy::too_many_arguments)]
    async fn queue(
        &self,
        client: &Client,
        tag: u64,
        message: &Message,
        expires_ms: Option<i64>,
        sent: bool,
        ids: &[u32],
        hold: super::sessions_db::Reserved,
    ) -> Option<Committed<()>> {
        match self
            .db
            .enqueue(&client.id, tag, message, expires_ms, sent, ids, hold)
            .await
        {
            Ok(commit) => {
                client.queued(tag, size(message));
                Some(commit)
            }
            Err(e) => {
                tracing::warn!(client = %client.id, error = %e, "cannot queue a message");
                None
            }
        }
    }

    /// Hands a resumed session's stored row to its connection (the row stays until
    /// acknowledged); `false` if the connection's queue stayed full or is gone.
    pub async fn redeliver(&self, st: &ClientState, q: super::sessions_db::Queued) -> bool {
        let Some(online) = &st.online else {
            return false;
        };
        match online.room(&q.message, Some(self.limits.wait)).await {
            Ok((p, share)) => {
                p.send(Delivery {
                    message: Box::new(q.message),
                    dup: q.sent,
                    tag: q.id,
                    expires_ms: q.expires_ms,
                    share: Some(share),
                    subscription_ids: q.subscription_ids,
                });
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }
}
