//! One client connection, from CONNECT to close, shared by the edge agent and the cloud
//! bridge: the I/O driver of [`SessionCore`] (`crate::protocol`), which holds the protocol
//! state (packet ids, the in-flight and QoS 2 tables, Receive Maximum, topic aliases, the
//! keepalive deadline) without I/O. This module owns the socket, the backend's store
//! futures, the store budget, wills and timers, and carries out the core's [`Action`]s.
//!
//! Invariants:
//! - nothing but CONNECT is accepted first, and it must come within `connect_timeout`;
//! - a QoS 1/2 publish is acknowledged (PUBACK/PUBREC) only after the backend's store
//!   future completed with `Ok`; a refused store is answered with an MQTT 5 reason code,
//!   or, under 3.1.1 (which has none), by closing the connection so the client retries;
//! - at most `publish_pipeline` stores are in flight per connection, and acks go out in
//!   publish order; while the pipeline is full the socket is not read (back-pressure);
//! - a store starts only once its publish's bytes fit in the server-wide
//!   [`StoreBudget`]; a connection whose publish waits for room reads nothing meanwhile,
//!   so memory held by publishes being stored is bounded across all connections;
//! - a QoS 2 publish is stored once: a DUP retransmission of a packet id awaiting PUBREL
//!   is answered with PUBREC again and not stored twice;
//! - at most the client's receive-maximum deliveries are in flight to it;
//! - a message larger than the client's Maximum Packet Size (MQTT 5) is not sent to it:
//!   it is discarded as if delivered (acked to the backend) and counted, and the
//!   connection stays (3.1.2-25);
//! - a will's delay is at most `max_will_delay_secs`; delayed wills held are bounded in
//!   count and bytes (`registry.rs`); one past the bound is published at once if the
//!   store budget has room for it at once, else dropped (both counted);
//! - a malformed packet or a protocol error closes the connection with DISCONNECT 0x81
//!   or 0x82 (MQTT 5), a CONNECT in error is answered with CONNACK 0x81/0x82 (MQTT 5),
//!   and is counted;
//! - publishes read before the connection ended are stored before it closes (their acks
//!   are not sent), then the will is published when the connection ended without a
//!   normal DISCONNECT;
//! - an MQTT 5 client asking for a keepalive above `max_keepalive` (or 0, when there is
//!   a cap) is granted `max_keepalive` in CONNACK's Server Keep Alive; a 3.1.1 one asking
//!   for more is refused (CONNACK "identifier rejected"), as mosquitto does;
//! - every packet sent fits the client's Maximum Packet Size: a reason string is left
//!   out when it would not fit (3.1.2-24/25);
//! - the keepalive (1.5 × the granted interval without a packet) counts only time
//!   during which the socket is read: back-pressure is not the client's silence;
//! - an MQTT 5 DISCONNECT's session expiry interval reaches the backend
//!   (`Close::Normal`); changing it from 0 (in CONNECT) to non-0 is a protocol error
//!   (server DISCONNECT 0x82, the will is published);
//! - a SUBACK the backend holds back ([`Session::take_suback_delay`]) does not hold the
//!   connection: publishes, deliveries and PINGREQs go on meanwhile (the subscription is
//!   in effect, 3.8.4 lets deliveries precede the SUBACK); SUBACKs and UNSUBACKs still
//!   leave in the order of their requests, and at most `MAX_HELD_ACKS` (16) wait (then the
//!   socket is not read until one leaves).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::broker::{Accepted, Broker, Close, Delivery, Peer, Refusal, Session};
use crate::budget::{BudgetShare, StoreBudget};
use crate::codec::Codec;
use crate::error::Error;
use crate::metrics::ServerCounters;
use crate::packet::{ConnAckInfo, Connect, Inbound, Message, Outbound, QoS, Reason, Version};
use crate::protocol::keepalive;
use crate::protocol::{Action, Delivering, Params, SessionCore};
use crate::registry::{Registry, WillLimits};
use crate::topic;

