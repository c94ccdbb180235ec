//! One connection to the cloud bridge: CONNECT (persistent session), SUBSCRIBE for the
//! downlink, then journal entries out as QoS 1 PUBLISHes within the in-flight window,
//! PUBACKs in (each confirmed in the journal, which deletes the entry), and cloud
//! messages down to local subscribers (PUBACK only after the local broker took them).
//!
//! # The window
//! An entry holds one of the uplink's `window` slots from the moment it is sent until
//! the journal answered its confirm (with `synchronous = full`, once the deletion is
//! flushed), not only until its PUBACK. The slots are shared by successive connections:
//! one that starts while confirms of the last one are pending has that many fewer. So
//! the entries the bridge has and the journal may still hold are never more than
//! `window`, and a crash, a lost connection or (with `full`) a power cut sends at most
//! `window` of them again. An entry sent without a PUBACK gives its slot back: it is
//! still in the journal and goes out again, not a duplicate unless the bridge stored it,
//! and then it is one of the `window`. The bridge's receive maximum caps, in addition,
//! the publishes in flight per connection.
//!
//! # The protocol core
//! What to send and what a packet from the bridge means (packet ids, the in-flight
//! table bounded by the window and the bridge's Receive Maximum, which journal entry a
//! PUBACK confirms, the downlink's acknowledgements, keepalive, topic aliases) is
//! decided by `mqtt::protocol::ClientCore`, synchronous and tested on its own; this
//! module is its I/O driver: the socket and codec, TLS, the journal feeder, the window's
//! slots, the downlink task and the hand-over to the confirmer.
//!
//! # Why packets are handled here and not by rumqttc's client
//! rumqttc's `AsyncClient` does not say which packet id a publish got, so a PUBACK
//! cannot be tied to a journal entry, and its event loop resends unacknowledged
//! publishes on its own after a reconnect, which would duplicate the journal-driven
//! resend. So this module uses rumqttc's MQTT 5 packet codec (`mqttbytes::v5::Codec`)
//! and keeps the flow itself: the journal is the only record of what is unsent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mqtt::packet::{Message, MessageProperties, QoS as LocalQoS};
use mqtt::protocol::{ClientCore, ClientParams, Event, FromServer, Lost, Publishing};

use super::Unsendable;
use rumqttc::v5::mqttbytes::v5::{
    Codec, ConnAck, Connect, ConnectProperties, ConnectReturnCode, Disconnect,
    DisconnectReasonCode, Filter, Login, Packet, PingReq, PubAck, Publish, PublishProperties,
    Subscribe, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::{Error as MqttError, QoS};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::config::{DownlinkConfig, UplinkConfig};
use super::feeder;
use super::status::UplinkStatus;
use super::topic_map::TopicMap;
use crate::broker::LocalBroker;
use crate::journal::{Entry, Journal};

/// MQTT 5 user property holding a message's stable id, `{gateway}:{seq}`. cloud-bridge
/// copies it into the RocketMQ message's KEYS (and mqtt5UserProperties).
pub const MSG_KEY: &str = "msg-key";
/// Largest packet accepted from the bridge.
const MAX_INCOMING: u32 = 1024 * 1024;
/// How long a stopping link waits for the acknowledgements of what it sent.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The client id under which downlink messages are published locally.
pub const DOWNLINK_PUBLISHER: &str = "$downlink";

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) type Conn = Framed<Box<dyn Io>, Codec>;

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The bridge refused our identity (credentials, certificate, authorization), or our
    /// TLS check refused the bridge: retried only at the longest backoff.
    Refused(String),
    /// Anything else (network, bridge restart, timeouts): retried with backoff.
    Transient(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(s) | Failure::Transient(s) => f.write_str(s),
        }
    }
}

fn transient(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Transient(format!("{what}: {e}"))
}

