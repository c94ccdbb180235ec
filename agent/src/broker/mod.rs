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
//! 1. If its topic matches an `[uplink] topics` filter, it is appended to the journal and
//!    the future waits for the commit. A journal refusal (quota, disk) is the publish's
//!    refusal: MQTT 5 PUBACK/PUBREC 0x97 (or 0x80 for an I/O failure), under 3.1.1 the
//!    connection is closed unacknowledged, and nothing is delivered locally.
//! 2. A retained publish updates the retained table (memory + `broker.db`, committed).
//! 3. It is delivered to every matching local subscription (`router.rs`), at
//!    min(publish QoS, granted QoS), noLocal honoured, the retain flag cleared unless
//!    retain-as-published.
//!
//! Publishes of one connection are ordered: `Session::publish` queues them in call order
//! to the session's pipeline task, which submits them to the journal in that order
//! (`limits.publish_pipeline` of them in flight, so one publisher's messages share
//! fsyncs), and does steps 2 and 3 in that order once each commit is known.
//!
//! # Sessions
//! Session expiry > 0 (3.1.1: clean session false; capped by
//! `sessions.max_session_expiry_secs`) makes a session persistent: its subscriptions and
//! its offline queue are in `broker.db` (`store.rs`) and survive a restart; the queue of
//! a connected client lives in memory (bounded) and is written to `broker.db` when the
//! connection ends or the agent stops. A kill -9 therefore loses the QoS 1/2 messages
//! that were in memory for connected subscribers (not the journal's: those are on disk
//! before their PUBACK). Expired sessions are deleted by a sweep every minute.