/// Limits and timeouts of client connections.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Largest packet accepted from a client, bytes.
    pub max_packet_size: usize,
    /// Time allowed between TCP accept and CONNECT.
    pub connect_timeout: Duration,
    /// Receive maximum advertised to MQTT 5 clients.
    pub receive_maximum: u16,
    /// Stores in flight to the backend per connection (1 keeps strict order end to end).
    pub publish_pipeline: usize,
    /// Whether retained messages are supported (advertised to MQTT 5 clients).
    pub retain_available: bool,
    /// Time a will publish may take when the connection ends.
    pub will_timeout: Duration,
    /// Most QoS 1/2 deliveries in flight to one client, whatever its receive maximum
    /// (3.1.1 clients have none): bounds what a resumed session may redeliver.
    pub max_inflight_deliveries: u16,
    /// Longest will delay honoured, seconds (a longer one is cut to this).
    pub max_will_delay_secs: u32,
    /// Delayed wills held in memory at once, and their bytes (topic + payload); a will
    /// past either is published at once instead of being held.
    pub wills: WillLimits,
    /// Longest keepalive granted, seconds; 65535 is no cap (see `protocol::keepalive`).
    pub max_keepalive: u16,
    /// Topic aliases a client may use (MQTT 5 Topic Alias Maximum in CONNACK; 0: none).
    pub topic_alias_maximum: u16,
    /// Whether CONNACK says Subscription Identifiers are available: set it only when the
    /// backend fills `Delivery::subscription_ids`.
    pub subscription_identifiers_available: bool,
    /// Whether CONNACK says shared subscriptions (`$share/...`) are available: set it only
    /// when the backend serves them.
    pub shared_subscriptions_available: bool,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            receive_maximum: 128,
            publish_pipeline: 1,
            retain_available: true,
            will_timeout: Duration::from_secs(10),
            max_inflight_deliveries: 32,
            max_will_delay_secs: 24 * 3600,
            wills: WillLimits {
                count: 10_000,
                bytes: 64 * 1024 * 1024,
            },
            max_keepalive: keepalive::NO_CAP,
            topic_alias_maximum: 10,
            subscription_identifiers_available: true,
            shared_subscriptions_available: false,
        }
    }
}

/// What a connection shares with its listener.
#[derive(Debug)]
pub struct Shared<B> {
    /// The storage backend.
    pub broker: Arc<B>,
    /// Limits.
    pub config: ConnectionConfig,
    /// Connected client identifiers.
    pub registry: Registry,
    /// Fires on server shutdown.
    pub shutdown: CancellationToken,
    /// Tracks delayed-will tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Connection and publish counters (the metrics endpoint reads them).
    pub counters: Arc<ServerCounters>,
    /// Bytes of publishes being stored, across all connections.
    pub budget: StoreBudget,
}

/// A store in flight: the backend's future with the packet id and QoS it answers (a
/// struct, not another boxed `async` block around it: one allocation fewer per publish).
struct Stored {
    pkid: u16,
    qos: QoS,
    store: BoxFuture<'static, Result<Reason, Refusal>>,
    /// The publish's bytes in the server's budget, given back when the store completes.
    _share: Option<BudgetShare>,
}

/// A publish read from the socket whose bytes do not fit in the budget yet.
struct Parked {
    pkid: u16,
    message: Message,
    share: BoxFuture<'static, Option<BudgetShare>>,
}

impl std::future::Future for Stored {
    type Output = (u16, QoS, Result<Reason, Refusal>);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let (pkid, qos) = (self.pkid, self.qos);
        self.store.poll_unpin(cx).map(|r| (pkid, qos, r))
    }
}