/// Everything a link needs, shared across reconnects.
pub(crate) struct Ctx {
    pub cfg: UplinkConfig,
    pub down: DownlinkConfig,
    pub gateway: String,
    pub client_id: String,
    pub map: TopicMap,
    pub journal: Journal,
    pub broker: LocalBroker,
    pub status: Arc<UplinkStatus>,
    pub tls: Option<TlsConnector>,
    pub confirm: mpsc::Sender<Acked>,
    /// The window (`[uplink] window` slots), shared across connections.
    pub slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("client_id", &self.client_id)
            .field("gateway", &self.gateway)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Is this TLS failure about a certificate (ours or theirs)?
fn certificate_problem(e: &std::io::Error) -> bool {
    use rustls::{AlertDescription as A, Error as R};
    match e.get_ref().and_then(|i| i.downcast_ref::<R>()) {
        Some(R::InvalidCertificate(_)) | Some(R::NoCertificatesPresented) => true,
        Some(R::AlertReceived(a)) => matches!(
            a,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
        ),
        _ => false,
    }
}

/// Opens TCP (+ TLS), sends CONNECT and waits for a successful CONNACK.
pub(crate) async fn connect(ctx: &Ctx) -> Result<(Conn, ConnAck), Failure> {
    let bridge = ctx.cfg.bridge.clone().unwrap_or_default();
    let limit = Duration::from_secs(ctx.cfg.connect_timeout_secs);
    let attempt = async {
        let tcp = TcpStream::connect(&bridge)
            .await
            .map_err(|e| transient(&format!("connect to {bridge}"), e))?;
        tcp.set_nodelay(true)
            .map_err(|e| transient("TCP_NODELAY", e))?;
        let io: Box<dyn Io> = match &ctx.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = ctx
                    .cfg
                    .server_name()
                    .map_err(|e| Failure::Refused(e.to_string()))?;
                match tls.connect(name, tcp).await {
                    Ok(s) => Box::new(s),
                    Err(e) if certificate_problem(&e) => {
                        return Err(Failure::Refused(format!(
                            "TLS handshake with {bridge}: {e}"
                        )));
                    }
                    Err(e) => return Err(transient(&format!("TLS handshake with {bridge}"), e)),
                }
            }
        };
        let mut conn = Framed::new(
            io,
            Codec {
                max_incoming_size: Some(MAX_INCOMING),
                max_outgoing_size: None,
            },
        );
        let password = ctx
            .cfg
            .password()
            .map_err(|e| Failure::Refused(e.to_string()))?;
        let login = match (&ctx.cfg.username, password) {
            (None, None) => None,
            (u, p) => Some(Login {
                username: u.clone().unwrap_or_default(),
                password: p.unwrap_or_default(),
            }),
        };
        let connect = Connect {
            keep_alive: ctx.cfg.keepalive_secs,
            client_id: ctx.client_id.clone(),
            clean_start: false,
            properties: Some(ConnectProperties {
                session_expiry_interval: Some(ctx.cfg.session_expiry_secs),
                receive_maximum: Some(ctx.down.window),
                max_packet_size: Some(MAX_INCOMING),
                ..ConnectProperties::new()
            }),
        };
        // Under TLS 1.3 the bridge's refusal of our certificate arrives as an alert after
        // our side of the handshake finished: while sending CONNECT or reading CONNACK.
        let refused_tls = |what: &str, e: MqttError| match &e {
            MqttError::Io(io) if certificate_problem(io) => {
                Failure::Refused(format!("TLS with {bridge}: {what}: {io}"))
            }
            _ => transient(what, e),
        };
        conn.send(Packet::Connect(connect, None, login))
            .await
            .map_err(|e| refused_tls("send CONNECT", e))?;
        match conn.next().await {
            Some(Ok(Packet::ConnAck(ack))) => Ok((conn, ack)),
            Some(Ok(p)) => Err(Failure::Transient(format!("expected CONNACK, got {p:?}"))),
            Some(Err(e)) => Err(refused_tls("reading CONNACK", e)),
            None => Err(Failure::Transient(format!(
                "{bridge} closed the connection before CONNACK"
            ))),
        }
    };
    let (conn, ack) = tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| Failure::Transient(format!("no CONNACK from {bridge} within {limit:?}")))??;
    use ConnectReturnCode as C;
    match ack.code {
        C::Success => Ok((conn, ack)),
        C::BadUserNamePassword
        | C::NotAuthorized
        | C::Banned
        | C::BadAuthenticationMethod
        | C::BadClientId
        | C::ClientIdentifierNotValid => Err(Failure::Refused(format!(
            "{bridge} refused the connection: {:?} (check uplink.client_id, username, password, certificate)",
            ack.code
        ))),
        code => Err(Failure::Transient(format!(
            "{bridge} refused the connection: {code:?}"
        ))),
    }
}

