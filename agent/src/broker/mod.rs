//! The local MQTT broker: the storage backend the shared `mqtt` crate's connection state
//! machine runs on in the agent.
//!
//! # Why not rumqttd
//! The design card named rumqttd; measured here (0.20) it acknowledges a publish before
//! an embedder sees it, refuses keepalive 0, forwards at the subscription's QoS, ignores
//! noLocal, keeps nothing across restarts, has no back-pressure (GiB of RSS under a
//! burst) and cannot be stopped. So the broker is the workspace's own `mqtt` crate (one
//! implementation of MQTT sessions for agent and bridge, on rumqttc's maintained codec),
//! with this module as its agent backend. It is still in the benchmark, side by side.
//!
//! # What a publish does (`Session::publish`'s future, which the connection awaits
//! before PUBACK/PUBREC)
//! 1. If its topic matches an `[uplink] topics` filter, it is queued to the journal.
//! 2. A retained publish updates the retained table (memory + `broker.db`, committed).
//! 3. It is delivered to every matching local subscription (`router.rs`), at
//!    min(publish QoS, granted QoS), noLocal honoured, the retain flag cleared unless
//!    retain-as-published — without waiting for the journal's commit (MQTT allows
//!    forwarding before the publisher's ack; only the ack must wait), so local latency
//!    does not include the fsync. A QoS 1/2 copy for a persistent session is a
//!    `broker.db` row queued before it is handed to the connection.
//! 4. The future completes once the journal commit and every `broker.db` row of step 3
//!    are committed. A journal refusal (quota, disk) is the publish's refusal: MQTT 5
//!    PUBACK/PUBREC 0x97 (or 0x80 for an I/O failure), under 3.1.1 the connection is
//!    closed unacknowledged. Local subscribers may have received such a refused message
//!    (the publisher, unacknowledged, may send it again: at-least-once either way).
//!
//! Publishes of one connection are ordered: `Session::publish` queues them in call order
//! to the session's pipeline task, which takes every publish already queued (a burst,
//! up to `limits.publish_pipeline`), submits the burst's uplink messages to the journal
//! as one command (one reply for the burst, and they share one fsync), does steps 2 and
//! 3 in order, and answers the burst once its commits are known.
//!
//! # Message expiry (MQTT 5)
//! A message's expiry deadline is fixed when the broker receives it and travels with
//! its deliveries, its `broker.db` row and its retained copy. Expired messages are not
//! delivered (checked when the connection writes them, and when a session resumes);
//! the others go out with the interval reduced by the time they waited.
//!
//! # Sessions
//! Session expiry > 0 (3.1.1: clean session false; capped by
//! `sessions.max_session_expiry_secs`) makes a session persistent: its subscriptions and
//! every QoS 1/2 message for it not yet acknowledged by the client (connected or not)
//! are in `broker.db` (`sessions_db.rs`), committed before the publish is acknowledged and
//! deleted when the client acknowledges them, so they survive a restart and a kill -9.
//! An MQTT 5 DISCONNECT may change the session expiry (0 ends the session at once).
//! A session resumed (Clean Start 0) by a CONNECT with expiry 0 gets its stored messages
//! and ends when that connection closes. Expired sessions are deleted by a sweep every
//! minute; one past its expiry is never resumed, even before the sweep (the deadline
//! is also kept in memory).
//!
//! # Shared subscriptions (`$share/{group}/{filter}`, 4.8.2)
//! Each message matching a shared subscription goes to one member of its group: the
//! next connected member in turn (round robin by client id); when none is connected, the
//! next member in turn, whose persistent session queues it (as mosquitto queues to
//! offline persistent sessions). A QoS 1/2 copy sent to a session that ends with its
//! connection goes to another member if that connection closes unacknowledged; a
//! persistent member keeps it for its next connection (4.8.2: "MAY wait for the Client
//! to reconnect"). Retained messages are not sent on a shared subscription (3.8.4).
//!
//! # Subscription Identifiers (3.3.4-3/4)
//! Kept with the subscription (memory and `broker.db`); a delivery carries the ids of
//! every subscription of the client it matched (one copy per client, at the highest
//! granted QoS), also from the offline queue and for retained messages sent on
//! subscribe.

mod config;
mod router;
mod session;
pub mod sessions_db;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
pub(crate) use mqtt::broker::now_ms;
use mqtt::broker::{Accepted, Broker, Peer, Refusal};
use mqtt::packet::{Connect, Message, Reason};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{SessionsConfig, Settings};
pub use router::CounterValues;
pub use session::LocalSession;
pub use sessions_db::{SessionsDb, Snapshot};