/// Serves one connection until it closes. Errors are the reason the connection ended.
pub async fn serve<B, IO>(io: IO, peer: Peer, shared: Arc<Shared<B>>) -> Result<(), Error>
where
    B: Broker,
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Small initial buffers: idle connections are the common case; they grow on demand
    // up to the maximum packet size.
    let mut framed = Framed::with_capacity(io, Codec::new(shared.config.max_packet_size), 512);
    let Some(connect) = read_connect(&mut framed, &shared).await? else {
        return Ok(());
    };
    let version = connect.version;
    let (connect, assigned) = match assign_client_id(connect) {
        Ok(c) => c,
        Err(refusal) => return refuse(&mut framed, refusal).await,
    };
    let granted = match keepalive::grant(version, connect.keep_alive, shared.config.max_keepalive) {
        Ok(g) => g,
        Err(reason) => {
            let why = format!(
                "keepalive {} is above the server's maximum of {}",
                connect.keep_alive, shared.config.max_keepalive
            );
            return refuse(&mut framed, Refusal::new(reason, why)).await;
        }
    };
    if let Some(will) = &connect.will {
        let check = topic::validate_name(&will.message.topic)
            .map_err(|e| Refusal::new(Reason::TopicNameInvalid, format!("will topic: {e}")))
            .and_then(|()| shared.broker.validate_topic(&will.message.topic));
        if let Err(refusal) = check {
            return refuse(&mut framed, refusal).await;
        }
    }
    let accepted = match shared.broker.connect(&connect, &peer).await {
        Ok(a) => a,
        Err(refusal) => {
            info!(peer = %peer.addr, client = %connect.client_id, %refusal, "CONNECT refused");
            return refuse(&mut framed, refusal).await;
        }
    };
    let Accepted {
        session,
        session_present,
        client_id,
        deliveries,
    } = accepted;
    let registration = shared.registry.register(&client_id);
    let info = ConnAckInfo {
        assigned_client_id: assigned.then(|| client_id.clone()),
        receive_maximum: Some(shared.config.receive_maximum),
        maximum_packet_size: u32::try_from(shared.config.max_packet_size).ok(),
        retain_available: Some(shared.config.retain_available),
        shared_subscription_available: Some(shared.config.shared_subscriptions_available),
        server_keep_alive: granted.server_keep_alive,
        topic_alias_maximum: (shared.config.topic_alias_maximum > 0)
            .then_some(shared.config.topic_alias_maximum),
        subscription_identifiers_available: Some(shared.config.subscription_identifiers_available),
        ..ConnAckInfo::default()
    };
    framed
        .send(Outbound::ConnAck {
            session_present,
            reason: Reason::Success,
            info: Box::new(info),
        })
        .await?;
    debug!(peer = %peer.addr, client = %client_id, ?version, "connected");
    let _connected = shared.counters.client_connected();

    let client_receive_maximum = connect
        .receive_maximum
        .min(shared.config.max_inflight_deliveries.max(1));
    let core = SessionCore::new(
        Params {
            version,
            client_receive_maximum,
            server_receive_maximum: shared.config.receive_maximum,
            server_topic_alias_maximum: shared.config.topic_alias_maximum,
            client_topic_alias_maximum: connect.topic_alias_maximum,
            keep_alive: granted.keep_alive,
            connect_expiry: connect.session_expiry_interval,
        },
        Instant::now().into_std(),
    );
    let mut conn = Conn {
        version,
        session,
        core,
        stores: FuturesOrdered::new(),
        pipeline: shared.config.publish_pipeline.max(1),
        budget: shared.budget.clone(),
        parked: None,
        broker: shared.broker.clone(),
        counters: shared.counters.clone(),
        held_acks: VecDeque::new(),
    };
    let ended = conn
        .run(
            &mut framed,
            deliveries,
            &registration.kicked,
            &shared.shutdown,
        )
        .await;
    // Publishes read before the connection ended are stored before it closes (a QoS 0
    // publish followed by DISCONNECT must not be lost, and the will comes after them).
    conn.finish_stores(shared.config.will_timeout).await;
    shared.registry.unregister(&client_id, registration.conn);
    let (how, publish_will, result) = match ended {
        End::Normal {
            will,
            session_expiry,
        } => (Close::Normal { session_expiry }, will, Ok(())),
        End::TakenOver => (Close::TakenOver, true, Ok(())),
        End::Abnormal(e) => (Close::Abnormal, true, e),
    };
    if let (true, Some(will)) = (publish_will, connect.will) {
        let expiry = match how {
            Close::Normal {
                session_expiry: Some(e),
            } => e,
            _ => connect.session_expiry_interval,
        };
        let delay = will
            .delay_interval
            .min(expiry)
            .min(shared.config.max_will_delay_secs);
        if delay > 0 && how != Close::TakenOver {
            let mut message = will.message;
            // Its own copy: the payload was a slice of the connection's read buffer,
            // which it would otherwise keep alive for the whole delay.
            message.payload = bytes::Bytes::copy_from_slice(&message.payload);
            let bytes = message.topic.len() + message.payload.len();
            let fut = shared.broker.publish_will(&client_id, message);
            let held = shared.registry.schedule_will(
                &client_id,
                Duration::from_secs(u64::from(delay)),
                bytes,
                shared.config.wills,
                &shared.counters,
                &shared.tracker,
                shared.shutdown.clone(),
                fut,
            );
            if let Err(now) = held {
                // Past the bound of wills held: published now if the store budget has
                // room at once (so ending connections cannot pile up wills waiting to be
                // stored), else dropped; counted either way.
                shared.counters.will_not_held();
                match shared.budget.try_take(bytes) {
                    Some(share) => {
                        debug!(client = %client_id, "delayed will published at once: too many held");
                        if tokio::time::timeout(shared.config.will_timeout, now)
                            .await
                            .is_err()
                        {
                            warn!(client = %client_id, "will publish timed out");
                        }
                        drop(share);
                    }
                    None => {
                        shared.counters.will_dropped();
                        debug!(client = %client_id, "delayed will dropped: too many held, store budget full");
                    }
                }
            }
        } else if delay == 0 {
            let stored = tokio::time::timeout(
                shared.config.will_timeout,
                conn.session.publish(will.message),
            )
            .await;
            match stored {
                Ok(Ok(_)) => debug!(client = %client_id, "will published"),
                Ok(Err(refusal)) => warn!(client = %client_id, %refusal, "will not published"),
                Err(_) => warn!(client = %client_id, "will publish timed out"),
            }
        }
    }
    conn.session.closed(how).await;
    debug!(peer = %peer.addr, client = %client_id, ?how, "closed");
    result
}