/// A journal entry as the PUBLISH the bridge gets, written as the core said (`how`: its
/// packet id and topic alias).
fn publish_for(
    ctx: &Ctx,
    entry: Entry,
    cloud_topic: String,
    how: Publishing,
    now_ms: u64,
) -> Publish {
    let mut user_properties = entry.user_properties;
    user_properties.push((MSG_KEY.to_owned(), format!("{}:{}", ctx.gateway, entry.seq)));
    let message_expiry_interval = entry.expires_ms.map(|at| {
        let left = at.saturating_sub(now_ms).div_ceil(1000).max(1);
        u32::try_from(left).unwrap_or(u32::MAX)
    });
    let topic = if how.elide_topic {
        Bytes::new()
    } else {
        Bytes::from(cloud_topic)
    };
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: entry.retain,
        topic,
        pkid: how.pkid,
        payload: entry.payload,
        properties: Some(PublishProperties {
            message_expiry_interval,
            topic_alias: how.topic_alias,
            user_properties,
            ..PublishProperties::default()
        }),
    }
}

/// How often the keepalive is looked at.
const TICK: Duration = Duration::from_millis(100);

/// Runs a connected link until it fails, or until `cancel` (then Ok, after a short wait
/// for outstanding acknowledgements and a DISCONNECT).
pub(crate) async fn run(
    ctx: &Ctx,
    conn: Conn,
    ack: ConnAck,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let mut link = Link::open(ctx, conn, &ack).await?;
    let result = link.drive(cancel).await;
    link.close(result).await
}

/// One connection's I/O around its [`ClientCore`]: the socket, the journal feeder, the
/// downlink task, the window's slots and the acknowledged entries on their way to the
/// confirmer.
struct Link<'a> {
    ctx: &'a Ctx,
    conn: Conn,
    core: ClientCore,
    /// The window slots of the publishes in flight, one each (all from the one
    /// semaphore, merged): a PUBACK splits its entry's off into `acked`; what is left
    /// when the connection ends goes back (those entries are sent again).
    in_flight_slots: Option<OwnedSemaphorePermit>,
    /// The next entry's slot, taken before the entry.
    slot: Option<OwnedSemaphorePermit>,
    acked: Acked,
    feed: mpsc::Receiver<Entry>,
    down_tx: mpsc::Sender<(u16, Publish)>,
    ack_rx: mpsc::Receiver<u16>,
    _downlink: AbortOnDrop,
    _feeder: AbortOnDrop,
}