use crate::acl::AclRule;
use crate::auth::Authenticator;
use crate::error::Error;
use crate::journal::{Journal, NewEntry, Qos};
use mqtt::budget::StoreBudget;
use router::{Online, Router, RouterLimits};

/// The agent's broker backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalBroker {
    core: Arc<Core>,
}

#[derive(Debug)]
pub(crate) struct Core {
    router: Router,
    journal: Journal,
    uplink: Vec<String>,
    /// Local -> cloud topic names, to check the cloud name before journaling.
    map: crate::topic_map::TopicMap,
    /// See [`Core::is_uplink`].
    uplink_refused: AtomicU64,
    auth: Authenticator,
    /// `[[acl]]` rules (`crate::acl`).
    acl: Vec<AclRule>,
    max_expiry: u32,
    max_sessions: usize,
    /// Subscription bounds: per client, filter bytes, filter levels.
    pub(crate) subscriptions: SubscriptionLimits,
    subscriber_queue: usize,
    subscriber_queue_bytes: usize,
    pipeline: usize,
    tracker: TaskTracker,
    generation: AtomicU64,
}

/// Bounds of a client's subscriptions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubscriptionLimits {
    pub per_client: usize,
    pub filter_length: usize,
    pub filter_depth: usize,
}

/// When `m` (received now) expires, Unix ms; `None`: never.
pub(crate) fn expiry_deadline(m: &Message) -> Option<i64> {
    m.properties
        .message_expiry_interval
        .map(|s| now_ms().saturating_add(i64::from(s) * 1000))
}

/// What routing a message did: the ack's reason, and the `broker.db` rows to wait for.
pub(crate) struct Routed {
    reason: Reason,
    commits: Vec<sessions_db::Committed<()>>,
    /// Whether some session got a copy (its connection may have a write to do).
    delivered: bool,
}

impl Routed {
    /// Waits until every row is committed; the reason for the publisher's ack.
    pub(crate) async fn finish(self) -> Result<Reason, Refusal> {
        for c in self.commits {
            sessions_db::committed(c).await.map_err(|e| refusal(&e))?;
        }
        Ok(self.reason)
    }
}

/// The refusal a journal or database error becomes.
fn refusal(e: &Error) -> Refusal {
    let reason = if e.is_quota_exceeded() {
        Reason::QuotaExceeded
    } else {
        Reason::UnspecifiedError
    };
    Refusal::new(reason, e.to_string())
}

impl LocalBroker {
    /// A broker configured by `settings` over `journal` and `db`, restoring the
    /// persistent sessions and retained messages of `snapshot`. Tasks it starts (session
    /// pipelines, retained deliveries) run in `tracker`.
    pub fn new(
        settings: Settings,
        journal: Journal,
        db: SessionsDb,
        snapshot: Snapshot,
        tracker: TaskTracker,
    ) -> Self {
        let router = Router::new(
            db,
            RouterLimits {
                max_queued: settings.sessions.max_queued_messages,
                max_queued_bytes: settings.sessions.max_queued_bytes,
                max_retained: settings.sessions.max_retained,
                max_retained_bytes: settings.sessions.max_retained_bytes,
                wait: settings.subscriber_wait,
            },
        );
        router.start_tags_at(snapshot.next_tag);
        for (m, expires_ms) in &snapshot.retained {
            router.set_retained(m, *expires_ms);
        }
        let now = now_ms();
        for s in snapshot.sessions {
            let c = router.client(&s.client_id);
            c.resync(s.queued, s.queued_bytes);
            if let Ok(mut st) = c.state.try_lock() {
                st.persistent = true;
                st.expiry_secs = s.expiry_secs;
                let since = s.disconnected_ms.unwrap_or(now);
                st.expires_at_ms =
                    Some(since.saturating_add(i64::from(s.expiry_secs).saturating_mul(1000)));
            }
            if let Ok(mut subs) = c.subs.write() {
                subs.extend(s.subscriptions);
            }
        }
        Self {
            core: Arc::new(Core {
                router,
                journal,
                uplink: settings.uplink_topics,
                map: settings.topic_map,
                uplink_refused: AtomicU64::new(0),
                auth: Authenticator::new(&settings.auth),
                acl: settings.acl,
                max_expiry: settings.sessions.max_session_expiry_secs,
                max_sessions: settings.sessions.max_sessions,
                subscriptions: SubscriptionLimits {
                    per_client: settings.max_subscriptions,
                    filter_length: settings.max_filter_length,
                    filter_depth: settings.max_filter_depth,
                },
                subscriber_queue: settings.subscriber_queue,
                subscriber_queue_bytes: settings.subscriber_queue_bytes,
                pipeline: settings.publish_pipeline,
                tracker,
                generation: AtomicU64::new(1),
            }),
        }
    }