/// Waits for CONNECT. `None` when the peer went away or the server shut down first.
async fn read_connect<B: Broker, IO: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<IO, Codec>,
    shared: &Shared<B>,
) -> Result<Option<Connect>, Error> {
    let first = tokio::select! {
        r = tokio::time::timeout(shared.config.connect_timeout, framed.next()) => r,
        _ = shared.shutdown.cancelled() => return Ok(None),
    };
    match first {
        Err(_) => Err(Error::ConnectTimeout),
        Ok(None) => Ok(None),
        Ok(Some(Err(Error::UnsupportedProtocol(level)))) => {
            let _ = framed
                .send(Outbound::ConnAck {
                    session_present: false,
                    reason: Reason::UnsupportedProtocolVersion,
                    info: Box::default(),
                })
                .await;
            Err(Error::UnsupportedProtocol(level))
        }
        Ok(Some(Err(e))) => {
            shared.counters.malformed();
            // MQTT 5 4.13: a CONNECT in error may be answered with its reason code.
            if framed.codec().version() == Some(Version::V5) {
                let reason = match &e {
                    Error::Protocol(_) => Reason::ProtocolError,
                    _ => Reason::MalformedPacket,
                };
                let _ = framed
                    .send(Outbound::ConnAck {
                        session_present: false,
                        reason,
                        info: Box::new(ConnAckInfo {
                            reason_string: Some(e.to_string()),
                            ..ConnAckInfo::default()
                        }),
                    })
                    .await;
            }
            Err(e)
        }
        Ok(Some(Ok(Inbound::Connect(c)))) => Ok(Some(*c)),
        Ok(Some(Ok(_))) => Err(Error::Protocol("the first packet must be CONNECT")),
    }
}

/// Gives a client without an identifier one, where the protocol allows it.
fn assign_client_id(mut c: Connect) -> Result<(Connect, bool), Refusal> {
    if !c.client_id.is_empty() {
        return Ok((c, false));
    }
    if c.version == Version::V311 && !c.clean_start {
        return Err(Refusal::new(
            Reason::ClientIdentifierNotValid,
            "an empty client identifier needs clean session",
        ));
    }
    c.client_id = format!("auto-{:016x}", rand_id());
    Ok((c, true))
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<IO, Codec>,
    refusal: Refusal,
) -> Result<(), Error> {
    framed
        .send(Outbound::ConnAck {
            session_present: false,
            reason: refusal.reason,
            info: Box::new(ConnAckInfo {
                reason_string: Some(refusal.message),
                ..ConnAckInfo::default()
            }),
        })
        .await
}