impl<'a> Link<'a> {
    /// Subscribes for the downlink and starts the feeder and the downlink task.
    async fn open(ctx: &'a Ctx, mut conn: Conn, ack: &ConnAck) -> Result<Self, Failure> {
        let props = ack.properties.as_ref();
        let mut core = ClientCore::new(
            ClientParams {
                window: ctx.cfg.window,
                server_receive_maximum: props.and_then(|p| p.receive_max),
                server_topic_alias_maximum: props.and_then(|p| p.topic_alias_max),
                keep_alive: ctx.cfg.keepalive_secs,
                server_keep_alive: props.and_then(|p| p.server_keep_alive),
            },
            Instant::now(),
        );
        // The downlink: subscribe (the bridge keeps the session), and a task that hands
        // cloud messages to the local broker in order and returns packet ids to acknowledge.
        let filters: Vec<Filter> = ctx
            .down
            .subscribe
            .iter()
            .map(|f| {
                let mut filter = Filter::new(ctx.cfg.expand(f), QoS::AtLeastOnce);
                if ctx.down.qos == 0 {
                    filter.qos = QoS::AtMostOnce;
                }
                filter
            })
            .collect();
        if !filters.is_empty() {
            let pkid = core.subscribe().ok_or_else(|| {
                Failure::Transient("internal: no packet id free for SUBSCRIBE".into())
            })?;
            let mut sub = Subscribe::new_many(filters, None);
            sub.pkid = pkid;
            conn.send(Packet::Subscribe(sub))
                .await
                .map_err(|e| transient("send SUBSCRIBE", e))?;
        }
        let (down_tx, down_rx) = mpsc::channel(usize::from(ctx.down.window));
        let (ack_tx, ack_rx) = mpsc::channel(usize::from(ctx.down.window));
        let downlink = tokio::spawn(downlink(
            ctx.broker.clone(),
            ctx.map.clone(),
            ctx.down.qos,
            ctx.status.clone(),
            down_rx,
            ack_tx,
        ));
        let (feed, feeder) = feeder::spawn(
            ctx.journal.clone(),
            ctx.cfg.drain,
            ctx.cfg.max_rate,
            core.limit().max(READ_AHEAD_MIN),
            ctx.status.clone(),
        );
        ctx.status.inflight.store(0, Ordering::Relaxed);
        Ok(Self {
            ctx,
            conn,
            core,
            in_flight_slots: None,
            slot: None,
            acked: Acked::default(),
            feed,
            down_tx,
            ack_rx,
            _downlink: AbortOnDrop(downlink.abort_handle()),
            _feeder: AbortOnDrop(feeder.abort_handle()),
        })
    }