    /// Uplink messages not journaled because their cloud topic is refused
    /// (`mqtt::cloud_topic`).
    pub fn uplink_refused(&self) -> u64 {
        self.core.uplink_refused()
    }

    /// Messages the broker did not deliver, how many it did, and what it refused.
    pub fn counters(&self) -> CounterValues {
        self.core.router.counter_values()
    }

    /// CONNECTs refused because every password check slot stayed busy.
    pub fn auth_busy(&self) -> u64 {
        self.core.auth.busy_refusals()
    }

    /// Bytes of content in `broker.db` as of its last commit.
    pub fn db_bytes(&self) -> u64 {
        self.core.router.db.used_bytes()
    }

    /// Number of sessions (connected, or persistent and offline).
    pub fn sessions(&self) -> usize {
        self.core.router.len()
    }

    /// Publishes `message` from inside the agent (sensors, the downlink) as if client
    /// `publisher` had sent it: journal (only when `journal` is true and the topic is an
    /// uplink topic), retained table, then every matching local subscription. Returns
    /// once the message is committed to the journal (if journaled) and handed to every
    /// subscriber's queue, its copies for persistent sessions committed to `broker.db`
    /// — the point where the caller may consider it delivered.
    /// Downlink messages pass `journal = false`, so they never loop back to the cloud.
    pub async fn publish(
        &self,
        publisher: &str,
        message: Message,
        journal: bool,
    ) -> Result<Reason, Refusal> {
        if journal {
            self.core.ingest(publisher, message).await
        } else {
            let expires_ms = expiry_deadline(&message);
            self.core
                .route(publisher, message, expires_ms, false)
                .await?
                .finish()
                .await
        }
    }

    /// Deletes expired persistent sessions every `every` until `cancel` fires.
    pub async fn run_session_expiry(&self, every: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.core.router.db.expire(now_ms()).await {
                Ok(ids) => {
                    for id in ids {
                        let c = self.core.router.client(&id);
                        let mut st = c.state.lock().await;
                        if st.online.is_none() {
                            st.persistent = false;
                            c.resync(0, 0);
                            c.clear_subscriptions();
                            self.core.router.remove(&c);
                            tracing::info!(client = %id, "session expired");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "session expiry sweep failed"),
            }
        }
    }
}

impl Core {
    /// Whether a message on `topic` goes to the journal: it matches an `[uplink] topics`
    /// filter and its cloud topic is one RocketMQ can carry (`mqtt::cloud_topic`: a device
    /// must not smuggle a `,` or `%` into the cloud's queue names). A refused one is still
    /// delivered locally; it is counted (`dropped_total{reason="cloud_topic_refused"}`)
    /// and logged.
    fn is_uplink(&self, topic: &str) -> bool {
        if !self.uplink.iter().any(|f| mqtt::topic::matches(f, topic)) {
            return false;
        }
        match self.map.to_cloud(topic) {
            Err(crate::topic_map::Unsendable::Refused(e)) => {
                let n = self.uplink_refused.fetch_add(1, Ordering::Relaxed) + 1;
                // Logged at 1, 2, 4, 8, ...: a device repeating it cannot flood the log.
                if n.is_power_of_two() {
                    tracing::warn!(topic, error = %e, refused = n, "not sent to the cloud: its cloud topic is refused");
                }
                false
            }
            // No map rule: the uplink removes it unsent and counts it (`unmapped`).
            Err(crate::topic_map::Unsendable::NoRule) | Ok(_) => true,
        }
    }

    /// Uplink messages not journaled because their cloud topic is refused.
    pub(crate) fn uplink_refused(&self) -> u64 {
        self.uplink_refused.load(Ordering::Relaxed)
    }

    fn journal_entry(m: &Message) -> NewEntry {
        NewEntry {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: Qos::from_u8(m.qos.level()).unwrap_or(Qos::AtMostOnce),
            retain: m.retain,
            user_properties: m.properties.user_properties.clone(),
            message_expiry: m
                .properties
                .message_expiry_interval
                .map(|s| Duration::from_secs(u64::from(s))),
            priority: None,
        }
    }

    /// Publishes on behalf of `publisher` (used for wills): journal, retain, deliver.
    async fn ingest(&self, publisher: &str, message: Message) -> Result<Reason, Refusal> {
        let expires_ms = expiry_deadline(&message);
        let uplinked = self.is_uplink(&message.topic);
        if uplinked {
            self.journal
                .append(Self::journal_entry(&message))
                .await
                .map_err(|e| refusal(&e))?;
        }
        self.route(publisher, message, expires_ms, uplinked)
            .await?
            .finish()
            .await
    }

