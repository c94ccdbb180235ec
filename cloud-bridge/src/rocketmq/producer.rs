//! The producer: sends a message to a first-level topic, choosing the queue itself.
//!
//! - Routes come from the name servers and are cached per topic. A cached route is used
//!   for `route_ttl`; then one caller refreshes it while the others keep using the old
//!   one, and a failed refresh keeps the old one. A send that fails marks the route stale.
//! - The queue is chosen by a stable hash (FNV-1a) of the order key over the writable
//!   queues (sorted by broker name, then queue id, as the Java client lists them), so the
//!   messages of one MQTT topic stay in one queue, in order, while the route is stable.
//! - A message gets a `UNIQ_KEY` when it has none.
//! - A send is retried on another broker only when it certainly did not reach a broker
//!   (the connection could not be opened). After a timeout or a broken connection the
//!   broker may have stored it: the error is returned and the caller decides, so nothing
//!   is ever sent twice silently.
//! - [`Producer::send_queued`] tells its caller when the send request is queued on the
//!   broker connection, if that broker appends a connection's sends in arrival order
//!   (it has one send thread, `sendMessageThreadPoolNums=1`, read from its
//!   configuration and cached for [`BROKER_CONFIG_TTL`]): the caller may then send the
//!   next message of the same order key without waiting for the answer, and both land in
//!   the queue in that order. Requests on one connection are written in the order they
//!   are queued, and a broker decodes them in that order; with more send threads they
//!   race for the commit log. Measured on 5.3.3 (cloud-bridge/tests/publish.rs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::broker::{SendRequest, SendResult};
use super::client::Client;
use super::connection::OnQueued;
use super::message::{property, push_property, push_unique_id};
use super::namesrv::NameServer;
use super::route::TopicRoute;
use crate::Error;

/// How long a broker's send-thread count is trusted before it is read again.
pub const BROKER_CONFIG_TTL: Duration = Duration::from_secs(60);

/// When one order key's sends may be pipelined (config `rocketmq.pipeline_sends`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineSends {
    /// When the broker's configuration says it has one send thread.
    #[default]
    Auto,
    /// Always (for brokers known to have one send thread whose configuration cannot be
    /// read; with more threads, one topic's messages can be stored out of order).
    Always,
    /// Never: one send at a time per order key.
    Never,
}

/// Settings of a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// The producer group announced to brokers.
    pub group: String,
    /// Deadline of one send request.
    pub send_timeout: Duration,
    /// How long a topic route is used before it is refreshed.
    pub route_ttl: Duration,
    /// When one order key's sends may be pipelined.
    pub pipeline: PipelineSends,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            group: "cloud-bridge".to_owned(),
            send_timeout: Duration::from_secs(3),
            route_ttl: Duration::from_secs(30),
            pipeline: PipelineSends::Auto,
        }
    }
}

/// Sends messages to topics, with cached routes.
#[derive(Debug)]
pub struct Producer {
    namesrv: Arc<NameServer>,
    config: ProducerConfig,
    topics: Mutex<HashMap<String, Arc<TopicEntry>>>,
    /// Per broker address: whether it appends one connection's sends in order, and when
    /// that was read.
    in_order: Mutex<HashMap<Arc<str>, (Instant, bool)>>,
}

#[derive(Debug, Default)]
struct TopicEntry {
    route: Mutex<Option<Arc<PublishRoute>>>,
    refreshing: tokio::sync::Mutex<()>,
}

/// The writable queues of a topic, as of `fetched`.
#[derive(Debug)]
struct PublishRoute {
    queues: Vec<WriteQueue>,
    fetched: Instant,
    /// Set when a send through this route failed: refresh before the TTL.
    stale: AtomicBool,
}