    /// Carries packets, entries, acknowledgements and ticks until the connection fails
    /// (`Err`) or `cancel` (`Ok`).
    async fn drive(&mut self, cancel: &CancellationToken) -> Result<(), Failure> {
        let ctx = self.ctx;
        let slots = &ctx.slots;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let open = self.core.can_publish();
            if self.slot.is_none() && open {
                self.slot = slots.clone().try_acquire_owned().ok();
            }
            let room = open && self.slot.is_some();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                packet = self.conn.next() => self.on_packet(packet).await?,
                pkid = self.ack_rx.recv() => self.acknowledge_downlink(pkid).await?,
                entry = self.feed.recv(), if room => self.publish(entry).await?,
                // The window is full: wake when a confirm gives a slot back.
                held = slots.clone().acquire_owned(), if open && self.slot.is_none() => {
                    self.slot = held.ok();
                }
                // The confirmer was busy after the last packet: hand it what waits.
                reserved = ctx.confirm.reserve(), if !self.acked.is_empty() => {
                    let Ok(permit) = reserved else {
                        return Err(Failure::Transient("the journal confirmer stopped".into()));
                    };
                    UplinkStatus::add(&self.ctx.status.acked, self.acked.seqs.len() as u64);
                    permit.send(std::mem::take(&mut self.acked));
                }
                _ = tick.tick() => self.keepalive().await?,
            }
            self.ctx
                .status
                .inflight
                .store(self.core.in_flight() as u64, Ordering::Relaxed);
            if !self.acked.is_empty() {
                flush_acked(self.ctx, &mut self.acked, false).await;
            }
        }
    }

    /// A packet (or the end of the stream) from the bridge.
    async fn on_packet(
        &mut self,
        packet: Option<Result<Packet, MqttError>>,
    ) -> Result<(), Failure> {
        let now = Instant::now();
        let packet = match packet {
            None => {
                return Err(Failure::Transient(
                    "the bridge closed the connection".into(),
                ));
            }
            Some(Err(e)) => return Err(transient("bad packet from the bridge", e)),
            Some(Ok(p)) => p,
        };
        match packet {
            Packet::PubAck(PubAck { pkid, reason, .. }) => {
                let event = self.core.packet(
                    FromServer::PubAck {
                        pkid,
                        reason: reason.into(),
                    },
                    now,
                );
                self.settle(event, now)
            }
            Packet::SubAck(sub) => {
                for (filter, code) in self.ctx.down.subscribe.iter().zip(&sub.return_codes) {
                    if !matches!(code, SubscribeReasonCode::Success(_)) {
                        tracing::error!(filter = %self.ctx.cfg.expand(filter), ?code, "uplink: the bridge refused a downlink subscription");
                    }
                }
                let event = self.core.packet(FromServer::SubAck { pkid: sub.pkid }, now);
                self.settle(event, now)
            }
            Packet::Publish(p) => {
                let input = FromServer::Publish {
                    pkid: p.pkid,
                    qos: p.qos.into(),
                };
                match self.core.packet(input, now) {
                    Event::Deliver { ack } => {
                        if self.down_tx.send((ack.unwrap_or(0), p)).await.is_err() {
                            return Err(Failure::Transient("downlink stopped".into()));
                        }
                        Ok(())
                    }
                    other => self.settle(other, now),
                }
            }
            Packet::PingResp(_) => {
                let event = self.core.packet(FromServer::PingResp, now);
                self.settle(event, now)
            }
            Packet::Disconnect(d) => Err(Failure::Transient(format!(
                "the bridge disconnected: {:?}",
                d.reason_code
            ))),
            other => Err(Failure::Transient(format!(
                "unexpected packet from the bridge: {other:?}"
            ))),
        }
    }

    /// Carries out what the core said about a packet (a downlink message aside).
    fn settle(&mut self, event: Event, now: Instant) -> Result<(), Failure> {
        match event {
            Event::Nothing => Ok(()),
            Event::Stored { tag, waited } => {
                self.ctx.status.puback.observe(waited);
                let held = self.settled_slot().ok_or_else(|| {
                    Failure::Transient("internal: a PUBACK without a window slot".into())
                })?;
                self.acked.push(tag, held, Some(now));
                Ok(())
            }
            Event::Refused { tag, reason } => Err(Failure::Refused(format!(
                "the bridge refused journal entry {tag}: {reason:?} (kept; check the topic mapping and the bridge's ACLs)"
            ))),
            Event::NotStored { tag, reason } => Err(Failure::Transient(format!(
                "the bridge could not store journal entry {tag}: {reason:?} (kept, sent again)"
            ))),
            Event::Deliver { .. } => Err(Failure::Transient(
                "internal: a downlink message without its packet".into(),
            )),
            Event::Lost(lost) => Err(lost_failure(lost)),
        }
    }

    /// The window slot of a publish the bridge settled, out of those in flight.
    fn settled_slot(&mut self) -> Option<OwnedSemaphorePermit> {
        let held = self.in_flight_slots.as_mut()?;
        if held.num_permits() <= 1 {
            self.in_flight_slots.take()
        } else {
            held.split(1)
        }
    }

    /// The local broker took a downlink message (`None`: the downlink task ended):
    /// acknowledge it, and what else is ready, in one write.
    async fn acknowledge_downlink(&mut self, pkid: Option<u16>) -> Result<(), Failure> {
        let Some(pkid) = pkid else {
            return Err(Failure::Transient(
                "the local broker did not take a downlink message".into(),
            ));
        };
        if let Some(pkid) = self.core.delivered(pkid) {
            self.conn
                .feed(Packet::PubAck(PubAck::new(pkid, None)))
                .await
                .map_err(|e| transient("send PUBACK", e))?;
        }
        while let Ok(pkid) = self.ack_rx.try_recv() {
            if let Some(pkid) = self.core.delivered(pkid)
                && self
                    .conn
                    .feed(Packet::PubAck(PubAck::new(pkid, None)))
                    .await
                    .is_err()
            {
                break; // the flush below reports it
            }
        }
        self.conn
            .flush()
            .await
            .map_err(|e| transient("send PUBACK", e))?;
        self.core.wrote(Instant::now());
        Ok(())
    }

    /// Publishes `entry` (its slot is in `self.slot`), and whatever else the feed and
    /// the window allow right now, in one write.
    async fn publish(&mut self, entry: Option<Entry>) -> Result<(), Failure> {
        let Some(entry) = entry else {
            return Err(Failure::Transient("the journal reader stopped".into()));
        };
        // Entries are taken from the feed only with a slot in hand (`room`).
        let Some(held) = self.slot.take() else {
            return Err(Failure::Transient(
                "internal: a journal entry without a window slot".into(),
            ));
        };
        let now = Instant::now();
        let now_ms = u64::try_from(mqtt::broker::now_ms()).unwrap_or_default();
        let mut next = Some((entry, held));
        let mut fed = 0u64;
        while let Some((entry, held)) = next.take() {
            match self.ctx.map.to_cloud(&entry.topic) {
                Err(why) => {
                    // Journaled before the map changed (or by an older version).
                    match why {
                        Unsendable::NoRule => {
                            tracing::warn!(topic = %entry.topic, seq = entry.seq, "uplink: no [[uplink.map]] rule maps this topic; removed unsent")
                        }
                        Unsendable::Refused(e) => {
                            tracing::warn!(topic = %entry.topic, seq = entry.seq, error = %e, "uplink: cloud topic refused; removed unsent")
                        }
                    }
                    UplinkStatus::add(&self.ctx.status.unmapped, 1);
                    self.acked.push(entry.seq, held, None);
                }
                Ok(topic) => {
                    let Some(how) = self.core.publish(entry.seq, &topic, now) else {
                        return Err(Failure::Transient(
                            "internal: a journal entry without room in flight".into(),
                        ));
                    };
                    match &mut self.in_flight_slots {
                        Some(slots) => slots.merge(held),
                        None => self.in_flight_slots = Some(held),
                    }
                    let publish = publish_for(self.ctx, entry, topic, how, now_ms);
                    if self.conn.feed(Packet::Publish(publish)).await.is_err() {
                        break; // the flush below reports it
                    }
                    fed += 1;
                }
            }
            if self.core.can_publish()
                && let Ok(held) = self.ctx.slots.clone().try_acquire_owned()
            {
                next = self.feed.try_recv().ok().map(|entry| (entry, held));
            }
        }
        self.conn
            .flush()
            .await
            .map_err(|e| transient("send PUBLISH", e))?;
        UplinkStatus::add(&self.ctx.status.sent, fed);
        self.core.wrote(Instant::now());
        Ok(())
    }

    /// The keepalive: a PINGREQ when due; a missing PINGRESP ends the connection.
    async fn keepalive(&mut self) -> Result<(), Failure> {
        if self.core.tick(Instant::now()).map_err(lost_failure)? {
            self.conn
                .send(Packet::PingReq(PingReq))
                .await
                .map_err(|e| transient("send PINGREQ", e))?;
        }
        Ok(())
    }

    /// Ends the connection: after `cancel` (`Ok`), waits up to [`STOP_GRACE`] for the
    /// acknowledgements of what is in flight and says DISCONNECT; in any case hands
    /// what the bridge acknowledged to the confirmer. The slots of the entries still in
    /// flight go back with `self`.
    async fn close(mut self, result: Result<(), Failure>) -> Result<(), Failure> {
        if result.is_ok() {
            // Stopping: no new publishes; collect the acknowledgements still coming.
            self.feed.close();
            let deadline = tokio::time::Instant::now() + STOP_GRACE;
            while self.core.in_flight() > 0 {
                match tokio::time::timeout_at(deadline, self.conn.next()).await {
                    Ok(Some(Ok(Packet::PubAck(PubAck { pkid, reason, .. })))) => {
                        let now = Instant::now();
                        let input = FromServer::PubAck {
                            pkid,
                            reason: reason.into(),
                        };
                        match self.core.packet(input, now) {
                            Event::Stored { tag, waited } => {
                                self.ctx.status.puback.observe(waited);
                                if let Some(held) = self.settled_slot() {
                                    self.acked.push(tag, held, Some(now));
                                }
                            }
                            // Refused or not stored: it stays in the journal.
                            Event::Refused { .. } | Event::NotStored { .. } => {
                                drop(self.settled_slot());
                            }
                            _ => {}
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            let _ = self
                .conn
                .send(Packet::Disconnect(Disconnect::new(
                    DisconnectReasonCode::NormalDisconnection,
                )))
                .await;
        }
        // The confirm channel holds as many batches as there are slots, so this does not
        // wait (unless the confirmer is gone, and then the entries simply stay).
        flush_acked(self.ctx, &mut self.acked, true).await;
        self.ctx.status.inflight.store(0, Ordering::Relaxed);
        result
    }
}

/// Why the core gave up on the connection, as the link reports it.
fn lost_failure(lost: Lost) -> Failure {
    Failure::Transient(match lost {
        Lost::UnknownPubAck(pkid) => format!("PUBACK for unknown packet id {pkid}"),
        Lost::ExactlyOnce => "QoS 2 publish from the bridge (subscribed at QoS 1 at most)".into(),
        Lost::NoPingResp(keepalive) => format!("no PINGRESP within {keepalive:?}"),
    })
}

/// Entries the bridge acknowledged (or that were removed unsent), on their way to the
/// confirmer, with their window slots (given back once the journal answered the
/// confirm) and when their PUBACKs came (for [`UplinkStatus::confirm`]).
#[derive(Debug, Default)]
pub(crate) struct Acked {
    pub seqs: Vec<u64>,
    pub acked_at: Vec<Instant>,
    pub slots: Option<OwnedSemaphorePermit>,
}

impl Acked {
    fn push(&mut self, seq: u64, slot: OwnedSemaphorePermit, acked_at: Option<Instant>) {
        self.seqs.push(seq);
        self.acked_at.extend(acked_at);
        match &mut self.slots {
            // All slots come from the uplink's one semaphore.
            Some(held) => held.merge(slot),
            None => self.slots = Some(slot),
        }
    }

    fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

/// Entries the feeder may read ahead of the window.
const READ_AHEAD_MIN: usize = 512;

/// Hands acknowledged entries to the confirmer task (without waiting unless `wait`: the
/// link keeps them, and its loop hands them over once the confirmer has room). At most
/// `window` entries, as each holds a slot; the channel holds `window` batches.
async fn flush_acked(ctx: &Ctx, acked: &mut Acked, wait: bool) {
    if acked.is_empty() {
        return;
    }
    let batch = std::mem::take(acked);
    let count = batch.seqs.len() as u64;
    let sent = if wait {
        ctx.confirm.send(batch).await.map_err(|e| e.0)
    } else {
        ctx.confirm.try_send(batch).map_err(|e| e.into_inner())
    };
    match sent {
        Ok(()) => UplinkStatus::add(&ctx.status.acked, count),
        // Confirmer busy (or gone): keep them for the next round.
        Err(batch) => *acked = batch,
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands cloud messages to local subscribers, in order; sends back the packet id of
/// each QoS 1 message once the local broker took it. Ends (dropping `acks`, which
/// ends the link) when the broker refuses one: it stays unacknowledged at the bridge.
async fn downlink(
    broker: LocalBroker,
    map: TopicMap,
    max_qos: u8,
    status: Arc<UplinkStatus>,
    mut rx: mpsc::Receiver<(u16, Publish)>,
    acks: mpsc::Sender<u16>,
) {
    while let Some((pkid, p)) = rx.recv().await {
        let cloud = String::from_utf8_lossy(&p.topic).into_owned();
        match map.to_local(&cloud) {
            None => {
                tracing::warn!(topic = %cloud, "downlink: no [[uplink.map]] rule maps this cloud topic; dropped");
            }
            Some(topic) => {
                let props = p.properties.unwrap_or_default();
                let qos = if p.qos == QoS::AtMostOnce || max_qos == 0 {
                    LocalQoS::AtMostOnce
                } else {
                    LocalQoS::AtLeastOnce
                };
                let message = Message {
                    topic,
                    payload: p.payload,
                    qos,
                    retain: p.retain,
                    properties: MessageProperties {
                        payload_format_indicator: props.payload_format_indicator,
                        message_expiry_interval: props.message_expiry_interval,
                        content_type: props.content_type,
                        response_topic: props.response_topic,
                        correlation_data: props.correlation_data,
                        user_properties: props.user_properties,
                    },
                };
                if let Err(refusal) = broker.publish(DOWNLINK_PUBLISHER, message, false).await {
                    tracing::warn!(topic = %cloud, %refusal, "downlink: the local broker refused a cloud message; it stays at the bridge");
                    return;
                }
                UplinkStatus::add(&status.downlink, 1);
            }
        }
        if pkid != 0 && acks.send(pkid).await.is_err() {
            return;
        }
    }
}
