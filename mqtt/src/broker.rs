//! The seam between MQTT protocol handling and storage.
//!
//! The connection state machine (`connection.rs`) is the same for the edge agent and the
//! cloud bridge; what differs is where messages go. A storage backend implements [`Broker`]
//! (accepting or refusing a CONNECT) and [`Session`] (one connected client's publishes,
//! subscriptions and deliveries).
//!
//! Contract: the future returned by [`Session::publish`] completes only once the message is
//! durably stored by the backend; the connection sends PUBACK or PUBREC after it completes
//! with `Ok`, and never before. Futures are `'static` so the connection can keep several in
//! flight while it goes on reading.

use std::net::SocketAddr;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::packet::{Connect, Message, Reason, SubscribeOutcome, SubscriptionRequest};

/// The transport-level identity of a peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Remote socket address.
    pub addr: SocketAddr,
    /// Name of the listener the client came through (from configuration).
    pub listener: String,
    /// The verified client certificate's identity (subject common name, or the first DNS
    /// subject alternative name), when mutual TLS verified one.
    pub tls_identity: Option<String>,
}

/// A refusal with a reason code and a text for the log and for MQTT 5 reason strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The MQTT 5 reason code (mapped to the 3.1.1 return code where one exists).
    pub reason: Reason,
    /// Why, for people.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (reason 0x{:02X})", self.message, self.reason as u8)
    }
}

/// A message the backend hands to the connection for delivery to the client.
///
/// The message is boxed: a session's delivery channel allocates its slots up front, and
/// idle sessions are the common case.
#[derive(Debug)]
pub struct Delivery {
    /// The message; `qos` is already min(message QoS, granted QoS).
    pub message: Box<Message>,
    /// Set on a retransmission of a message sent before.
    pub dup: bool,
    /// The backend's handle, given back in [`Session::acked`].
    pub tag: u64,
    /// When the message expires (MQTT 5 message expiry), Unix milliseconds. The
    /// connection does not send an expired message (it reports it as acked), and sends
    /// the others with the expiry interval reduced to the time left (MQTT 5 §3.3.2.3.3).
    pub expires_ms: Option<i64>,
    /// The message's bytes in its subscriber's queue budget, if the backend keeps one:
    /// given back when the connection has written the message (the delivery is dropped).
    pub share: Option<crate::budget::BudgetShare>,
    /// MQTT 5 Subscription Identifiers of the client's subscriptions this message
    /// matched (3.3.4-3/4); empty when none had one.
    pub subscription_ids: Vec<u32>,
}

/// Now, in Unix milliseconds (the clock of [`Delivery::expires_ms`]).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Sets `message`'s expiry interval to the whole seconds (rounded up) left until
/// `expires_ms`; `false` (message untouched) if it has expired by `now_ms`.
pub fn apply_expiry(message: &mut Message, expires_ms: Option<i64>, now_ms: i64) -> bool {
    let Some(at) = expires_ms else {
        return true;
    };
    let left = at.saturating_sub(now_ms);
    if left <= 0 {
        return false;
    }
    let secs = left.saturating_add(999) / 1000;
    message.properties.message_expiry_interval = Some(u32::try_from(secs).unwrap_or(u32::MAX));
    true
}

/// An accepted CONNECT.
#[derive(Debug)]
pub struct Accepted<S> {
    /// The backend's per-connection state.
    pub session: S,
    /// Whether an existing session was resumed.
    pub session_present: bool,
    /// The client identifier to use (differs from the CONNECT's when the server assigned one).
    pub client_id: String,
    /// Messages for the client, if the backend delivers any.
    pub deliveries: Option<mpsc::Receiver<Delivery>>,
}

/// How a connection ended, for [`Session::closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT (reason 0, or 0x04 "with will").
    Normal {
        /// The session expiry interval the client set in its MQTT 5 DISCONNECT, if it
        /// set one: it replaces the CONNECT's. Never a change from 0 to non-0 (the
        /// connection treats that as a protocol error, closed as `Abnormal`).
        session_expiry: Option<u32>,
    },
    /// Anything else: the will, if any, has been handed to the connection's will logic.
    Abnormal,
    /// A newer connection with the same client identifier took the session over.
    TakenOver,
}

/// A storage backend: decides on CONNECTs.
pub trait Broker: Send + Sync + 'static {
    /// Per-connection state.
    type Session: Session;

    /// Authenticates and authorizes a CONNECT, and opens or resumes its session.
    fn connect(
        &self,
        connect: &Connect,
        peer: &Peer,
    ) -> BoxFuture<'static, Result<Accepted<Self::Session>, Refusal>>;

    /// Backend-specific topic rules beyond MQTT's (for example, the bridge refuses `%`).
    /// A refused topic closes the connection.
    fn validate_topic(&self, _topic: &str) -> Result<(), Refusal> {
        Ok(())
    }

    /// Publishes a will message on behalf of a client that is gone (no session left).
    fn publish_will(&self, client_id: &str, message: Message) -> BoxFuture<'static, ()>;
}

/// One connected client's view of the backend.
pub trait Session: Send + 'static {
    /// Stores a publish; completes when it is durably stored (Ok carries the reason for
    /// the ack: `Success` or `NoMatchingSubscribers`).
    fn publish(&self, message: Message) -> BoxFuture<'static, Result<Reason, Refusal>>;

    /// Applies subscriptions; one outcome per request, in order.
    fn subscribe(
        &mut self,
        requests: Vec<SubscriptionRequest>,
    ) -> BoxFuture<'static, Vec<SubscribeOutcome>>;

    /// Removes subscriptions; one reason per filter, in order.
    fn unsubscribe(&mut self, filters: Vec<String>) -> BoxFuture<'static, Vec<Reason>>;

    /// How long the SUBACK of the SUBSCRIBE just carried out by [`Session::subscribe`] is to
    /// be held back, while the connection goes on: its subscriptions are in effect, but
    /// another server may not see them yet (the bridge's newly registered wildcards).
    /// Called once after each `subscribe` completes. Default: not held.
    fn take_suback_delay(&mut self) -> Option<std::time::Duration> {
        None
    }

    /// The client acknowledged a delivery (PUBACK, PUBCOMP, or written at QoS 0).
    fn acked(&mut self, tag: u64);

    /// The connection ended.
    fn closed(self, how: Close) -> BoxFuture<'static, ()>;
}
