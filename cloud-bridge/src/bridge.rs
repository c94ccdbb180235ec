//! The MQTT storage backend on RocketMQ: CONNECTs are authenticated here, and every
//! PUBLISH (and will) becomes one RocketMQ message on its first-level topic, dispatched
//! into the LMQs of rocketmq-mqtt (`lmq.rs`, `lmq_message.rs`).
//!
//! A publish is acknowledged to the client only when the broker answered SEND_OK: the
//! store future completes after the send, and the connection sends PUBACK/PUBREC then.
//! A refused or failed send is answered with an MQTT 5 reason code (or, under 3.1.1, by
//! closing the connection unacknowledged) so the client's retry is safe.

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use futures_util::future::BoxFuture;
use mqtt::broker::{Accepted, Broker, Peer, Refusal};
use mqtt::packet::{Connect, Message, Reason};
use tracing::warn;

use crate::auth::{self, Access};
use crate::config::Config;
use crate::error::Error;
use crate::lmq;
use crate::lmq_message;
use crate::meta::Meta;
use crate::metrics::{SendMetrics, SendOutcome};
use crate::retained;
use crate::rocketmq::{NameServer, OnQueued, Producer};
use crate::session::{BridgeSession, Opening};
use crate::session_store;
use crate::state_table::Tables;
use crate::wildcards::Wildcards;
use crate::will_store;

/// What every connection of the bridge shares.
#[derive(Debug, Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<Config>,
    meta: Arc<Meta>,
    namesrv: Arc<NameServer>,
    producer: Producer,
    routes: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    instance: String,
    /// Persistent sessions connected here: client id -> owner tag.
    local_sessions: Mutex<HashMap<String, String>>,
    /// RocketMQ send latency and outcomes (the metrics endpoint reads them).
    send_metrics: SendMetrics,
    /// Retained messages, sessions and wills.
    tables: Tables,
    /// Writes refused by a quota: (table, quota) -> count.
    quota_refused: Mutex<HashMap<(&'static str, &'static str), u64>>,
    /// Registration, leases and pruning of wildcard filters.
    wildcards: Wildcards,
}

