//! What every connection of the bridge shares, and both data paths take: the
//! configuration, the name servers and the producer, the kvconfig meta, the state tables
//! and the wildcard registrations (`meta/`), the route cache, and the figures the metrics
//! endpoint reads (RocketMQ sends, quota refusals, persistent sessions connected here).
//!
//! [`Bridge`] is the bottom of the bridge's own modules: the write path (`publish/`)
//! adds [`Bridge::store`] to it, the read path (`subscribe/`) opens sessions on it, and
//! `connect.rs` makes it the `mqtt::broker::Broker` that the MQTT connections drive. It
//! refers to neither path.
//!
//! - [`send_metrics`]: RocketMQ send latency and outcomes.

pub mod send_metrics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mqtt::broker::Refusal;
use mqtt::packet::Reason;

use crate::config::Config;
use crate::error::Error;
use crate::meta::wildcards::Wildcards;
use crate::meta::{Meta, Tables, sessions};
use crate::rocketmq::{NameServer, Producer};

pub use send_metrics::{SendMetrics, SendOutcome, SendValues};

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
        let table = &self.inner.tables.sessions;
        Ok(local
            .into_iter()
            .filter(|(client_id, owner)| {
                sessions::load_local(table, client_id)
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

    /// Registration, leases and pruning of wildcard filters (`meta/wildcards.rs`).
    pub fn wildcards(&self) -> &Wildcards {
        &self.inner.wildcards
    }
}