enum End {
    Normal {
        will: bool,
        session_expiry: Option<u32>,
    },
    TakenOver,
    Abnormal(Result<(), Error>),
}

/// The I/O driver of one connection: the socket, the backend's futures and the timers
/// around the [`SessionCore`], which holds the protocol state.
struct Conn<B: Broker> {
    version: Version,
    session: B::Session,
    core: SessionCore,
    stores: FuturesOrdered<Stored>,
    pipeline: usize,
    budget: StoreBudget,
    /// A publish waiting for room in the budget; nothing is read until it has some.
    parked: Option<Parked>,
    broker: Arc<B>,
    counters: Arc<ServerCounters>,
    /// SUBACKs held back by the backend, and the UNSUBACKs queued behind them: each with
    /// the time it may leave, in request order.
    held_acks: VecDeque<(Instant, Outbound)>,
}

impl<B: Broker> Conn<B> {
    async fn run<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<IO, Codec>,
        mut deliveries: Option<mpsc::Receiver<Delivery>>,
        kicked: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> End {
        // Events that are ready at once are handled before one flush: a burst of acks
        // (and deliveries) leaves in one write instead of one write each.
        let mut streak = 0;
        loop {
            // MQTT: the server closes after 1.5 keepalive periods without a packet.
            let deadline = self.core.keepalive_deadline().map(Instant::from_std);
            let ready = if streak < MAX_UNFLUSHED {
                self.next_event(framed, &mut deliveries, deadline, kicked, shutdown)
                    .now_or_never()
            } else {
                None
            };
            let event = match ready {
                Some(event) => {
                    streak += 1;
                    if streak == BUSY_STREAK {
                        // A busy connection reads in larger chunks: fewer read syscalls
                        // per packet. Idle connections keep their small buffer.
                        let buf = framed.read_buffer_mut();
                        if buf.capacity() < BUSY_READ_BUFFER {
                            buf.reserve(BUSY_READ_BUFFER - buf.len());
                        }
                    }
                    event
                }
                None => {
                    streak = 0;
                    // A client that stops reading blocks this flush; shutdown and
                    // takeover still win.
                    let flushed = tokio::select! {
                        r = framed.flush() => r,
                        _ = shutdown.cancelled() => return End::Abnormal(Ok(())),
                        _ = kicked.cancelled() => return End::TakenOver,
                    };
                    if let Err(e) = flushed {
                        return End::Abnormal(Err(e));
                    }
                    self.next_event(framed, &mut deliveries, deadline, kicked, shutdown)
                        .await
                }
            };
            let step = match event {
                Event::Shutdown => {
                    self.disconnect(framed, Reason::ServerShuttingDown, None)
                        .await;
                    return End::Abnormal(Ok(()));
                }
                Event::Kicked => {
                    self.disconnect(framed, Reason::SessionTakenOver, None)
                        .await;
                    return End::TakenOver;
                }
                Event::Stored(pkid, qos, result) => self.stored(framed, pkid, qos, result).await,
                Event::Budget(share) => {
                    self.unpark(share);
                    Ok(Step::Continue)
                }
                Event::Packet(packet) => match packet {
                    None => return End::Abnormal(Ok(())),
                    Some(Err(e)) => {
                        let reason = match &e {
                            Error::PacketTooLarge(_) => Reason::PacketTooLarge,
                            Error::Protocol(_) => Reason::ProtocolError,
                            _ => Reason::MalformedPacket,
                        };
                        if reason != Reason::PacketTooLarge {
                            self.counters.malformed();
                        }
                        self.disconnect(framed, reason, Some(e.to_string())).await;
                        linger(framed).await;
                        return End::Abnormal(Err(e));
                    }
                    Some(Ok(p)) => {
                        if let Inbound::Publish { message, .. } = &p {
                            self.counters.publish_received(message.qos);
                        }
                        let action = self.core.packet(p, Instant::now().into_std());
                        self.perform(framed, action).await
                    }
                },
                Event::AckDue => self.release_acks(framed).await,
                Event::Delivery(Some(d)) => self.deliver(framed, d).await,
                Event::Delivery(None) => {
                    deliveries = None;
                    Ok(Step::Continue)
                }
                Event::KeepAlive => {
                    self.disconnect(framed, Reason::KeepAliveTimeout, None)
                        .await;
                    return End::Abnormal(Err(Error::KeepAliveTimeout));
                }
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Disconnect {
                    will,
                    session_expiry,
                }) => {
                    let _ = framed.flush().await;
                    return End::Normal {
                        will,
                        session_expiry,
                    };
                }
                Ok(Step::Close(refusal)) => {
                    self.disconnect(framed, refusal.reason, Some(refusal.message.clone()))
                        .await;
                    return End::Abnormal(Err(Error::Protocol("publish refused")));
                }
                Ok(Step::Violation { reason, why }) => {
                    self.counters.malformed();
                    self.disconnect(framed, reason, Some(why.to_owned())).await;
                    linger(framed).await;
                    return End::Abnormal(Err(Error::Protocol(why)));
                }
                Err(e) => return End::Abnormal(Err(e)),
            }
        }
    }

    /// Waits (at most `within`) for the stores still in flight when the connection ended.
    /// Their acks are not sent: the connection is gone, and a QoS 1/2 client resends.
    async fn finish_stores(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let stores = &mut self.stores;
            let parked = &mut self.parked;
            let next = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    share = wait_parked(parked), if parked.is_some() => Some(Ok(share)),
                    Some(stored) = stores.next(), if !stores.is_empty() => Some(Err(stored)),
                    else => None,
                }
            })
            .await;
            match next {
                Ok(None) => return,
                Ok(Some(Ok(share))) => self.unpark(share),
                Ok(Some(Err((_, _, result)))) => {
                    if result.is_err() {
                        self.counters.publish_refused();
                    }
                }
                Err(_) => {
                    warn!(
                        pending = self.stores.len() + usize::from(self.parked.is_some()),
                        "publishes still being stored when the connection closed were abandoned"
                    );
                    return;
                }
            }
        }
    }

    /// Starts the store of the parked publish, now that it has its share of the budget.
    fn unpark(&mut self, share: Option<BudgetShare>) {
        if let Some(p) = self.parked.take() {
            let qos = p.message.qos;
            let store = self.session.publish(p.message);
            self.stores.push_back(Stored {
                pkid: p.pkid,
                qos,
                store,
                _share: share,
            });
        }
    }

    /// The next thing to do. Every branch is cancel-safe, so this may be polled once
    /// (`now_or_never`) and dropped.
    async fn next_event<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<IO, Codec>,
        deliveries: &mut Option<mpsc::Receiver<Delivery>>,
        deadline: Option<Instant>,
        kicked: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Event {
        let can_read = self.stores.len() < self.pipeline
            && self.parked.is_none()
            && self.held_acks.len() < MAX_HELD_ACKS;
        let can_deliver = deliveries.is_some() && self.core.can_deliver();
        let ack_due = self.held_acks.front().map(|(at, _)| *at);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Event::Shutdown,
            _ = kicked.cancelled() => Event::Kicked,
            Some((pkid, qos, result)) = self.stores.next(), if !self.stores.is_empty() => {
                Event::Stored(pkid, qos, result)
            }
            share = wait_parked(&mut self.parked), if self.parked.is_some() => {
                Event::Budget(share)
            }
            _ = sleep_until(ack_due.unwrap_or_else(Instant::now)), if ack_due.is_some() => {
                Event::AckDue
            }
            packet = framed.next(), if can_read => Event::Packet(packet),
            d = recv(deliveries), if can_deliver => Event::Delivery(d),
            // The keepalive measures the client's silence, so it runs only while the
            // socket is read: a connection held back (pipeline full, publish parked) does
            // not blame the client for the packets waiting unread in its socket. Packets
            // come first when reading resumes, so a client that did send resets it.
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && can_read => {
                Event::KeepAlive
            }
        }
    }

    /// Sends a server DISCONNECT (MQTT 5 only) and flushes, ignoring write errors: the
    /// connection is closing anyway.
    async fn disconnect<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<IO, Codec>,
        reason: Reason,
        reason_string: Option<String>,
    ) {
        if self.version == Version::V5 {
            let _ = framed
                .send(Outbound::Disconnect {
                    reason,
                    reason_string,
                })
                .await;
        } else {
            let _ = framed.flush().await;
        }
    }

    /// Sends a SUBACK or UNSUBACK, or queues it behind the held ones (and for `delay`).
    async fn ack<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<IO, Codec>,
        ack: Outbound,
        delay: Option<Duration>,
    ) -> Result<(), Error> {
        if delay.is_none() && self.held_acks.is_empty() {
            return framed.feed(ack).await;
        }
        let at = Instant::now() + delay.unwrap_or_default();
        self.held_acks.push_back((at, ack));
        Ok(())
    }

    /// Sends the held acks whose time came, in order (one not due holds those behind it).
    async fn release_acks<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<IO, Codec>,
    ) -> Result<Step, Error> {
        let now = Instant::now();
        while self.held_acks.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, ack)) = self.held_acks.pop_front() {
                framed.feed(ack).await?;
            }
        }
        Ok(Step::Continue)
    }

    /// Carries out what the session core decided.
    async fn perform<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<IO, Codec>,
        action: Action,
    ) -> Result<Step, Error> {
        match action {
            Action::Nothing => {}
            Action::Send(packet) => framed.feed(packet).await?,
            Action::Store { pkid, message } => return self.publish(pkid, message),
            Action::AckAgain { pkid } => {
                // Stored already: PUBREC again, in order with the stores in flight.
                self.stores.push_back(Stored {
                    pkid,
                    qos: QoS::ExactlyOnce,
                    store: Box::pin(std::future::ready(Ok(Reason::Success))),
                    _share: None,
                });
            }
            Action::Subscribe {
                pkid,
                subscriptions,
            } => {
                let outcomes = self.session.subscribe(subscriptions).await;
                self.counters.subscribed();
                let delay = self.session.take_suback_delay();
                let suback = Outbound::SubAck {
                    pkid,
                    outcomes,
                    reason_string: None,
                };
                self.ack(framed, suback, delay).await?;
            }
            Action::Unsubscribe { pkid, filters } => {
                let reasons = self.session.unsubscribe(filters).await;
                self.counters.unsubscribed();
                self.ack(framed, Outbound::UnsubAck { pkid, reasons }, None)
                    .await?;
            }
            Action::Acked(tag) => self.session.acked(tag),
            Action::Disconnected {
                will,
                session_expiry,
            } => {
                return Ok(Step::Disconnect {
                    will,
                    session_expiry,
                });
            }
            Action::Refused(refusal) => return Ok(Step::Close(refusal)),
            Action::Violation { reason, why } => return Ok(Step::Violation { reason, why }),
        }
        Ok(Step::Continue)
    }

    fn publish(&mut self, pkid: u16, message: Message) -> Result<Step, Error> {
        let topic_check = topic::validate_name(&message.topic)
            .map_err(|e| Refusal::new(Reason::TopicNameInvalid, e.to_string()))
            .and_then(|()| self.broker.validate_topic(&message.topic));
        if let Err(refusal) = topic_check {
            self.counters.publish_refused();
            return Ok(Step::Close(refusal));
        }
        let qos = message.qos;
        let bytes = message.topic.len() + message.payload.len();
        match self.budget.try_take(bytes) {
            Some(share) => {
                let store = self.session.publish(message);
                self.stores.push_back(Stored {
                    pkid,
                    qos,
                    store,
                    _share: Some(share),
                });
            }
            None => {
                self.counters.publish_waited_for_budget();
                self.parked = Some(Parked {
                    pkid,
                    message,
                    share: Box::pin(self.budget.take(bytes)),
                });
            }
        }
        Ok(Step::Continue)
    }

    /// A store completed: acknowledge it, or refuse it.
    async fn stored<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<IO, Codec>,
        pkid: u16,
        qos: QoS,
        result: Result<Reason, Refusal>,
    ) -> Result<Step, Error> {
        if result.is_err() {
            self.counters.publish_refused();
        }
        let action = self.core.stored(pkid, qos, result);
        if let Action::Refused(refusal) = &action {
            if qos == QoS::AtMostOnce {
                warn!(%refusal, "QoS 0 publish refused; closing the connection");
            } else {
                warn!(%refusal, "publish refused; closing the 3.1.1 connection unacknowledged");
            }
        }
        self.perform(framed, action).await
    }

    async fn deliver<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<IO, Codec>,
        d: Delivery,
    ) -> Result<Step, Error> {
        let Delivery {
            message,
            dup,
            tag,
            expires_ms,
            share,
            subscription_ids,
        } = d;
        let qos = message.qos;
        let (packet, ticket) = match self.core.deliver(
            *message,
            dup,
            tag,
            expires_ms,
            subscription_ids,
            crate::broker::now_ms(),
        ) {
            Delivering::Expired(tag) => {
                debug!("expired message not delivered");
                self.session.acked(tag);
                return Ok(Step::Continue);
            }
            Delivering::Send(packet, ticket) => (packet, ticket),
        };
        let fed = framed.feed(packet).await;
        // The message's bytes leave the subscriber's queue budget once written.
        drop(share);
        match fed {
            Ok(()) => {}
            Err(Error::TooLargeForClient(size)) => {
                // MQTT 5 3.1.2-25: not sent, as if it had been delivered; the connection
                // stays (nothing was written).
                debug!(
                    size,
                    "message larger than the client's maximum packet size discarded"
                );
                self.counters.discarded_too_large();
                let tag = self.core.not_sent(ticket);
                self.session.acked(tag);
                return Ok(Step::Continue);
            }
            Err(e) => return Err(e),
        }
        self.counters.publish_sent(qos);
        if let Some(tag) = self.core.sent(ticket) {
            self.session.acked(tag);
        }
        Ok(Step::Continue)
    }
}