mod router;
mod session;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use mqtt::broker::{Accepted, Broker, Peer, Refusal};
use mqtt::packet::{Connect, Message, Reason};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use router::CounterValues;
pub use session::LocalSession;
pub use store::{BrokerStore, Snapshot};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::error::Error;
use crate::journal::{Journal, NewEntry, Qos};
use router::Router;

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
    auth: Authenticator,
    max_expiry: u32,
    subscriber_queue: usize,
    pipeline: usize,
    tracker: TaskTracker,
    generation: AtomicU64,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
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
    /// A broker over `journal` and `store`, restoring the persistent sessions and retained
    /// messages of `snapshot`. Tasks it starts (session pipelines, retained deliveries)
    /// run in `tracker`.
    pub fn new(
        config: &Config,
        journal: Journal,
        store: BrokerStore,
        snapshot: Snapshot,
        tracker: TaskTracker,
    ) -> Self {
        let router = Router::new(
            store,
            config.sessions.max_queued_messages,
            config.sessions.max_retained,
            Duration::from_millis(config.limits.subscriber_wait_ms),
        );
        for m in &snapshot.retained {
            router.set_retained(m);
        }
        for s in snapshot.sessions {
            let c = router.client(&s.client_id);
            if let Ok(mut st) = c.state.try_lock() {
                st.persistent = true;
                st.queued = s.queued;
            }
            if let Ok(mut subs) = c.subs.write() {
                subs.extend(s.subscriptions);
            }
        }
        Self {
            core: Arc::new(Core {
                router,
                journal,
                uplink: config.uplink.topics.clone(),
                auth: Authenticator::new(&config.auth),
                max_expiry: config.sessions.max_session_expiry_secs,
                subscriber_queue: config.limits.subscriber_queue,
                pipeline: config.limits.publish_pipeline,
                tracker,
                generation: AtomicU64::new(1),
            }),
        }
    }

    /// Messages the broker did not deliver, and how many it did.
    pub fn counters(&self) -> CounterValues {
        self.core.router.counter_values()
    }

    /// Number of sessions (connected, or persistent and offline).
    pub fn sessions(&self) -> usize {
        self.core.router.len()
    }

    /// Publishes `message` from inside the agent (sensors, the downlink) as if client
    /// `publisher` had sent it: journal (only when `journal` is true and the topic is an
    /// uplink topic), retained table, then every matching local subscription. Returns
    /// once the message is committed to the journal (if journaled) and handed to every
    /// subscriber's queue — the point where the caller may consider it delivered.
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
            self.core.route(publisher, message, false).await
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
            match self.core.router.store.expire(now_ms()).await {
                Ok(ids) => {
                    for id in ids {
                        let c = self.core.router.client(&id);
                        let mut st = c.state.lock().await;
                        if st.online.is_none() {
                            st.persistent = false;
                            st.queued = 0;
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
    fn is_uplink(&self, topic: &str) -> bool {
        self.uplink.iter().any(|f| mqtt::topic::matches(f, topic))
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
        let uplinked = self.is_uplink(&message.topic);
        if uplinked {
            self.journal
                .append(Self::journal_entry(&message))
                .await
                .map_err(|e| refusal(&e))?;
        }
        self.route(publisher, message, uplinked).await
    }

    /// Steps 2 and 3 of a publish (see the module doc), after the journal commit.
    async fn route(
        &self,
        publisher: &str,
        message: Message,
        uplinked: bool,
    ) -> Result<Reason, Refusal> {
        if message.retain && self.router.set_retained(&message) {
            let keep = (!message.payload.is_empty()).then(|| message.clone());
            if let Err(e) = self.router.store.retain(&message.topic, keep).await {
                return Err(refusal(&e));
            }
        }
        let targets = self.router.matching(&message.topic, publisher);
        let delivered = !targets.is_empty();
        for (client, opts) in targets {
            let mut m = message.clone();
            m.qos = m.qos.min(opts.qos);
            m.retain = message.retain && opts.retain_as_published;
            self.router.deliver(&client, m).await;
        }
        Ok(if uplinked || delivered {
            Reason::Success
        } else {
            Reason::NoMatchingSubscribers
        })
    }

    async fn connect(
        self: Arc<Self>,
        connect: Connect,
        peer: Peer,
    ) -> Result<Accepted<LocalSession>, Refusal> {
        self.auth.authenticate(&connect, &peer).await?;
        let id = connect.client_id.as_str();
        let store_failed = |e: Error| Refusal::new(Reason::ServerUnavailable, e.to_string());
        // The client may be removed between lookup and lock (its old session closed): retry.
        let (client, mut st) = loop {
            let client = self.router.client(id);
            let st = client.state.clone().lock_owned().await;
            if self.router.is_current(&client) {
                break (client, st);
            }
        };
        let existed = st.persistent || st.online.is_some();
        let was_persistent = st.persistent;
        let expiry = connect.session_expiry_interval.min(self.max_expiry);
        if connect.clean_start {
            if was_persistent {
                self.router
                    .store
                    .delete_session(id)
                    .await
                    .map_err(store_failed)?;
            }
            client.clear_subscriptions();
            client.take_inflight();
            st.queued = 0;
        }
        st.persistent = expiry > 0;
        if st.persistent {
            self.router
                .store
                .save_session(id, expiry)
                .await
                .map_err(store_failed)?;
        } else if was_persistent && !connect.clean_start {
            self.router
                .store
                .delete_session(id)
                .await
                .map_err(store_failed)?;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.subscriber_queue);
        st.online = Some((generation, tx));
        // Unacknowledged deliveries of a taken-over connection, then the offline queue,
        // go out before anything newer: the task holds the client's lock until done.
        let resend = client.take_inflight();
        let queued = st.queued;
        let core = self.clone();
        let c = client.clone();
        self.tracker.spawn(async move {
            for (_, m) in resend {
                core.router.deliver_locked(&c, &mut st, m, true).await;
            }
            if queued > 0 {
                match core.router.store.take_queue(&c.id).await {
                    Ok(messages) => {
                        st.queued = 0;
                        for m in messages {
                            core.router.deliver_locked(&c, &mut st, m, false).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(client = %c.id, error = %e, "cannot read the offline queue")
                    }
                }
            }
        });
        let session = LocalSession::start(self.clone(), client, generation);
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
