//! One client's session on the bridge: its subscriptions, the readers that pull their LMQs,
//! its implicit p2p and retry queues, and, for persistent sessions, the committed offsets
//! and the stored subscription list (`session_store.rs`).
//!
//! - A subscription to an exact topic reads that topic's LMQ; a wildcard subscription reads
//!   the wildcard's LMQ, which exists only when the filter is registered in kvconfig: an
//!   unregistered filter is registered or refused (config `subscriptions.unregistered`),
//!   never silently empty.
//! - Every readable broker of the first-level topic's route is read.
//! - A queue with an offset committed for the session's group (`%LMQ%{clientId}`), by
//!   this bridge or by rocketmq-mqtt, is read from there whenever the session did not
//!   start clean, with or without a bridge session record (rocketmq-mqtt writes none):
//!   the broker's offset is the truth. Only a queue without one (or a clean start) starts
//!   at the latest message.
//! - Offsets are committed after acknowledgements, continuously (`offsets.rs`).
//! - A filter whose first level is a wildcard (`#`, `+/C`, `/#`) spans first-level topics,
//!   which rocketmq-mqtt cannot serve: it reads the union of its parts under every
//!   first-level topic (`lmq::parts_under`: exact topics, or wildcard filters registered
//!   like any other, each registration held while the subscription lives), and a task
//!   adds the parts of first-level topics that appear while it lives. Each LMQ is read
//!   once per session, however many subscriptions read it, and each message is delivered
//!   once (`reader.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use mqtt::broker::{Close, Delivery, Refusal, Session};
use mqtt::packet::{Message, QoS, Reason, SubscribeOutcome, SubscriptionRequest};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{self, Access};
use crate::bridge::Bridge;
use crate::config::UnregisteredWildcards;
use crate::error::Error;
use crate::lmq;
use crate::offsets::{QueueKey, Tracker};
use crate::reader::{self, Reader, SeenIds, Start, SubEntry};
use crate::retained;
use crate::retry;
use crate::session_store::{self, Handed, Stall, StoredSession, StoredSubscription};
use crate::topic_order::TopicOrder;
use crate::wildcards::Held;
use crate::will_store;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one accepted subscription did.
#[derive(Debug, Clone, Copy)]
struct Subscribed {
    /// It replaced a subscription to the same filter.
    existed: bool,
    /// It registered its wildcard filter in kvconfig (the SUBACK waits for other servers
    /// to re-read it: `subscriptions.registration_settle_ms`).
    registered: bool,
}

#[derive(Debug)]
struct Subscription {
    options: SubEntry,
    /// The filters it reads: itself, or its parts under first-level topics (their LMQs
    /// are counted in [`Inner::lmqs`]).
    parts: Vec<String>,
    /// Its wildcard parts' uses, which keep their registrations from being pruned.
    _held: Vec<Held>,
    /// Stops the task that adds parts as first-level topics appear.
    expander: Option<CancellationToken>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(e) = &self.expander {
            e.cancel();
        }
    }
}

/// The readers of one LMQ and how many subscriptions read it.
#[derive(Debug, Default)]
struct LmqUse {
    users: usize,
    queues: Vec<(QueueKey, CancellationToken)>,
    /// The first-level topic whose route says which brokers hold the LMQ.
    first: String,
    /// When the first subscription reading it was made (ms since the epoch): a broker
    /// that joins the route later is read from its first message stored since then.
    since_ms: u64,
    /// Its first readers are started ([`Inner::acquire`] done): only then does
    /// [`Inner::add_joined_brokers`] add readers to it.
    started: bool,
}

#[derive(Debug)]
struct Inner {
    bridge: Bridge,
    identity: Arc<str>,
    client_id: String,
    group: String,
    persistent: bool,
    clean_start: bool,
    expiry_secs: u32,
    window: i64,
    has_will: bool,
    subs: Mutex<HashMap<String, Subscription>>,
    /// The implicit p2p and retry queues' readers, by LMQ.
    implicit: Mutex<HashMap<String, Vec<(QueueKey, CancellationToken)>>>,
    /// When the session was opened (ms since the epoch): the implicit queues on a broker
    /// that joins the cluster later are read from their first message stored since then.
    opened_ms: u64,
    /// The LMQs that subscriptions read.
    lmqs: Mutex<HashMap<String, LmqUse>>,
    /// How long the SUBACK of the SUBSCRIBE just carried out is held back (it registered
    /// a wildcard): taken by [`BridgeSession::take_suback_delay`].
    suback_delay: Mutex<Option<std::time::Duration>>,
    stalls: Mutex<Vec<Stall>>,
    handed: Vec<Handed>,
    owner: String,
    reader: reader::Shared,
    cancel: CancellationToken,
    commit: Notify,
}

/// One connected client's session.
#[derive(Debug)]
pub struct BridgeSession {
    inner: Arc<Inner>,
    /// This connection's stores in flight, kept in order per topic.
    order: TopicOrder,
}