impl Bridge {
    /// A bridge writing through `producer`, with topic meta from `meta`.
    pub fn new(
        config: Arc<Config>,
        meta: Arc<Meta>,
        namesrv: Arc<NameServer>,
        producer: Producer,
        tables: Tables,
    ) -> Self {
        let wildcards = Wildcards::new(
            &config,
            namesrv.clone(),
            meta.clone(),
            tables.wildcards.clone(),
            tables.sessions.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                wildcards,
                tables,
                quota_refused: Mutex::new(HashMap::new()),
                config,
                meta,
                namesrv,
                producer,
                routes: Mutex::new(HashMap::new()),
                instance: format!("{:016x}", rand::random::<u64>()),
                local_sessions: Mutex::new(HashMap::new()),
                send_metrics: SendMetrics::default(),
            }),
        }
    }

    /// This bridge instance's id (random per process), owner of its clients' wills.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Notes a persistent session connected here, with its owner tag.
    pub fn remember_local_session(&self, client_id: &str, owner: &str) {
        self.inner
            .local_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(client_id.to_owned(), owner.to_owned());
    }

    /// Number of persistent sessions connected here.
    pub fn local_session_count(&self) -> usize {
        self.inner
            .local_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Retained messages, sessions and wills.
    pub fn tables(&self) -> &Tables {
        &self.inner.tables
    }

    /// Counts a write refused by a quota, and turns it into the client's refusal (0x97).
    pub fn quota_refusal(&self, table: &'static str, quota: &'static str) -> Refusal {
        *self
            .inner
            .quota_refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((table, quota))
            .or_default() += 1;
        Refusal::new(
            Reason::QuotaExceeded,
            format!("quota exceeded: {table} ({quota}, see [quotas])"),
        )
    }

    /// Writes refused by a quota so far: ((table, quota), count).
    pub fn quota_refusals(&self) -> Vec<((&'static str, &'static str), u64)> {
        let mut v: Vec<_> = self
            .inner
            .quota_refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, n)| (*k, *n))
            .collect();
        v.sort_unstable();
        v
    }

    /// RocketMQ send figures.
    pub fn send_metrics(&self) -> &SendMetrics {
        &self.inner.send_metrics
    }

    /// Forgets a persistent session that ended here.
    pub fn forget_local_session(&self, client_id: &str, owner: &str) {
        let mut m = self
            .inner
            .local_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.get(client_id).is_some_and(|o| o == owner) {
            m.remove(client_id);
        }
    }

    /// Client ids of persistent sessions connected here whose stored owner is another
    /// connection (it connected on another bridge): they must be closed.
    pub async fn sessions_taken_elsewhere(&self) -> Result<Vec<String>, Error> {
        let local: Vec<(String, String)> = self
            .inner
            .local_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let sessions = &self.inner.tables.sessions;
        Ok(local
            .into_iter()
            .filter(|(client_id, owner)| {
                crate::session_store::load_local(sessions, client_id)
                    .and_then(|s| s.owner)
                    .is_some_and(|o| o != *owner)
            })
            .map(|(client_id, _)| client_id)
            .collect())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Topic meta.
    pub fn meta(&self) -> &Meta {
        &self.inner.meta
    }

    /// The name servers.
    pub fn namesrv(&self) -> &NameServer {
        &self.inner.namesrv
    }

    /// The producer.
    pub fn producer(&self) -> &Producer {
        &self.inner.producer
    }

    /// The RocketMQ client.
    pub fn client(&self) -> &crate::rocketmq::Client {
        self.inner.namesrv.client()
    }

    /// The readable master brokers of a first-level topic (cached for
    /// `rocketmq.route_refresh_secs`).
    pub async fn route_brokers(&self, first: &str) -> Result<Vec<String>, Error> {
        let cached = self
            .inner
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(first)
            .filter(|(at, _)| at.elapsed() < self.inner.config.route_refresh())
            .map(|(_, b)| b.clone());
        if let Some(b) = cached {
            return Ok(b);
        }
        let route = self.inner.namesrv.topic_route(first).await?;
        let brokers: Vec<String> = route
            .readable_masters()
            .into_iter()
            .map(|(_, addr)| addr.to_owned())
            .collect();
        self.inner
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(first.to_owned(), (Instant::now(), brokers.clone()));
        Ok(brokers)
    }

    /// Every broker that holds a first-level topic: where p2p and retry queues live.
    pub async fn cluster_brokers(&self) -> Result<Vec<String>, Error> {
        let mut all = Vec::new();
        for first in &self.inner.config.topics.first_level {
            for b in self.route_brokers(first).await? {
                if !all.contains(&b) {
                    all.push(b);
                }
            }
        }
        Ok(all)
    }

    /// Registration, leases and pruning of wildcard filters (`wildcards.rs`).
    pub fn wildcards(&self) -> &Wildcards {
        &self.inner.wildcards
    }

    /// Stores one MQTT message in RocketMQ on behalf of `identity`, a client id (a will).
    pub async fn store(self, identity: Arc<str>, message: Message) -> Result<Reason, Refusal> {
        let publisher = identity.clone();
        self.store_queued(identity, &publisher, message, OnQueued::default())
            .await
    }

    /// [`Bridge::store`], firing `on_queued` when the send is queued on a broker
    /// connection that keeps arrival order (`Producer::send_queued`).
    pub async fn store_queued(
        self,
        identity: Arc<str>,
        publisher: &str,
        message: Message,
        on_queued: OnQueued,
    ) -> Result<Reason, Refusal> {
        let this = &self.inner;
        let first = lmq::first_topic(&message.topic);
        if !this.meta.is_first_topic(first) {
            // 0x90 Topic Name invalid ("not malformed, but not accepted by this server"),
            // not 0x87 Not authorized: no identity may publish there, the topic has no
            // RocketMQ topic to go to.
            return Err(Refusal::new(
                Reason::TopicNameInvalid,
                format!(
                    "{first:?} is not a first-level topic of this service (LMQ/ALL_FIRST_TOPICS)"
                ),
            ));
        }
        if !auth::allowed(&this.config.acl, &identity, Access::Publish, &message.topic) {
            return Err(Refusal::new(
                Reason::NotAuthorized,
                format!("{identity} may not publish to {:?}", message.topic),
            ));
        }
        let wildcards = this.meta.wildcards(first);
        let Some(queues) = lmq::dispatch_queues(&message.topic, &wildcards) else {
            return Err(Refusal::new(
                Reason::TopicNameInvalid,
                format!(
                    "{:?} is a point-to-point topic without a client id ({{first}}/p2p/{{client}})",
                    message.topic
                ),
            ));
        };
        if message.retain && message.payload.len() > this.config.limits.max_retained_bytes {
            return Err(Refusal::new(
                Reason::QuotaExceeded,
                "retained message larger than limits.max_retained_bytes",
            ));
        }
        let retained_room = if message.retain {
            retained::reserve(&this.tables.retained, &message, &identity)
                .map_err(|q| self.quota_refusal("retained", q.name()))?
        } else {
            None
        };
        let origin = lmq_message::Origin {
            publisher: Some(publisher),
            now_ms: mqtt::broker::now_ms(),
        };
        let (properties, body) = lmq_message::encode(&message, &queues, origin);
        let properties: Vec<(&str, &str)> =
            properties.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let sent = tokio::time::timeout(
            this.config.send_timeout(),
            send_while_busy(
                &this.producer,
                first,
                &properties,
                body,
                &message.topic,
                on_queued,
            ),
        )
        .await;
        if let Ok(Ok(true)) = &sent {
            this.send_metrics.record_pipelined();
        }
        let outcome = match &sent {
            Ok(Ok(_)) => SendOutcome::Ok,
            Ok(Err(_)) => SendOutcome::Failed,
            Err(_) => SendOutcome::TimedOut,
        };
        this.send_metrics.record(outcome, started.elapsed());
        match sent {
            Ok(Ok(_)) if message.retain => {
                retained::put(&this.tables.retained, &message, &identity)
                    .await
                    .map_err(|e| {
                        Refusal::new(
                            Reason::ImplementationSpecificError,
                            format!("retained message not stored: {e}"),
                        )
                    })?;
                drop(retained_room);
                Ok(Reason::Success)
            }
            Ok(Ok(_)) => Ok(Reason::Success),
            Ok(Err(e)) => {
                warn!(topic = %message.topic, error = %e, "RocketMQ send failed");
                Err(Refusal::new(
                    Reason::ImplementationSpecificError,
                    format!("RocketMQ did not store the message: {e}"),
                ))
            }
            Err(_) => {
                warn!(topic = %message.topic, "RocketMQ send timed out");
                Err(Refusal::new(
                    Reason::ImplementationSpecificError,
                    "RocketMQ did not answer in time",
                ))
            }
        }
    }
}

