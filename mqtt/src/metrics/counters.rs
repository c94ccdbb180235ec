//! Connection and publish counters of one server (all its listeners), atomics updated by
//! the accept loop and the connection state machine, read at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::DescriptorEncoder;
use serde::{Deserialize, Serialize};

use super::encode;
use crate::packet::QoS;

/// The live counters. Shared by the listeners and connections of one server.
#[derive(Debug, Default)]
pub struct ServerCounters {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    clients: AtomicU64,
    received: [AtomicU64; 3],
    sent: [AtomicU64; 3],
    publish_refused: AtomicU64,
    budget_waits: AtomicU64,
    subscribes: AtomicU64,
    unsubscribes: AtomicU64,
    throttled: [AtomicU64; 2],
    discarded_too_large: AtomicU64,
    malformed: AtomicU64,
    wills_held: AtomicU64,
    wills_held_bytes: AtomicU64,
    wills_not_held: AtomicU64,
    wills_dropped: AtomicU64,
}

/// Why a socket was closed at accept, besides `max_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Its source address had `max_connections_per_address` open.
    PerAddress = 0,
    /// Its source address opened sockets faster than the accept rate.
    Rate = 1,
}

/// Keeps a connection counted as open until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    counters: Arc<ServerCounters>,
    gauge: Gauge,
}

#[derive(Debug, Clone, Copy)]
enum Gauge {
    Open,
    Clients,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let g = match self.gauge {
            Gauge::Open => &self.counters.open,
            Gauge::Clients => &self.counters.clients,
        };
        g.fetch_sub(1, Ordering::Relaxed);
    }
}