/// How a session is opened.
#[derive(Debug, Clone, Copy)]
pub struct Opening {
    /// Keep offsets and subscriptions after the connection ends.
    pub persistent: bool,
    /// MQTT 5 session expiry, seconds.
    pub expiry_secs: u32,
    /// Deliveries in flight at most.
    pub window: u16,
    /// Whether the connection has a will (kept in kvconfig until the session closes).
    pub has_will: bool,
}

impl BridgeSession {
    /// Opens (or resumes) a session; returns it, whether it was resumed, and its deliveries.
    pub async fn open(
        bridge: Bridge,
        identity: Arc<str>,
        client_id: String,
        clean_start: bool,
        opening: Opening,
    ) -> Result<(Self, bool, mpsc::Receiver<Delivery>), Error> {
        let table = &bridge.tables().sessions;
        let stored = if clean_start {
            None
        } else if opening.persistent {
            session_store::load(table, &client_id).await?
        } else {
            // MQTT 5: Clean Start 0 resumes the session that exists whatever this
            // connection's Session Expiry Interval (3.1.2-4); with 0 it ends when this
            // connection does (it is stored with expiry 0 then). Read from this bridge's
            // copy of the table: connections without expiry do not wait for a sync.
            session_store::load_local(table, &client_id)
        };
        // A resumed session reads from its committed offsets and commits, like any
        // persistent one, until this connection ends.
        let opening = Opening {
            persistent: opening.persistent || stored.is_some(),
            ..opening
        };
        // A clean start discards any stored session (its offsets are overwritten as
        // subscriptions start again at the latest message); most connections have none.
        // A broker that cannot be reached does not stop a clean session.
        if clean_start
            && session_store::load_local(table, &client_id).is_some()
            && let Err(e) = session_store::delete(table, &client_id).await
        {
            warn!(client = %client_id, error = %e, "stored session not discarded");
        }
        let (tx, rx) = mpsc::channel(usize::from(opening.window.max(1)));
        let bridge_instance = bridge.instance().to_owned();
        let inner = Arc::new(Inner {
            group: session_store::offset_group(&client_id),
            reader: reader::Shared {
                client_id: Arc::from(client_id.as_str()),
                subs: Arc::new(Mutex::new(HashMap::new())),
                client: bridge.client().clone(),
                tracker: Arc::new(Mutex::new(Tracker::default())),
                seen: Arc::new(Mutex::new(SeenIds::default())),
                tx,
            },
            bridge,
            identity,
            client_id,
            persistent: opening.persistent,
            clean_start,
            expiry_secs: opening.expiry_secs,
            window: i64::from(opening.window),
            has_will: opening.has_will,
            subs: Mutex::new(HashMap::new()),
            implicit: Mutex::new(HashMap::new()),
            opened_ms: session_store::now_ms(),
            lmqs: Mutex::new(HashMap::new()),
            suback_delay: Mutex::new(None),
            stalls: Mutex::new(
                stored
                    .as_ref()
                    .map(|s| s.stalls.clone())
                    .unwrap_or_default(),
            ),
            handed: stored
                .as_ref()
                .map(|s| s.handed.clone())
                .unwrap_or_default(),
            owner: format!("{}/{:016x}", bridge_instance, rand::random::<u64>()),
            cancel: CancellationToken::new(),
            commit: Notify::new(),
        });
        let resumed = stored.is_some();
        if let Some(stored) = &stored {
            // Known at once, so that a save before the readers are up keeps them.
            let mut subs = lock(&inner.subs);
            for s in &stored.subscriptions {
                subs.insert(
                    s.filter.clone(),
                    Subscription {
                        options: stored_options(s),
                        parts: Vec::new(),
                        _held: Vec::new(),
                        expander: None,
                    },
                );
            }
        }
        let (started, implicit_started) = tokio::sync::oneshot::channel();
        tokio::spawn(inner.clone().start_background(stored, started));
        tokio::spawn(inner.clone().watch_routes());
        // CONNACK waits (a bounded time) for the implicit queues, not for stored
        // subscriptions, which resume from committed offsets anyway.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), implicit_started).await;
        if inner.persistent {
            inner.save(None).await;
            inner
                .bridge
                .remember_local_session(&inner.client_id, &inner.owner);
            tokio::spawn(inner.clone().committer());
        }
        Ok((
            Self {
                inner,
                order: TopicOrder::default(),
            },
            resumed,
            rx,
        ))
    }
}