    /// Steps 2 and 3 of a publish (see the module doc): retain, then hand to every
    /// matching subscription. The returned rows must be committed before the ack.
    async fn route(
        &self,
        publisher: &str,
        message: Message,
        expires_ms: Option<i64>,
        uplinked: bool,
    ) -> Result<Routed, Refusal> {
        if message.retain && self.router.set_retained(&message, expires_ms) {
            let keep = (!message.payload.is_empty()).then(|| (message.clone(), expires_ms));
            let hold = match &keep {
                None => None,
                Some((m, _)) => match self.router.db.reserve(m.topic.len() + m.payload.len()) {
                    Some(h) => Some(h),
                    None => {
                        // No room in broker.db: not retained (counted), still delivered.
                        self.router.unset_retained(&message);
                        self.router
                            .counters
                            .retained_refused
                            .fetch_add(1, Ordering::Relaxed);
                        return self
                            .route_only(publisher, message, expires_ms, uplinked)
                            .await;
                    }
                },
            };
            if let Err(e) = self.router.db.retain(&message.topic, keep, hold).await {
                return Err(refusal(&e));
            }
        }
        self.route_only(publisher, message, expires_ms, uplinked)
            .await
    }

    /// Step 3 of a publish: hand to every matching subscription.
    async fn route_only(
        &self,
        publisher: &str,
        message: Message,
        expires_ms: Option<i64>,
        uplinked: bool,
    ) -> Result<Routed, Refusal> {
        let targets = self.router.matching(&message.topic, publisher);
        let delivered = !targets.is_empty();
        let mut commits = Vec::new();
        let last = targets.len().saturating_sub(1);
        let mut message = Some(message);
        for (i, t) in targets.into_iter().enumerate() {
            let (client, opts) = (t.client, t.opts);
            let retain = message.as_ref().is_some_and(|m| m.retain);
            // The last target takes the message itself: one clone fewer.
            let mut m = if i == last {
                message.take()
            } else {
                message.clone()
            }
            .ok_or_else(|| Refusal::new(Reason::UnspecifiedError, "message routed twice"))?;
            m.qos = m.qos.min(opts.qos);
            m.retain = retain && opts.retain_as_published;
            if let Some(c) = self
                .router
                .deliver(&client, m, expires_ms, t.ids, t.shared)
                .await
            {
                commits.push(c);
            }
        }
        let reason = if uplinked || delivered {
            Reason::Success
        } else {
            Reason::NoMatchingSubscribers
        };
        Ok(Routed {
            reason,
            commits,
            delivered,
        })
    }

    /// Sends a shared-subscription copy its member left unacknowledged (its session
    /// ended) to another member of the group (4.8.2); dropped if none is left or it
    /// expired.
    pub(crate) async fn reshare(&self, copy: router::SharedCopy, from: &str) {
        if copy.expires_ms.is_some_and(|e| e <= now_ms()) {
            return;
        }
        let Some((client, opts)) = self.router.shared_member(&copy.key, from) else {
            tracing::debug!(key = %copy.key, "no other member for an unacknowledged shared message");
            return;
        };
        let mut m = copy.message;
        m.qos = m.qos.min(opts.qos);
        let ids = opts.id.into_iter().collect();
        if let Some(c) = self
            .router
            .deliver(&client, m, copy.expires_ms, ids, Some(copy.key))
            .await
            && let Err(e) = sessions_db::committed(c).await
        {
            tracing::warn!(client = %client.id, error = %e, "cannot store a shared message");
        }
    }

