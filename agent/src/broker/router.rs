//! In-memory routing: which clients exist (connected, or persistent and offline), what
//! they subscribed to, and the retained messages; and handing a message to a client.
//!
//! # Invariants
//! - One [`Client`] per client identifier; its `state` (a tokio mutex) serialises
//!   everything that delivers to it, so deliveries keep publish order per publisher and
//!   a resumed session's stored queue goes out before any newer message.
//! - Memory is bounded: a connected client's queue is a bounded channel
//!   (`limits.subscriber_queue`); a QoS 1/2 delivery waits up to `subscriber_wait_ms`
//!   for room (the publisher's store future waits, so its connection stops reading: the
//!   back-pressure reaches the socket), then the subscriber misses it (counted as
//!   `dropped_subscriber_full`). QoS 0 never waits: dropped at once when full.
//! - A disconnected persistent session's queue is in SQLite, at most
//!   `sessions.max_queued_messages` rows; newer messages are dropped (counted as
//!   `dropped_queue_full`), as the spec allows. QoS 0 messages are not queued offline.
//! - Unacknowledged QoS 1/2 deliveries to a persistent session are remembered
//!   (`inflight`, bounded by the channel plus the receive maximum) and go back to its
//!   offline queue when the connection ends, or are re-sent (DUP) to a connection that
//!   takes the session over.
//!
//! Matching walks every client's subscriptions: the local broker of a gateway serves
//! tens of clients, not millions, and a trie would be more code than it saves.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mqtt::broker::Delivery;
use mqtt::packet::{Message, QoS};
use mqtt::topic;
use tokio::sync::mpsc;

use super::store::{BrokerStore, SubOptions};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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
}

/// Where a client's messages go right now.
#[derive(Debug, Default)]
pub(crate) struct ClientState {
    /// Kept across disconnects (session expiry > 0).
    pub persistent: bool,
    /// The connection's queue and its generation, while connected.
    pub online: Option<(u64, mpsc::Sender<Delivery>)>,
    /// Rows in the SQLite offline queue.
    pub queued: usize,
}

/// One client identifier's session.
#[derive(Debug)]
pub(crate) struct Client {
    pub id: Arc<str>,
    pub subs: RwLock<HashMap<String, SubOptions>>,
    pub state: Arc<tokio::sync::Mutex<ClientState>>,
    /// Unacknowledged QoS 1/2 deliveries of a persistent session, by tag.
    pub inflight: Mutex<BTreeMap<u64, Message>>,
}

impl Client {
    pub fn new(id: &str) -> Arc<Self> {
        Arc::new(Self {
            id: Arc::from(id),
            subs: RwLock::default(),
            state: Arc::default(),
            inflight: Mutex::default(),
        })
    }

    /// The client acknowledged delivery `tag`.
    pub fn acked(&self, tag: u64) {
        lock(&self.inflight).remove(&tag);
    }

    /// Adds or replaces a subscription; `true` if it replaced one.
    pub fn subscribe(&self, filter: &str, opts: SubOptions) -> bool {
        write(&self.subs).insert(filter.to_owned(), opts).is_some()
    }

    /// Removes a subscription; `false` if there was none.
    pub fn unsubscribe(&self, filter: &str) -> bool {
        write(&self.subs).remove(filter).is_some()
    }

    /// Drops every subscription.
    pub fn clear_subscriptions(&self) {
        write(&self.subs).clear();
    }

    /// Takes the unacknowledged deliveries, oldest first.
    pub fn take_inflight(&self) -> Vec<(u64, Message)> {
        std::mem::take(&mut *lock(&self.inflight))
            .into_iter()
            .collect()
    }
}

/// The routing table, shared by every connection.
#[derive(Debug)]
pub(crate) struct Router {
    clients: RwLock<HashMap<Arc<str>, Arc<Client>>>,
    retained: RwLock<HashMap<String, Message>>,
    next_tag: AtomicU64,
    pub counters: Counters,
    pub store: BrokerStore,
    pub max_queued: usize,
    pub max_retained: usize,
    pub wait: Duration,
}

impl Router {
    pub fn new(store: BrokerStore, max_queued: usize, max_retained: usize, wait: Duration) -> Self {
        Self {
            clients: RwLock::default(),
            retained: RwLock::default(),
            next_tag: AtomicU64::new(1),
            counters: Counters::default(),
            store,
            max_queued,
            max_retained,
            wait,
        }
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

    /// Sets or clears a retained message; `false` if the retained table is full.
    pub fn set_retained(&self, message: &Message) -> bool {
        let mut r = write(&self.retained);
        if message.payload.is_empty() {
            r.remove(&message.topic);
            return true;
        }
        if r.len() >= self.max_retained && !r.contains_key(&message.topic) {
            return false;
        }
        let mut m = message.clone();
        m.retain = true;
        r.insert(message.topic.clone(), m);
        true
    }

    /// Retained messages matching `filter`.
    pub fn retained_matching(&self, filter: &str) -> Vec<Message> {
        read(&self.retained)
            .values()
            .filter(|m| topic::matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    /// Every client with a subscription matching `topic`, with the subscription that
    /// grants the highest QoS (one delivery per client, as MQTT allows).
    pub fn matching(&self, topic: &str, publisher: &str) -> Vec<(Arc<Client>, SubOptions)> {
        let clients = read(&self.clients);
        let mut out = Vec::new();
        for c in clients.values() {
            let subs = read(&c.subs);
            let best = subs
                .iter()
                .filter(|(f, o)| topic::matches(f, topic) && !(o.no_local && &*c.id == publisher))
                .map(|(_, o)| *o)
                .max_by_key(|o| o.qos);
            if let Some(o) = best {
                out.push((c.clone(), o));
            }
        }
        out
    }

    /// Hands `message` (QoS and retain flag already as delivered) to `client`: into its
    /// connection's queue, or its offline queue. Waits while the client's queue is full,
    /// up to the configured bound.
    pub async fn deliver(&self, client: &Client, message: Message) {
        let mut st = client.state.lock().await;
        self.deliver_locked(client, &mut st, message, false).await;
    }

    pub async fn deliver_locked(
        &self,
        client: &Client,
        st: &mut ClientState,
        message: Message,
        dup: bool,
    ) {
        let qos = message.qos;
        if let Some((_, tx)) = &st.online {
            let tag = self.tag();
            let permit = if qos == QoS::AtMostOnce {
                tx.try_reserve()
                    .map_err(|e| matches!(e, mpsc::error::TrySendError::Closed(_)))
            } else {
                match tokio::time::timeout(self.wait, tx.reserve()).await {
                    Ok(Ok(p)) => Ok(p),
                    Ok(Err(_)) => Err(true),
                    Err(_) => Err(false),
                }
            };
            match permit {
                Ok(p) => {
                    if st.persistent && qos != QoS::AtMostOnce {
                        lock(&client.inflight).insert(tag, message.clone());
                    }
                    p.send(Delivery {
                        message: Box::new(message),
                        dup,
                        tag,
                    });
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(false) => {
                    self.counters
                        .dropped_subscriber_full
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(client = %client.id, "subscriber queue full; message dropped");
                    return;
                }
                // The connection is gone and its session not yet closed: queue offline.
                Err(true) => {}
            }
        }
        if !st.persistent || qos == QoS::AtMostOnce {
            return;
        }
        if st.queued >= self.max_queued {
            self.counters
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.store.enqueue(&client.id, vec![message]).await {
            Ok(()) => st.queued += 1,
            Err(e) => tracing::warn!(client = %client.id, error = %e, "cannot queue a message"),
        }
    }
}