fn qos_of(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn stored_options(s: &StoredSubscription) -> SubEntry {
    SubEntry {
        qos: qos_of(s.qos),
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        id: s.subscription_id,
        since_ms: s.since_ms,
    }
}

fn request_options(r: &SubscriptionRequest) -> SubEntry {
    SubEntry {
        qos: r.qos,
        no_local: r.no_local,
        retain_as_published: r.retain_as_published,
        id: r.subscription_id,
        since_ms: Some(session_store::now_ms()),
    }
}

/// How often a subscription spanning first-level topics looks for new ones (in the meta,
/// which is refreshed every `meta_refresh_secs`).
const EXPAND_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a session looks for brokers that joined the routes of the queues it reads
/// (routes themselves are cached by the bridge for `rocketmq.route_refresh_secs`).
const ROUTE_WATCH_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

impl Inner {
    /// Starts one reader per broker for an LMQ (`filter`: the subscription's, `None` for
    /// the implicit queues); returns their keys and stop tokens. With `lazy`, the readers
    /// find their start offsets themselves (retrying while a broker is away); otherwise the
    /// offsets are resolved here, so that a new subscription starts at its committed
    /// offset or the latest message as of its SUBACK.
    async fn start_queues(
        &self,
        lmq_name: &str,
        implicit: bool,
        brokers: &[String],
        lazy: bool,
        since_ms: Option<u64>,
    ) -> Result<Vec<(QueueKey, CancellationToken)>, Error> {
        let group = self.persistent.then(|| self.group.clone());
        let use_committed = !self.clean_start;
        let mut readers = Vec::new();
        for broker in brokers {
            let key = QueueKey {
                lmq: Arc::from(lmq_name),
                broker: Arc::from(broker.as_str()),
            };
            let handed_to = self
                .handed
                .iter()
                .find(|h| *h.lmq == *key.lmq && *h.broker == *key.broker)
                .map(|h| h.to);
            let start = if lazy {
                Start::Resolve {
                    group: group.clone(),
                    use_committed,
                    window: self.window,
                    handed_to,
                    since_ms,
                }
            } else {
                let (offset, stored) = reader::resolve_start(
                    &self.reader.client,
                    &key,
                    group.as_deref(),
                    use_committed,
                    since_ms,
                )
                .await?;
                lock(&self.reader.tracker).start(key.clone(), offset);
                Start::At {
                    offset,
                    dup_below: match (stored, handed_to) {
                        (false, _) => offset,
                        (true, Some(h)) => h,
                        (true, None) => offset + self.window,
                    },
                }
            };
            readers.push(Reader {
                key,
                start,
                implicit,
                cancel: self.cancel.child_token(),
            });
        }
        Ok(readers
            .into_iter()
            .map(|r| {
                let handle = (r.key.clone(), r.cancel.clone());
                tokio::spawn(r.run(self.reader.clone()));
                handle
            })
            .collect())
    }

    /// Starts the implicit p2p and retry readers and resumes stored subscriptions, in the
    /// background: CONNECT does not wait for the brokers.
    async fn start_background(
        self: Arc<Self>,
        stored: Option<StoredSession>,
        started: tokio::sync::oneshot::Sender<()>,
    ) {
        // Start the implicit queues at a known offset first, so that a p2p message sent
        // right after CONNACK is read; when the brokers are away, they start later, at the
        // latest offset they find then (or the committed one).
        let eager = self.start_implicit(false).await;
        let _ = started.send(());
        if !eager {
            self.start_implicit(true).await;
        }
        // Oldest first: an LMQ two subscriptions share starts from the earlier one's time
        // when its broker has no committed offset.
        let mut subscriptions = stored.map(|s| s.subscriptions).unwrap_or_default();
        subscriptions.sort_by_key(|s| s.since_ms);
        for s in subscriptions {
            if let Err(refusal) = self
                .subscribe_one(&s.filter, stored_options(&s), true, true)
                .await
            {
                warn!(client = %self.client_id, filter = %s.filter, %refusal, "stored subscription not resumed");
            }
        }
    }

    /// Starts the p2p (and, for persistent sessions, retry) readers; false when the
    /// brokers could not be reached (with `lazy`, it retries until it can or the session
    /// ends).
    async fn start_implicit(&self, lazy: bool) -> bool {
        let mut backoff = std::time::Duration::from_millis(100);
        let brokers = loop {
            match self.bridge.cluster_brokers().await {
                Ok(b) => break b,
                Err(e) if lazy => {
                    debug!(client = %self.client_id, error = %e, "brokers not known yet");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.cancel.cancelled() => return false,
                    }
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                }
                Err(_) => return false,
            }
        };
        let mut implicit = vec![lmq::p2p_lmq(&self.client_id)];
        if self.persistent {
            implicit.push(lmq::retry_lmq(&self.client_id));
        }
        for lmq_name in implicit {
            if lock(&self.implicit).contains_key(&lmq_name) {
                continue;
            }
            match self
                .start_queues(&lmq_name, true, &brokers, lazy, None)
                .await
            {
                Ok(keys) => {
                    lock(&self.implicit).insert(lmq_name, keys);
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads the LMQ of `part` (a topic or filter under first-level topic `first`) for
    /// one more subscription: its readers start unless it is read already.
    /// `since_ms`: when the resumed subscription was made (see [`reader::SubEntry`]).
    async fn acquire(
        &self,
        part: &str,
        first: &str,
        lazy: bool,
        since_ms: Option<u64>,
    ) -> Result<(), Error> {
        let name = lmq::lmq_name(part);
        {
            let mut lmqs = lock(&self.lmqs);
            if let Some(u) = lmqs.get_mut(&name) {
                u.users += 1;
                return Ok(());
            }
            // Claimed before the awaits below, so that a concurrent acquire counts itself
            // in rather than starting a second set of readers.
            lmqs.insert(
                name.clone(),
                LmqUse {
                    users: 1,
                    queues: Vec::new(),
                    first: first.to_owned(),
                    since_ms: since_ms.unwrap_or_else(session_store::now_ms),
                    started: false,
                },
            );
        }
        let started = match self.bridge.route_brokers(first).await {
            Ok(brokers) => {
                self.start_queues(&name, false, &brokers, lazy, since_ms)
                    .await
            }
            Err(e) => Err(e),
        };
        match started {
            Ok(keys) => {
                let mut lmqs = lock(&self.lmqs);
                match lmqs.get_mut(&name) {
                    Some(u) => {
                        u.queues = keys;
                        u.started = true;
                    }
                    None => stop_queues(&self.reader, keys),
                }
                Ok(())
            }
            Err(e) => {
                self.release(part);
                Err(e)
            }
        }
    }

    /// Adds readers, every [`ROUTE_WATCH_PERIOD`] until the session ends, for brokers
    /// that joined the route of a queue the session reads (issue #16: a broker added to
    /// the cluster while a subscription is live). A broker that leaves the route keeps its
    /// reader, which retries until the broker is back and goes on from its offset.
    async fn watch_routes(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ROUTE_WATCH_PERIOD) => {}
                _ = self.cancel.cancelled() => return,
            }
            self.add_joined_brokers().await;
        }
    }

    /// One pass of [`Inner::watch_routes`]. A joined broker's reader starts at the
    /// committed offset of a persistent session if the broker has one, else at the first
    /// message it stored since the subscription (or, for the implicit queues, the
    /// session) began: everything it holds for the session is new to it.
    async fn add_joined_brokers(&self) {
        let watched: Vec<(String, String, u64, Vec<Arc<str>>)> = lock(&self.lmqs)
            .iter()
            .filter(|(_, u)| u.started)
            .map(|(name, u)| {
                let have = u.queues.iter().map(|(k, _)| k.broker.clone()).collect();
                (name.clone(), u.first.clone(), u.since_ms, have)
            })
            .collect();
        for (name, first, since, have) in watched {
            let Ok(brokers) = self.bridge.route_brokers(&first).await else {
                continue;
            };
            let joined: Vec<String> = brokers
                .into_iter()
                .filter(|b| !have.iter().any(|h| **h == **b))
                .collect();
            if joined.is_empty() {
                continue;
            }
            match self
                .start_queues(&name, false, &joined, true, Some(since))
                .await
            {
                Ok(keys) => {
                    info!(client = %self.client_id, lmq = %name, brokers = ?joined, "reading brokers that joined the route");
                    let mut lmqs = lock(&self.lmqs);
                    match lmqs.get_mut(&name) {
                        Some(u) => add_readers(&mut u.queues, keys),
                        None => stop_queues(&self.reader, keys),
                    }
                }
                Err(e) => {
                    debug!(client = %self.client_id, lmq = %name, error = %e, "joined brokers not read yet")
                }
            }
        }
        let implicit: Vec<(String, Vec<Arc<str>>)> = lock(&self.implicit)
            .iter()
            .map(|(name, q)| {
                (
                    name.clone(),
                    q.iter().map(|(k, _)| k.broker.clone()).collect(),
                )
            })
            .collect();
        if implicit.is_empty() {
            return;
        }
        let Ok(brokers) = self.bridge.cluster_brokers().await else {
            return;
        };
        for (name, have) in implicit {
            let joined: Vec<String> = brokers
                .iter()
                .filter(|b| !have.iter().any(|h| **h == ***b))
                .cloned()
                .collect();
            if joined.is_empty() {
                continue;
            }
            if let Ok(keys) = self
                .start_queues(&name, true, &joined, true, Some(self.opened_ms))
                .await
            {
                info!(client = %self.client_id, lmq = %name, brokers = ?joined, "reading brokers that joined the cluster");
                let mut implicit = lock(&self.implicit);
                match implicit.get_mut(&name) {
                    Some(q) => add_readers(q, keys),
                    None => stop_queues(&self.reader, keys),
                }
            }
        }
    }

    /// Reads the LMQ of `part` for one subscription fewer: its readers stop with the last.
    fn release(&self, part: &str) {
        let name = lmq::lmq_name(part);
        let mut lmqs = lock(&self.lmqs);
        let Some(u) = lmqs.get_mut(&name) else {
            return;
        };
        u.users = u.users.saturating_sub(1);
        if u.users == 0
            && let Some(u) = lmqs.remove(&name)
        {
            drop(lmqs);
            stop_queues(&self.reader, u.queues);
        }
    }

    /// Makes `part`, a wildcard filter under its first-level topic, listed in kvconfig
    /// (`subscriptions.unregistered`); true when this registered it.
    async fn ensure_registered(&self, part: &str) -> Result<bool, Refusal> {
        let first = lmq::first_topic(part);
        if !mqtt::topic::is_wildcard(part)
            || self
                .bridge
                .meta()
                .wildcards(first)
                .iter()
                .any(|w| w == part)
        {
            return Ok(false);
        }
        match self.bridge.config().subscriptions.unregistered {
            UnregisteredWildcards::Refuse => Err(Refusal::new(
                Reason::ImplementationSpecificError,
                format!("wildcard {part:?} is not registered (cloud-bridge wildcard add)"),
            )),
            UnregisteredWildcards::Register => {
                let registered =
                    self.bridge
                        .wildcards()
                        .register(part)
                        .await
                        .map_err(|e| match e {
                            Error::QuotaExceeded(table, q) => {
                                self.bridge.quota_refusal(table, q.name())
                            }
                            e => Refusal::new(
                                Reason::UnspecifiedError,
                                format!("registering {part:?}: {e}"),
                            ),
                        })?;
                info!(
                    filter = part,
                    "wildcard registered in kvconfig on subscribe"
                );
                Ok(registered)
            }
        }
    }

    /// The parts of a filter spanning first-level topics under the first-level topics
    /// known now, with their first-level topic.
    fn parts_now(&self, filter: &str) -> Vec<(String, String)> {
        let mut firsts = self.bridge.meta().first_topics();
        firsts.sort_unstable();
        firsts
            .into_iter()
            .flat_map(|f| {
                lmq::parts_under(filter, &f)
                    .into_iter()
                    .map(move |p| (f.clone(), p))
            })
            .collect()
    }

    /// Adds to the subscription `filter` (while it is the one `token` belongs to) the
    /// parts of first-level topics that appear, every [`EXPAND_PERIOD`].
    async fn expand(self: Arc<Self>, filter: String, token: CancellationToken) {
        let mut warned = std::collections::HashSet::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EXPAND_PERIOD) => {}
                _ = token.cancelled() => return,
            }
            let have: Vec<String> = match lock(&self.subs).get(&filter) {
                Some(s) => s.parts.clone(),
                None => return,
            };
            for (first, part) in self.parts_now(&filter) {
                if have.contains(&part) {
                    continue;
                }
                if let Err(refusal) = self.ensure_registered(&part).await {
                    if warned.insert(part.clone()) {
                        warn!(client = %self.client_id, %filter, %part, %refusal, "part of a subscription across first-level topics not read yet");
                    }
                    continue;
                }
                if let Err(e) = self.acquire(&part, &first, true, None).await {
                    if warned.insert(part.clone()) {
                        warn!(client = %self.client_id, %filter, %part, error = %e, "part of a subscription across first-level topics not read yet");
                    }
                    continue;
                }
                let held =
                    mqtt::topic::is_wildcard(&part).then(|| self.bridge.wildcards().hold(&part));
                let mut subs = lock(&self.subs);
                match subs.get_mut(&filter) {
                    Some(s) if !token.is_cancelled() => {
                        info!(client = %self.client_id, %filter, %part, "new first-level topic joins a subscription");
                        s.parts.push(part);
                        s._held.extend(held);
                    }
                    _ => {
                        drop(subs);
                        self.release(&part);
                        return;
                    }
                }
            }
        }
    }

    /// Checks and applies one subscription.
    /// Checks and applies one subscription.
    async fn subscribe_one(
        self: &Arc<Self>,
        filter: &str,
        mut options: SubEntry,
        resume: bool,
        lazy: bool,
    ) -> Result<Subscribed, Refusal> {
        let config = self.bridge.config();
        let limits = &config.subscriptions;
        let invalid = |why: String| Refusal::new(Reason::TopicFilterInvalid, why);
        if filter.starts_with("$share/") {
            return Err(Refusal::new(
                Reason::SharedSubscriptionsNotSupported,
                "shared subscriptions are not supported",
            ));
        }
        mqtt::topic::validate_filter(filter).map_err(|e| invalid(e.to_string()))?;
        if filter.len() > limits.max_filter_length
            || mqtt::topic::depth(filter) > limits.max_filter_depth
        {
            return Err(invalid(format!(
                "filter longer than {} bytes or deeper than {} levels",
                limits.max_filter_length, limits.max_filter_depth
            )));
        }
        mqtt::cloud_topic::check_topic(filter).map_err(|e| invalid(format!("filter {e}")))?;
        if let Some(why) = lmq::unservable_wildcard(filter) {
            return Err(invalid(why));
        }
        let first = lmq::first_topic(filter);
        let spans = lmq::spans_first_topics(filter);
        if !spans && !self.bridge.meta().is_first_topic(first) {
            return Err(invalid(format!(
                "{first:?} is not a first-level topic of this service"
            )));
        }
        if !auth::allowed(&config.acl, &self.identity, Access::Subscribe, filter) {
            return Err(Refusal::new(
                Reason::NotAuthorized,
                format!("{} may not subscribe to {filter:?}", self.identity),
            ));
        }
        let existing = !resume && lock(&self.subs).contains_key(filter);
        // A subscription replaced by a new SUBSCRIBE is the same one: it keeps its age.
        if let Some(since) = lock(&self.subs)
            .get(filter)
            .and_then(|s| s.options.since_ms)
        {
            options.since_ms = Some(since);
        }
        if !resume && !existing && self.explicit_count() >= limits.max_per_client {
            return Err(Refusal::new(
                Reason::QuotaExceeded,
                format!("more than {} subscriptions", limits.max_per_client),
            ));
        }
        let record_limit = config.quotas.session_record_bytes;
        if self.persistent && !resume && !existing && record_limit != 0 {
            // The stored session grows by the filter (and its JSON around it).
            let now = session_store::encode(&self.stored(None)).map_or(usize::MAX, |b| b.len());
            if now.saturating_add(filter.len() + 96) > record_limit {
                return Err(self
                    .bridge
                    .quota_refusal("sessions", crate::state_table::Quota::EntryBytes.name()));
            }
        }
        let parts = if spans {
            self.parts_now(filter)
        } else {
            vec![(first.to_owned(), filter.to_owned())]
        };
        // A spanning filter is refused only when no first-level topic can serve it (e.g.
        // `unregistered = "refuse"` and no part listed); otherwise it goes on without the
        // parts that cannot be read yet, and its expander tries them again.
        let mut registered = false;
        let mut usable = Vec::with_capacity(parts.len());
        let mut refused = None;
        for (first, part) in parts {
            match self.ensure_registered(&part).await {
                Ok(r) => {
                    registered |= r;
                    usable.push((first, part));
                }
                Err(refusal) if spans => {
                    warn!(client = %self.client_id, %filter, %part, %refusal, "part of a subscription across first-level topics not read yet");
                    refused.get_or_insert(refusal);
                }
                Err(refusal) => return Err(refusal),
            }
        }
        if let (true, Some(refusal)) = (usable.is_empty(), refused) {
            return Err(refusal);
        }
        // The new readers start before the old subscription's stop: an LMQ both read is
        // read on, without a gap.
        let mut acquired = Vec::new();
        for (first, part) in usable {
            match self
                .acquire(
                    &part,
                    &first,
                    lazy,
                    resume.then_some(options.since_ms).flatten(),
                )
                .await
            {
                Ok(()) => acquired.push(part),
                // A spanning filter goes on without that first-level topic for now: its
                // expander tries it again.
                Err(e) if spans => {
                    warn!(client = %self.client_id, %filter, %part, error = %e, "part of a subscription across first-level topics not read yet");
                }
                Err(e) => {
                    for p in &acquired {
                        self.release(p);
                    }
                    return Err(Refusal::new(Reason::UnspecifiedError, e.to_string()));
                }
            }
        }
        let held = acquired
            .iter()
            .filter(|p| mqtt::topic::is_wildcard(p))
            .map(|p| self.bridge.wildcards().hold(p))
            .collect();
        let expander = spans.then(|| self.cancel.child_token());
        if let Some(token) = &expander {
            tokio::spawn(self.clone().expand(filter.to_owned(), token.clone()));
        }
        let old = lock(&self.subs).insert(
            filter.to_owned(),
            Subscription {
                options,
                parts: acquired,
                _held: held,
                expander,
            },
        );
        lock(&self.reader.subs).insert(filter.to_owned(), options);
        if let Some(old) = old {
            self.release_all(old);
        }
        Ok(Subscribed {
            existed: existing,
            registered,
        })
    }

    fn explicit_count(&self) -> usize {
        lock(&self.subs).len()
    }

    /// Stops reading what a subscription read (its parts' LMQs, unless others read them).
    fn release_all(&self, mut sub: Subscription) {
        for part in std::mem::take(&mut sub.parts) {
            self.release(&part);
        }
    }

    fn unsubscribe_one(&self, filter: &str) -> bool {
        let Some(sub) = lock(&self.subs).remove(filter) else {
            return false;
        };
        lock(&self.reader.subs).remove(filter);
        self.release_all(sub);
        true
    }

    fn stored(&self, disconnected_at_ms: Option<u64>) -> StoredSession {
        let mut subscriptions: Vec<StoredSubscription> = lock(&self.subs)
            .iter()
            .map(|(f, s)| StoredSubscription {
                filter: f.clone(),
                qos: s.options.qos.level(),
                no_local: s.options.no_local,
                retain_as_published: s.options.retain_as_published,
                subscription_id: s.options.id,
                since_ms: s.options.since_ms,
            })
            .collect();
        // A stable order, so that an unchanged session is not written again.
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        // Marks are only exact when the connection ended here: a bridge that died leaves
        // the marks of the last clean end, and the window estimate covers the rest.
        let handed = if disconnected_at_ms.is_some() {
            lock(&self.reader.tracker)
                .handed_marks()
                .into_iter()
                .map(|(k, to)| Handed {
                    lmq: k.lmq.to_string(),
                    broker: k.broker.to_string(),
                    to,
                })
                .collect()
        } else {
            Vec::new()
        };
        StoredSession {
            subscriptions,
            stalls: lock(&self.stalls).clone(),
            handed,
            owner: disconnected_at_ms.is_none().then(|| self.owner.clone()),
            expiry_secs: self.expiry_secs,
            disconnected_at_ms,
        }
    }

    async fn save(&self, disconnected_at_ms: Option<u64>) {
        if !self.persistent {
            return;
        }
        let stored = self.stored(disconnected_at_ms);
        self.store(&stored).await;
    }

    /// Writes the session record unless it is what is stored already.
    async fn store(&self, stored: &StoredSession) {
        let table = &self.bridge.tables().sessions;
        if session_store::load_local(table, &self.client_id).as_ref() == Some(stored) {
            return;
        }
        if let Err(e) = session_store::save(table, &self.client_id, stored).await {
            warn!(client = %self.client_id, error = %e, "session not stored");
        }
    }

    /// At the end of a connection: counts, per queue, the connections in a row that left
    /// the same head message unacknowledged, and moves a head that reached
    /// `max_resends` to the client's retry queue, so the queue behind it flows again.
    async fn settle_stalls(&self) {
        let limits = &self.bridge.config().subscriptions;
        let heads = lock(&self.reader.tracker).unacked_heads();
        let previous = lock(&self.stalls).clone();
        let mut stalls = Vec::new();
        for (key, offset) in heads {
            let count = previous
                .iter()
                .find(|s| *s.lmq == *key.lmq && *s.broker == *key.broker && s.offset == offset)
                .map_or(1, |s| s.count + 1);
            if count >= limits.max_resends {
                match retry::move_to_retry(&self.bridge, &self.client_id, &key, offset).await {
                    Ok(()) => {
                        lock(&self.reader.tracker).release(&key, offset);
                        continue;
                    }
                    Err(e) => {
                        warn!(client = %self.client_id, lmq = %key.lmq, offset, error = %e, "message not moved to the retry queue")
                    }
                }
            }
            stalls.push(Stall {
                lmq: key.lmq.to_string(),
                broker: key.broker.to_string(),
                offset,
                count,
            });
        }
        *lock(&self.stalls) = stalls;
    }

    /// Whether the stored session still names this connection (or nobody) as its owner.
    async fn still_owner(&self) -> bool {
        match session_store::load(&self.bridge.tables().sessions, &self.client_id).await {
            Ok(Some(stored)) => stored.owner.is_none_or(|o| o == self.owner),
            Ok(None) => true,
            Err(_) => true,
        }
    }

    async fn commit_now(&self) {
        let batch = lock(&self.reader.tracker).to_commit();
        for (key, offset) in batch {
            let b = self.reader.client.broker(&key.broker);
            if let Err(e) = b
                .update_consumer_offset(&self.group, &key.lmq, 0, offset)
                .await
            {
                warn!(client = %self.client_id, lmq = %key.lmq, error = %e, "offset not committed");
            }
        }
    }

    /// Commits offsets as acknowledgements come in, until the session ends.
    async fn committer(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.commit.notified() => {}
                _ = self.cancel.cancelled() => return,
            }
            self.commit_now().await;
        }
    }
}