    async fn connect(
        self: Arc<Self>,
        connect: Connect,
        peer: Peer,
    ) -> Result<Accepted<LocalSession>, Refusal> {
        self.auth.authenticate(&connect, &peer).await?;
        let grants = crate::acl::Grants::of(
            &self.acl,
            &crate::acl::Identity {
                client_id: connect.client_id.clone(),
                username: peer.tls_identity.clone().or(connect.username.clone()),
            },
        );
        if let Some(will) = &connect.will
            && !grants.allows(crate::acl::Access::Publish, &will.message.topic)
        {
            // As mosquitto: a will the client may not publish refuses the CONNECT.
            return Err(Refusal::new(
                Reason::NotAuthorized,
                "the will's topic is not allowed by [[acl]]",
            ));
        }
        let id = connect.client_id.as_str();
        if self.router.existing(id).is_none() && self.router.len() >= self.max_sessions {
            self.router
                .counters
                .sessions_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::new(
                Reason::QuotaExceeded,
                "too many sessions (sessions.max_sessions)",
            ));
        }
        let store_failed = |e: Error| Refusal::new(Reason::ServerUnavailable, e.to_string());
        // The client may be removed between lookup and lock (its old session closed): retry.
        let (client, mut st) = loop {
            let client = self.router.client(id);
            let st = client.state.clone().lock_owned().await;
            if self.router.is_current(&client) {
                break (client, st);
            }
        };
        // An offline session past its expiry is gone, whether or not the sweep
        // (`run_session_expiry`) deleted it yet.
        let now = now_ms();
        if st.online.is_none() && st.persistent && st.expires_at_ms.is_some_and(|t| t <= now) {
            self.router
                .db
                .delete_session(id)
                .await
                .map_err(store_failed)?;
            st.persistent = false;
            client.clear_subscriptions();
            client.resync(0, 0);
            tracing::info!(client = %id, "session expired");
        }
        let existed = st.persistent || st.online.is_some();
        let was_persistent = st.persistent;
        let expiry = connect.session_expiry_interval.min(self.max_expiry);
        if connect.clean_start {
            if was_persistent {
                self.router
                    .db
                    .delete_session(id)
                    .await
                    .map_err(store_failed)?;
            }
            client.clear_subscriptions();
            client.resync(0, 0);
        }
        // A stored session resumed with expiry 0 still delivers what it holds; it ends
        // when this connection closes (`LocalSession::closed`).
        st.persistent = expiry > 0 || (was_persistent && !connect.clean_start);
        st.expiry_secs = expiry;
        st.expires_at_ms = None;
        if st.persistent {
            self.router
                .db
                .save_session(id, expiry)
                .await
                .map_err(store_failed)?;
        }
        client.set_deny(grants.deny());
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.subscriber_queue);
        st.online = Some(Online {
            generation,
            tx,
            bytes: StoreBudget::new(self.subscriber_queue_bytes),
        });
        client.connected.store(true, Ordering::Relaxed);
        // The session's stored messages (unacknowledged ones of an earlier or taken-over
        // connection, then what was queued offline) go out before anything newer: the
        // task holds the client's lock until done. They stay stored until acknowledged.
        // Read whenever the session is persistent: `queued` is a bound, not an index
        // (acks of a taken-over connection may have made it low); resynced here.
        let resume = st.persistent;
        let core = self.clone();
        let c = client.clone();
        self.tracker.spawn(async move {
            if !resume {
                return;
            }
            match core.router.db.queue_totals(&c.id).await {
                Ok((rows, bytes)) => c.resync(rows, bytes),
                Err(e) => {
                    tracing::warn!(client = %c.id, error = %e, "cannot read the stored queue");
                    return;
                }
            }
            // Page by page (`sessions_db::PAGE_ROWS`, `PAGE_BYTES`): memory stays bounded
            // whatever the queue's size.
            let mut after = 0;
            'pages: loop {
                let page = match core.router.db.read_queue_page(&c.id, after).await {
                    Ok(page) if page.is_empty() => break,
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(client = %c.id, error = %e, "cannot read the stored queue");
                        break;
                    }
                };
                let now = now_ms();
                for q in page {
                    after = q.id;
                    c.known(q.id, q.message.topic.len() + q.message.payload.len());
                    if q.expires_ms.is_some_and(|e| e <= now) {
                        core.router.db.acked(q.id);
                        c.unqueued(q.id);
                        continue;
                    }
                    if !core.router.redeliver(&st, q).await {
                        // Full or gone: the rest stays stored for the next connection.
                        break 'pages;
                    }
                }
            }
            drop(st);
        });
        let session =
            LocalSession::start(self.clone(), client, generation, grants, connect.version);
        Ok(Accepted {
            session,
            session_present: existed && !connect.clean_start,
            client_id: connect.client_id.clone(),
            deliveries: Some(rx),
        })
    }
}

impl Broker for LocalBroker {
    type Session = LocalSession;

    fn connect(
        &self,
        connect: &Connect,
        peer: &Peer,
    ) -> BoxFuture<'static, Result<Accepted<LocalSession>, Refusal>> {
        Box::pin(self.core.clone().connect(connect.clone(), peer.clone()))
    }

    fn publish_will(&self, client_id: &str, message: Message) -> BoxFuture<'static, ()> {
        let core = self.core.clone();
        let id = client_id.to_owned();
        Box::pin(async move {
            if let Err(r) = core.ingest(&id, message).await {
                tracing::warn!(client = %id, refusal = %r, "delayed will not published");
            }
        })
    }
}