/// Most events handled between two flushes.
const MAX_UNFLUSHED: usize = 64;
/// SUBACKs/UNSUBACKs held back at most per connection; past it, reading stops.
const MAX_HELD_ACKS: usize = 16;
/// Events ready at once after which a connection counts as busy.
const BUSY_STREAK: usize = 8;
/// Read buffer of a busy connection, bytes.
const BUSY_READ_BUFFER: usize = 16 * 1024;

/// What woke the connection up.
enum Event {
    Shutdown,
    Kicked,
    Stored(u16, QoS, Result<Reason, Refusal>),
    /// The parked publish has its share of the budget.
    Budget(Option<BudgetShare>),
    Packet(Option<Result<Inbound, Error>>),
    Delivery(Option<Delivery>),
    KeepAlive,
    /// The first held SUBACK may leave.
    AckDue,
}

enum Step {
    Continue,
    Disconnect {
        will: bool,
        session_expiry: Option<u32>,
    },
    Close(Refusal),
    /// The client broke the protocol: DISCONNECT with this reason.
    Violation {
        reason: Reason,
        why: &'static str,
    },
}

/// How long a connection closed for the client's error reads what the client still sends.
const LINGER: Duration = Duration::from_millis(500);

/// After a DISCONNECT for the client's error: half-closes and reads (and drops) what the
/// client still sends, for at most [`LINGER`], so the connection ends with a FIN after
/// the DISCONNECT. Closing with unread bytes makes the kernel send a reset instead, which
/// can discard the DISCONNECT before the client reads it (seen with Paho's
/// `test_flow_control2`: "connection reset by peer" instead of reason 0x93).
async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(framed: &mut Framed<IO, Codec>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = framed.get_mut();
    let _ = io.shutdown().await;
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Waits for the parked publish's share of the budget (never completes without one).
async fn wait_parked(p: &mut Option<Parked>) -> Option<BudgetShare> {
    match p {
        Some(p) => (&mut p.share).await,
        None => std::future::pending().await,
    }
}

async fn recv(d: &mut Option<mpsc::Receiver<Delivery>>) -> Option<Delivery> {
    match d {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::SubscribeOutcome;

    #[test]
    fn empty_client_id_needs_clean_session_under_311() {
        let c = Connect {
            version: Version::V311,
            client_id: String::new(),
            clean_start: false,
            keep_alive: 0,
            username: None,
            password: None,
            will: None,
            session_expiry_interval: 0,
            receive_maximum: 10,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
        };
        assert!(assign_client_id(c.clone()).is_err());
        let (c, assigned) = assign_client_id(Connect {
            clean_start: true,
            ..c
        })
        .unwrap_or_else(|_| unreachable!());
        assert!(assigned);
        assert!(c.client_id.starts_with("auto-"));
        let _ = SubscribeOutcome::Granted(QoS::AtMostOnce);
    }
}