impl Session for BridgeSession {
    fn publish(&self, message: Message) -> BoxFuture<'static, Result<Reason, Refusal>> {
        let mut turn = self.order.turn(&message.topic);
        let bridge = self.inner.bridge.clone();
        let identity = self.inner.identity.clone();
        let publisher = self.inner.client_id.clone();
        Box::pin(async move {
            if !turn.ready().await {
                return Err(Refusal::new(
                    Reason::ImplementationSpecificError,
                    "not stored: an earlier publish to this topic on this connection was not stored",
                ));
            }
            let on_queued = turn.on_queued();
            let result = bridge
                .store_queued(identity, &publisher, message, on_queued)
                .await;
            turn.finish(result).await
        })
    }

    fn subscribe(
        &mut self,
        requests: Vec<SubscriptionRequest>,
    ) -> BoxFuture<'static, Vec<SubscribeOutcome>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(requests.len());
            // Filters whose retained messages are sent: read once for the whole packet.
            let mut retained_for: Vec<(String, SubEntry)> = Vec::new();
            let mut registered = false;
            for r in &requests {
                let qos = r.qos;
                match inner
                    .subscribe_one(&r.filter, request_options(r), false, false)
                    .await
                {
                    Ok(Subscribed {
                        existed,
                        registered: new_filter,
                    }) => {
                        registered |= new_filter;
                        outcomes.push(SubscribeOutcome::Granted(qos));
                        let send_retained =
                            r.retain_handling == 0 || (r.retain_handling == 1 && !existed);
                        if send_retained {
                            retained_for.retain(|(f, _)| *f != r.filter);
                            retained_for.push((r.filter.clone(), request_options(r)));
                        }
                    }
                    Err(refusal) => {
                        info!(client = %inner.client_id, filter = %r.filter, %refusal, "subscription refused");
                        outcomes.push(SubscribeOutcome::Refused(refusal.reason));
                    }
                }
            }
            // A wildcard registered just now: rocketmq-mqtt servers dispatch into its queue
            // only once they re-read kvconfig, so its SUBACK is held back that long (the
            // connection goes on meanwhile). Its readers already run (from the offset
            // resolved above), so nothing published through a bridge is lost meanwhile.
            let settle = inner.bridge.config().subscriptions.registration_settle_ms;
            *lock(&inner.suback_delay) =
                (registered && settle > 0).then(|| std::time::Duration::from_millis(settle));
            if !retained_for.is_empty() {
                tokio::spawn(send_retained_messages(inner.clone(), retained_for));
            }
            inner.save(None).await;
            outcomes
        })
    }

    fn take_suback_delay(&mut self) -> Option<std::time::Duration> {
        lock(&self.inner.suback_delay).take()
    }

    fn unsubscribe(&mut self, filters: Vec<String>) -> BoxFuture<'static, Vec<Reason>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let reasons: Vec<Reason> = filters
                .iter()
                .map(|f| {
                    if !f.starts_with(lmq::LMQ_PREFIX) && inner.unsubscribe_one(f) {
                        Reason::Success
                    } else {
                        Reason::NoSubscriptionExisted
                    }
                })
                .collect();
            if reasons.contains(&Reason::Success) {
                inner.save(None).await;
            }
            reasons
        })
    }

    fn acked(&mut self, tag: u64) {
        lock(&self.inner.reader.tracker).acked(tag);
        if self.inner.persistent {
            self.inner.commit.notify_one();
        }
    }

    fn closed(self, how: Close) -> BoxFuture<'static, ()> {
        let inner = self.inner;
        Box::pin(async move {
            inner.cancel.cancel();
            if inner.has_will && how != Close::TakenOver {
                // Published by the connection already, or discarded by a normal DISCONNECT.
                let wills = &inner.bridge.tables().wills;
                if let Err(e) =
                    will_store::delete(wills, &inner.client_id, Some(inner.bridge.instance())).await
                {
                    warn!(client = %inner.client_id, error = %e, "will copy not removed");
                }
            }
            if inner.persistent {
                if how != Close::TakenOver {
                    inner.settle_stalls().await;
                }
                inner.commit_now().await;
                inner
                    .bridge
                    .forget_local_session(&inner.client_id, &inner.owner);
                if how != Close::TakenOver && inner.still_owner().await {
                    match how {
                        // MQTT 5: the DISCONNECT's session expiry replaces the CONNECT's
                        // (0: the session expires at once, as if connected with 0).
                        Close::Normal {
                            session_expiry: Some(expiry),
                        } => {
                            let mut stored = inner.stored(Some(session_store::now_ms()));
                            stored.expiry_secs = expiry;
                            inner.store(&stored).await;
                        }
                        _ => inner.save(Some(session_store::now_ms())).await,
                    }
                }
            }
        })
    }
}