/// Response code of a broker that refused a message unprocessed (flow control).
const SYSTEM_BUSY: i32 = 2;

/// Sends, retrying while the broker answers "busy": it refused the message before storing
/// it, so a retry cannot duplicate it (the Java producer retries it too). The caller's
/// timeout bounds the retries. A send that was queued in order, with the next message of
/// its topic maybe sent behind it, is not retried: that one would overtake it.
async fn send_while_busy(
    producer: &Producer,
    topic: &str,
    properties: &[(&str, &str)],
    body: bytes::Bytes,
    order_key: &str,
    mut on_queued: OnQueued,
) -> Result<bool, crate::Error> {
    let mut backoff = std::time::Duration::from_millis(20);
    loop {
        match producer
            .send_queued(topic, properties, body.clone(), order_key, &mut on_queued)
            .await
        {
            Err(crate::Error::Remoting { code, .. })
                if code == SYSTEM_BUSY && !on_queued.fired() =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
            }
            other => return other.map(|_| on_queued.fired()),
        }
    }
}

impl Broker for Bridge {
    type Session = BridgeSession;

    fn connect(
        &self,
        connect: &Connect,
        peer: &Peer,
    ) -> BoxFuture<'static, Result<Accepted<BridgeSession>, Refusal>> {
        let result = mqtt::cloud_topic::check_client_id(
            &connect.client_id,
            self.inner.config.limits.max_client_id_length,
        )
        .map_err(|e| Refusal::new(Reason::ClientIdentifierNotValid, format!("client id {e}")))
        .and_then(|()| auth::authenticate(&self.inner.config.auth, connect, peer));
        let client_id = connect.client_id.clone();
        let clean_start = connect.clean_start;
        let will = connect.will.clone();
        let opening = Opening {
            persistent: connect.session_expiry_interval > 0,
            expiry_secs: connect.session_expiry_interval,
            window: self.inner.config.limits.max_inflight,
            has_will: false,
        };
        let bridge = self.clone();
        Box::pin(async move {
            let identity: Arc<str> = Arc::from(result?.as_str());
            let tables = bridge.tables();
            if opening.persistent
                && session_store::load_local(&tables.sessions, &client_id).is_none()
                && let Err(q) = tables.sessions.reserve(&client_id, 0, None)
            {
                return Err(bridge.quota_refusal("sessions", q.name()));
            }
            let kept = match &will {
                Some(will) => {
                    will_store::put(&tables.wills, &client_id, bridge.instance(), will).await
                }
                // A new connection replaces the session's will: an older copy (a taken-over
                // connection's, maybe on another bridge) must not be published later.
                None => will_store::delete(&tables.wills, &client_id, None).await,
            };
            match kept {
                Ok(()) => {}
                Err(Error::QuotaExceeded(table, q)) => {
                    return Err(bridge.quota_refusal(table, q.name()));
                }
                Err(e) => {
                    warn!(client = %client_id, error = %e, "will table not updated; only this bridge holds the will");
                }
            }
            let opening = Opening {
                has_will: will.is_some(),
                ..opening
            };
            let (session, session_present, deliveries) =
                BridgeSession::open(bridge, identity, client_id.clone(), clean_start, opening)
                    .await
                    .map_err(|e| {
                        Refusal::new(
                            Reason::ServerUnavailable,
                            format!("session not opened: {e}"),
                        )
                    })?;
            Ok(Accepted {
                session,
                session_present,
                client_id,
                deliveries: Some(deliveries),
            })
        })
    }

    fn validate_topic(&self, topic: &str) -> Result<(), Refusal> {
        mqtt::cloud_topic::check_topic(topic)
            .map_err(|e| Refusal::new(Reason::TopicNameInvalid, format!("topic {e}")))
    }

    fn publish_will(&self, client_id: &str, message: Message) -> BoxFuture<'static, ()> {
        let bridge = self.clone();
        let identity: Arc<str> = Arc::from(client_id);
        Box::pin(async move {
            if let Err(refusal) = bridge.store(identity.clone(), message).await {
                warn!(client = %identity, %refusal, "delayed will not published");
            }
        })
    }
}