#[derive(Debug)]
struct WriteQueue {
    broker_name: Arc<str>,
    addr: Arc<str>,
    queue_id: i32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// FNV-1a, 64 bits: stable across processes and Rust versions.
fn fnv1a(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The writable queues of a route, in the Java client's order.
fn write_queues(route: &TopicRoute) -> Vec<WriteQueue> {
    let mut datas: Vec<_> = route.queues.iter().filter(|q| q.is_writable()).collect();
    datas.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
    let mut queues = Vec::new();
    for data in datas {
        let Some(addr) = route
            .broker(&data.broker_name)
            .and_then(|b| b.master_addr())
        else {
            continue;
        };
        let broker_name: Arc<str> = Arc::from(data.broker_name.as_str());
        let addr: Arc<str> = Arc::from(addr);
        for queue_id in 0..data.write_queue_nums {
            queues.push(WriteQueue {
                broker_name: broker_name.clone(),
                addr: addr.clone(),
                queue_id: queue_id as i32,
            });
        }
    }
    queues
}

impl Producer {
    /// A producer that finds routes through `namesrv`.
    pub fn new(namesrv: Arc<NameServer>, config: ProducerConfig) -> Self {
        Self {
            namesrv,
            config,
            topics: Mutex::new(HashMap::new()),
            in_order: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the broker at `addr` appends the sends of one connection in the order they
    /// arrive: it runs one send thread. Unknown (unreadable config) counts as no.
    async fn appends_in_order(&self, addr: &Arc<str>) -> bool {
        match self.config.pipeline {
            PipelineSends::Always => return true,
            PipelineSends::Never => return false,
            PipelineSends::Auto => {}
        }
        if let Some((at, yes)) = lock(&self.in_order).get(addr)
            && at.elapsed() < BROKER_CONFIG_TTL
        {
            return *yes;
        }
        let yes = match self
            .client()
            .broker(addr)
            .with_timeout(self.config.send_timeout)
            .config()
            .await
        {
            Ok(config) => config
                .get("sendMessageThreadPoolNums")
                .is_some_and(|n| n.as_str() == "1"),
            Err(e) => {
                tracing::debug!(broker = %addr, error = %e, "broker configuration not read");
                false
            }
        };
        lock(&self.in_order).insert(addr.clone(), (Instant::now(), yes));
        yes
    }

    /// The client used for sending.
    pub fn client(&self) -> &Client {
        self.namesrv.client()
    }

    /// Sends `body` with `properties` to `topic` (a first-level topic), into the queue
    /// chosen by `order_key`. Adds a `UNIQ_KEY` unless `properties` has one. See the
    /// module doc for retries.
    pub async fn send(
        &self,
        topic: &str,
        properties: &[(&str, &str)],
        body: Bytes,
        order_key: &str,
    ) -> Result<SendResult, Error> {
        self.send_queued(topic, properties, body, order_key, &mut OnQueued::default())
            .await
    }

    /// [`Producer::send`], firing `on_queued` as soon as the request is queued on the
    /// broker connection when that broker appends in arrival order (see the module doc).
    /// Otherwise `on_queued` is not fired: the caller learns the send ended when this
    /// returns.
    pub async fn send_queued(
        &self,
        topic: &str,
        properties: &[(&str, &str)],
        body: Bytes,
        order_key: &str,
        on_queued: &mut OnQueued,
    ) -> Result<SendResult, Error> {
        let mut encoded = String::with_capacity(
            properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
                + 44,
        );
        for (name, value) in properties {
            push_property(&mut encoded, name, value)?;
        }
        if !properties.iter().any(|(k, _)| *k == property::UNIQ_KEY) {
            encoded.push_str(property::UNIQ_KEY);
            encoded.push('\u{1}');
            push_unique_id(&mut encoded);
            encoded.push('\u{2}');
        }
        let entry = self.entry(topic);
        let route = self.route(topic, &entry).await?;
        let start = (fnv1a(order_key.as_bytes()) % route.queues.len() as u64) as usize;
        // Brokers that could not be reached (allocated only on that rare path).
        let mut tried: Vec<&str> = Vec::new();
        let mut last_error = None;
        for i in 0..route.queues.len() {
            let queue = &route.queues[(start + i) % route.queues.len()];
            if tried.contains(&&*queue.broker_name) {
                continue;
            }
            let request = SendRequest {
                producer_group: &self.config.group,
                topic,
                queue_id: queue.queue_id,
                properties: &encoded,
                body: body.clone(),
                flag: 0,
                broker_name: Some(&queue.broker_name),
            };
            let broker = self
                .client()
                .broker(&queue.addr)
                .with_timeout(self.config.send_timeout);
            // The previous send of this order key went to another broker (the route
            // changed): its answer first, or the two could be stored in either order.
            on_queued.wait_unless_on(&queue.addr).await;
            let sent = if on_queued.is_wanted() && self.appends_in_order(&queue.addr).await {
                broker.send_queued(&request, on_queued).await
            } else {
                broker.send(&request).await
            };
            match sent {
                Ok(result) => return Ok(result),
                Err(e @ Error::Connect { .. }) => {
                    tried.push(&queue.broker_name);
                    tracing::warn!(topic, broker = %queue.broker_name, error = %e,
                        "broker unreachable, sending to the next one");
                    Self::mark_stale(&entry);
                    last_error = Some(e);
                }
                Err(e) => {
                    if !matches!(
                        e,
                        Error::FlushDiskTimeout { .. }
                            | Error::FlushSlaveTimeout { .. }
                            | Error::SlaveNotAvailable { .. }
                    ) {
                        Self::mark_stale(&entry);
                    }
                    return Err(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::RouteNotFound(topic.to_owned())))
    }

    /// Forgets the cached route of `topic` (e.g. after creating the topic elsewhere).
    pub fn invalidate(&self, topic: &str) {
        lock(&self.topics).remove(topic);
    }

    fn entry(&self, topic: &str) -> Arc<TopicEntry> {
        let mut topics = lock(&self.topics);
        match topics.get(topic) {
            Some(entry) => entry.clone(),
            None => topics.entry(topic.to_owned()).or_default().clone(),
        }
    }

    fn mark_stale(entry: &TopicEntry) {
        if let Some(route) = lock(&entry.route).as_ref() {
            route.stale.store(true, Ordering::Relaxed);
        }
    }

    /// The topic's route: cached, or fetched (one caller at a time per topic).
    async fn route(&self, topic: &str, entry: &TopicEntry) -> Result<Arc<PublishRoute>, Error> {
        let cached = lock(&entry.route).clone();
        if let Some(route) = &cached {
            let stale = route.stale.load(Ordering::Relaxed);
            if !stale && route.fetched.elapsed() < self.config.route_ttl {
                return Ok(route.clone());
            }
            // Stale: one caller refreshes, the others go on with the old route.
            let Ok(_refreshing) = entry.refreshing.try_lock() else {
                return Ok(route.clone());
            };
            return match self.fetch(topic, entry).await {
                Ok(fresh) => Ok(fresh),
                Err(e) => {
                    tracing::warn!(topic, error = %e, "route refresh failed, keeping the old route");
                    Ok(route.clone())
                }
            };
        }
        let _refreshing = entry.refreshing.lock().await;
        if let Some(route) = lock(&entry.route).clone() {
            return Ok(route);
        }
        self.fetch(topic, entry).await
    }

    async fn fetch(&self, topic: &str, entry: &TopicEntry) -> Result<Arc<PublishRoute>, Error> {
        let route = self.namesrv.topic_route(topic).await?;
        let queues = write_queues(&route);
        if queues.is_empty() {
            return Err(Error::RouteNotFound(topic.to_owned()));
        }
        let route = Arc::new(PublishRoute {
            queues,
            fetched: Instant::now(),
            stale: AtomicBool::new(false),
        });
        *lock(&entry.route) = Some(route.clone());
        Ok(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rocketmq::route::{BrokerData, QueueData};

    #[test]
    fn fnv1a_is_the_reference_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn write_queues_follow_java_order_and_skip_unwritable() {
        let broker = |name: &str, master: bool| BrokerData {
            cluster: "c".into(),
            broker_name: name.into(),
            broker_addrs: [(if master { 0 } else { 1 }, format!("{name}:1"))].into(),
        };
        let queues = |name: &str, n, perm| QueueData {
            broker_name: name.into(),
            read_queue_nums: n,
            write_queue_nums: n,
            perm,
            topic_sys_flag: 0,
        };
        let route = TopicRoute {
            brokers: vec![broker("b", true), broker("a", true), broker("c", false)],
            queues: vec![
                queues("b", 2, 6),
                queues("a", 1, 6),
                queues("c", 4, 6),
                queues("d", 1, 4),
            ],
        };
        let got: Vec<(String, String, i32)> = write_queues(&route)
            .iter()
            .map(|q| (q.broker_name.to_string(), q.addr.to_string(), q.queue_id))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), "a:1".into(), 0),
                ("b".into(), "b:1".into(), 0),
                ("b".into(), "b:1".into(), 1),
            ]
        );
    }
}