fn qos_index(qos: QoS) -> usize {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl ServerCounters {
    /// A socket was accepted: counted, and open until the guard drops.
    pub fn accepted(self: &Arc<Self>) -> OpenConnection {
        inc(&self.accepted);
        inc(&self.open);
        OpenConnection {
            counters: self.clone(),
            gauge: Gauge::Open,
        }
    }

    /// A socket was closed at once because of `max_connections`.
    pub fn refused(&self) {
        inc(&self.refused);
    }

    /// A client got its CONNACK: connected until the guard drops.
    pub fn client_connected(self: &Arc<Self>) -> OpenConnection {
        inc(&self.clients);
        OpenConnection {
            counters: self.clone(),
            gauge: Gauge::Clients,
        }
    }

    /// A PUBLISH packet came in from a client.
    pub fn publish_received(&self, qos: QoS) {
        inc(&self.received[qos_index(qos)]);
    }

    /// A PUBLISH packet went out to a client.
    pub fn publish_sent(&self, qos: QoS) {
        inc(&self.sent[qos_index(qos)]);
    }

    /// The backend refused to store a publish.
    pub fn publish_refused(&self) {
        inc(&self.publish_refused);
    }

    /// A publish waited for room in the server's store budget (its connection stopped
    /// reading meanwhile).
    pub fn publish_waited_for_budget(&self) {
        inc(&self.budget_waits);
    }

    /// A SUBSCRIBE packet was answered.
    pub fn subscribed(&self) {
        inc(&self.subscribes);
    }

    /// An UNSUBSCRIBE packet was answered.
    pub fn unsubscribed(&self) {
        inc(&self.unsubscribes);
    }

    /// A socket was closed at accept by a per-address bound.
    pub fn throttled(&self, why: Throttle) {
        inc(&self.throttled[why as usize]);
    }

    /// A message larger than its subscriber's Maximum Packet Size was not sent to it.
    pub fn discarded_too_large(&self) {
        inc(&self.discarded_too_large);
    }

    /// A connection was closed for a malformed packet or a protocol error.
    pub fn malformed(&self) {
        inc(&self.malformed);
    }

    /// Sets the delayed wills held now (count, bytes).
    pub fn set_wills_held(&self, count: usize, bytes: usize) {
        self.wills_held.store(count as u64, Ordering::Relaxed);
        self.wills_held_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// A delayed will did not fit in the bound of wills held and was published at once.
    pub fn will_not_held(&self) {
        inc(&self.wills_not_held);
    }

    /// A will past the bound of wills held found no room in the store budget: dropped.
    pub fn will_dropped(&self) {
        inc(&self.wills_dropped);
    }

    /// A snapshot.
    pub fn values(&self) -> ServerCounterValues {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerCounterValues {
            connections: get(&self.open),
            connections_accepted: get(&self.accepted),
            connections_refused: get(&self.refused),
            clients_connected: get(&self.clients),
            publish_received: self.received.each_ref().map(get),
            publish_sent: self.sent.each_ref().map(get),
            publish_refused: get(&self.publish_refused),
            publish_budget_waits: get(&self.budget_waits),
            subscribe_requests: get(&self.subscribes),
            unsubscribe_requests: get(&self.unsubscribes),
            connections_throttled: self.throttled.each_ref().map(get),
            publish_discarded_too_large: get(&self.discarded_too_large),
            malformed_packets: get(&self.malformed),
            wills_held: get(&self.wills_held),
            wills_held_bytes: get(&self.wills_held_bytes),
            wills_not_held: get(&self.wills_not_held),
            wills_dropped: get(&self.wills_dropped),
        }
    }
}

/// A snapshot of [`ServerCounters`] (what `status` commands show).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCounterValues {
    /// Sockets open now (TCP accepted, before and after CONNECT).
    pub connections: u64,
    /// Sockets accepted since start.
    pub connections_accepted: u64,
    /// Sockets closed at accept because `max_connections` were open.
    pub connections_refused: u64,
    /// Clients connected now (CONNACK sent).
    pub clients_connected: u64,
    /// PUBLISH packets received from clients, by QoS 0, 1, 2.
    pub publish_received: [u64; 3],
    /// PUBLISH packets sent to clients, by QoS 0, 1, 2.
    pub publish_sent: [u64; 3],
    /// Publishes the backend refused (journal full, RocketMQ failed, not authorised).
    pub publish_refused: u64,
    /// Publishes that waited for room in the server-wide store budget
    /// (`limits.max_storing_bytes`).
    #[serde(default)]
    pub publish_budget_waits: u64,
    /// SUBSCRIBE packets answered.
    pub subscribe_requests: u64,
    /// UNSUBSCRIBE packets answered.
    pub unsubscribe_requests: u64,
    /// Sockets closed at accept by a per-address bound: [per address, rate].
    #[serde(default)]
    pub connections_throttled: [u64; 2],
    /// Messages not sent to a subscriber because they exceed its Maximum Packet Size.
    #[serde(default)]
    pub publish_discarded_too_large: u64,
    /// Connections closed for a malformed packet or a protocol error.
    #[serde(default)]
    pub malformed_packets: u64,
    /// Delayed wills held now.
    #[serde(default)]
    pub wills_held: u64,
    /// Their bytes (topic + payload).
    #[serde(default)]
    pub wills_held_bytes: u64,
    /// Delayed wills not held because the bound of wills held was reached (published at
    /// once, or dropped: see `wills_dropped`).
    #[serde(default)]
    pub wills_not_held: u64,
    /// Of those, the ones dropped: the store budget had no room for them at once.
    #[serde(default)]
    pub wills_dropped: u64,
}

const QOS_LABELS: [&str; 3] = ["0", "1", "2"];

impl ServerCounterValues {
    /// Writes the `connections`, `clients_connected`, `publish_*`, `subscribe_requests`
    /// and `unsubscribe_requests` families (names prefixed by the registry).
    pub fn encode(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode::gauge(
            e,
            "connections",
            "Client sockets open now",
            self.connections,
        )?;
        encode::counter(
            e,
            "connections_accepted",
            "Client sockets accepted",
            self.connections_accepted,
        )?;
        encode::counter(
            e,
            "connections_refused",
            "Client sockets closed at accept because max_connections were open",
            self.connections_refused,
        )?;
        encode::gauge(
            e,
            "clients_connected",
            "MQTT clients connected now (CONNACK sent)",
            self.clients_connected,
        )?;
        let by_qos = |v: &[u64; 3]| {
            QOS_LABELS
                .iter()
                .zip(v)
                .map(|(q, n)| ([("qos", *q)], *n))
                .collect::<Vec<_>>()
        };
        encode::counter_family(
            e,
            "publish_received",
            "PUBLISH packets received from clients",
            &by_qos(&self.publish_received),
        )?;
        encode::counter_family(
            e,
            "publish_sent",
            "PUBLISH packets sent to clients",
            &by_qos(&self.publish_sent),
        )?;
        encode::counter(
            e,
            "publish_refused",
            "Publishes the storage refused (answered with a reason code or a close)",
            self.publish_refused,
        )?;
        encode::counter(
            e,
            "publish_budget_waits",
            "Publishes that waited for room in the server-wide store budget (limits.max_storing_bytes)",
            self.publish_budget_waits,
        )?;
        encode::counter(
            e,
            "subscribe_requests",
            "SUBSCRIBE packets answered",
            self.subscribe_requests,
        )?;
        encode::counter(
            e,
            "unsubscribe_requests",
            "UNSUBSCRIBE packets answered",
            self.unsubscribe_requests,
        )?;
        encode::counter_family(
            e,
            "connections_throttled",
            "Client sockets closed at accept by a per-address bound",
            &[
                ([("reason", "per_address")], self.connections_throttled[0]),
                ([("reason", "rate")], self.connections_throttled[1]),
            ],
        )?;
        encode::counter(
            e,
            "publish_discarded_too_large",
            "Messages not sent to a subscriber because they exceed its Maximum Packet Size",
            self.publish_discarded_too_large,
        )?;
        encode::counter(
            e,
            "malformed_packets",
            "Connections closed for a malformed packet or a protocol error",
            self.malformed_packets,
        )?;
        encode::gauge(e, "wills_held", "Delayed wills held now", self.wills_held)?;
        encode::gauge(
            e,
            "wills_held_bytes",
            "Bytes (topic + payload) of the delayed wills held now",
            self.wills_held_bytes,
        )?;
        encode::counter(
            e,
            "wills_not_held",
            "Delayed wills not held because the bound of wills held was reached (published at once or dropped)",
            self.wills_not_held,
        )?;
        encode::counter(
            e,
            "wills_dropped",
            "Delayed wills dropped: not held, and no room in the store budget to publish them at once",
            self.wills_dropped,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_keep_gauges_exact() {
        let c = Arc::new(ServerCounters::default());
        let a = c.accepted();
        let b = c.accepted();
        let client = c.client_connected();
        c.refused();
        c.publish_received(QoS::AtLeastOnce);
        c.publish_sent(QoS::ExactlyOnce);
        let v = c.values();
        assert_eq!((v.connections, v.connections_accepted), (2, 2));
        assert_eq!((v.clients_connected, v.connections_refused), (1, 1));
        assert_eq!(v.publish_received, [0, 1, 0]);
        assert_eq!(v.publish_sent, [0, 0, 1]);
        drop((a, client));
        let v = c.values();
        assert_eq!((v.connections, v.clients_connected), (1, 0));
        drop(b);
        assert_eq!(c.values().connections, 0);
        assert_eq!(c.values().connections_accepted, 2);
    }
}