/// Stops the readers of one LMQ.
/// Adds started readers to an LMQ's list; one for a broker the list already reads (it was
/// restarted meanwhile) is cancelled, leaving the offset tracking to the one listed.
fn add_readers(
    queues: &mut Vec<(QueueKey, CancellationToken)>,
    keys: Vec<(QueueKey, CancellationToken)>,
) {
    for (key, cancel) in keys {
        if queues.iter().any(|(k, _)| k.broker == key.broker) {
            cancel.cancel();
        } else {
            queues.push((key, cancel));
        }
    }
}

fn stop_queues(shared: &reader::Shared, queues: Vec<(QueueKey, CancellationToken)>) {
    let mut tracker = lock(&shared.tracker);
    for (key, cancel) in queues {
        cancel.cancel();
        tracker.stop(&key);
    }
}

/// Sends the retained messages matching the new subscriptions of one SUBSCRIBE (after its
/// SUBACK): the table is read once, each message sent once (RETAIN set, 3.3.1-9), at the
/// highest QoS granted to a filter of the SUBSCRIBE that matches it, with the identifiers
/// of those filters; an expired one is not sent.
async fn send_retained_messages(inner: Arc<Inner>, filters: Vec<(String, SubEntry)>) {
    let table = &inner.bridge.tables().retained;
    if let Err(e) = table.sync(session_store::SYNC_WAIT).await {
        debug!(error = %e, "retained table not read to its end; sending what this bridge has");
    }
    let names: Vec<&str> = filters.iter().map(|(f, _)| f.as_str()).collect();
    let messages = retained::matching(table, &names);
    let subs: reader::SubTable = filters.into_iter().collect();
    let now = mqtt::broker::now_ms();
    for (mut message, expires_ms) in messages {
        if expires_ms.is_some_and(|e| e <= now) {
            continue;
        }
        let Some(routing) = reader::route(&subs, &inner.client_id, &message.topic, true, None)
        else {
            continue;
        };
        message.qos = message.qos.min(routing.qos);
        message.retain = true;
        let d = Delivery {
            message: Box::new(message),
            dup: false,
            tag: 0,
            expires_ms,
            share: None,
            subscription_ids: routing.ids,
        };
        if inner.reader.tx.send(d).await.is_err() {
            return;
        }
    }
}
