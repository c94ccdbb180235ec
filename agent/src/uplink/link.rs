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
//! # Why packets are handled here and not by rumqttc's client
//! rumqttc's `AsyncClient` does not say which packet id a publish got, so a PUBACK
//! cannot be tied to a journal entry, and its event loop resends unacknowledged
//! publishes on its own after a reconnect, which would duplicate the journal-driven
//! resend. So this module uses rumqttc's MQTT 5 packet codec (`mqttbytes::v5::Codec`)
//! and keeps the flow itself: the journal is the only record of what is unsent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mqtt::packet::{Message, MessageProperties, QoS as LocalQoS};

use super::Unsendable;
use rumqttc::v5::mqttbytes::v5::{
    Codec, ConnAck, Connect, ConnectProperties, ConnectReturnCode, Disconnect,
    DisconnectReasonCode, Filter, Login, Packet, PingReq, PubAck, PubAckReason, Publish,
    PublishProperties, Subscribe, SubscribeReasonCode,
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

/// Packet ids for outgoing publishes and subscribes (1..=65535, skipping those in use).
#[derive(Debug, Default)]
struct PacketIds {
    last: u16,
}

impl PacketIds {
    fn next(&mut self, in_use: impl Fn(u16) -> bool) -> u16 {
        loop {
            self.last = self.last.checked_add(1).unwrap_or(1);
            if !in_use(self.last) {
                return self.last;
            }
        }
    }
}

/// A journal entry as the PUBLISH the bridge gets.
fn publish_for(ctx: &Ctx, entry: Entry, cloud_topic: String, pkid: u16, now_ms: u64) -> Publish {
    let mut user_properties = entry.user_properties;
    user_properties.push((MSG_KEY.to_owned(), format!("{}:{}", ctx.gateway, entry.seq)));
    let message_expiry_interval = entry.expires_ms.map(|at| {
        let left = at.saturating_sub(now_ms).div_ceil(1000).max(1);
        u32::try_from(left).unwrap_or(u32::MAX)
    });
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: entry.retain,
        topic: Bytes::from(cloud_topic),
        pkid,
        payload: entry.payload,
        properties: Some(PublishProperties {
            message_expiry_interval,
            user_properties,
            ..PublishProperties::default()
        }),
    }
}

/// Runs a connected link until it fails, or until `cancel` (then Ok, after a short wait
/// for outstanding acknowledgements and a DISCONNECT).
pub(crate) async fn run(
    ctx: &Ctx,
    mut conn: Conn,
    ack: ConnAck,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let server_window = ack
        .properties
        .as_ref()
        .and_then(|p| p.receive_max)
        .unwrap_or(u16::MAX);
    let window = usize::from(ctx.cfg.window.min(server_window).max(1));
    let keepalive = Duration::from_secs(u64::from(ctx.cfg.keepalive_secs.max(1)));
    let status = &ctx.status;

    let mut ids = PacketIds::default();
    // pkid -> journal seq of publishes in flight; the SUBSCRIBE's id until its SUBACK.
    let mut inflight: HashMap<u16, (u64, OwnedSemaphorePermit)> = HashMap::new();
    let mut subscribing: Option<u16> = None;
    let mut acked = Acked::default();
    // The window: a slot per entry from its send until its confirm is answered.
    let slots = &ctx.slots;
    let mut slot: Option<OwnedSemaphorePermit> = None;

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
        let pkid = ids.next(|_| false);
        subscribing = Some(pkid);
        let mut sub = Subscribe::new_many(filters, None);
        sub.pkid = pkid;
        conn.send(Packet::Subscribe(sub))
            .await
            .map_err(|e| transient("send SUBSCRIBE", e))?;
    }
    let (down_tx, down_rx) = mpsc::channel::<(u16, Publish)>(usize::from(ctx.down.window));
    let (ack_tx, mut ack_rx) = mpsc::channel::<u16>(usize::from(ctx.down.window));
    let downlink = tokio::spawn(downlink(
        ctx.broker.clone(),
        ctx.map.clone(),
        ctx.down.qos,
        status.clone(),
        down_rx,
        ack_tx,
    ));
    let _downlink = AbortOnDrop(downlink.abort_handle());

    let (mut feed, feeder) = feeder::spawn(
        ctx.journal.clone(),
        ctx.cfg.drain,
        ctx.cfg.max_rate,
        window.max(READ_AHEAD_MIN),
    );
    let _feeder = AbortOnDrop(feeder.abort_handle());

    status
        .inflight
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let mut last_sent = Instant::now();
    let mut last_received = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let result = loop {
        let open = inflight.len() < window;
        if slot.is_none() && open {
            slot = slots.clone().try_acquire_owned().ok();
        }
        let room = open && slot.is_some();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ok(()),
            packet = conn.next() => {
                last_received = Instant::now();
                let packet = match packet {
                    None => break Err(Failure::Transient("the bridge closed the connection".into())),
                    Some(Err(e)) => break Err(transient("bad packet from the bridge", e)),
                    Some(Ok(p)) => p,
                };
                match packet {
                    Packet::PubAck(PubAck { pkid, reason, .. }) => {
                        let Some((seq, held)) = inflight.remove(&pkid) else {
                            break Err(Failure::Transient(format!("PUBACK for unknown packet id {pkid}")));
                        };
                        match reason {
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => acked.push(seq, held),
                            PubAckReason::NotAuthorized | PubAckReason::TopicNameInvalid | PubAckReason::PayloadFormatInvalid => {
                                break Err(Failure::Refused(format!(
                                    "the bridge refused journal entry {seq}: {reason:?} (kept; check the topic mapping and the bridge's ACLs)")));
                            }
                            other => break Err(Failure::Transient(format!(
                                "the bridge could not store journal entry {seq}: {other:?} (kept, sent again)"))),
                        }
                    }
                    Packet::SubAck(sub) => {
                        if subscribing == Some(sub.pkid) {
                            subscribing = None;
                        }
                        for (filter, code) in ctx.down.subscribe.iter().zip(&sub.return_codes) {
                            if !matches!(code, SubscribeReasonCode::Success(_)) {
                                tracing::error!(filter = %ctx.cfg.expand(filter), ?code, "uplink: the bridge refused a downlink subscription");
                            }
                        }
                    }
                    Packet::Publish(p) => {
                        if p.qos == QoS::ExactlyOnce {
                            break Err(Failure::Transient("QoS 2 publish from the bridge (subscribed at QoS 1 at most)".into()));
                        }
                        let pkid = if p.qos == QoS::AtLeastOnce { p.pkid } else { 0 };
                        if down_tx.send((pkid, p)).await.is_err() {
                            break Err(Failure::Transient("downlink stopped".into()));
                        }
                    }
                    Packet::PingResp(_) => ping_sent = None,
                    Packet::Disconnect(d) => {
                        break Err(Failure::Transient(format!("the bridge disconnected: {:?}", d.reason_code)));
                    }
                    other => break Err(Failure::Transient(format!("unexpected packet from the bridge: {other:?}"))),
                }
            }
            pkid = ack_rx.recv() => {
                let Some(pkid) = pkid else {
                    break Err(Failure::Transient("the local broker did not take a downlink message".into()));
                };
                if let Err(e) = conn.feed(Packet::PubAck(PubAck::new(pkid, None))).await {
                    break Err(transient("send PUBACK", e));
                }
                // Acknowledge what else is ready in one write.
                while let Ok(pkid) = ack_rx.try_recv() {
                    if conn.feed(Packet::PubAck(PubAck::new(pkid, None))).await.is_err() {
                        break; // the flush below reports it
                    }
                }
                if let Err(e) = conn.flush().await {
                    break Err(transient("send PUBACK", e));
                }
                last_sent = Instant::now();
            }
            entry = feed.recv(), if room => {
                let Some(entry) = entry else {
                    break Err(Failure::Transient("the journal reader stopped".into()));
                };
                // Entries are taken from the feed only with a slot in hand (`room`).
                let Some(held) = slot.take() else {
                    break Err(Failure::Transient("internal: a journal entry without a window slot".into()));
                };
                let now = u64::try_from(mqtt::broker::now_ms()).unwrap_or_default();
                let mut next = Some((entry, held));
                let mut fed = 0u64;
                while let Some((entry, held)) = next.take() {
                    match ctx.map.to_cloud(&entry.topic) {
                        Err(why) => {
                            // Journaled before the map changed (or by an older version).
                            match why {
                                Unsendable::NoRule => tracing::warn!(topic = %entry.topic, seq = entry.seq, "uplink: no [[uplink.map]] rule maps this topic; removed unsent"),
                                Unsendable::Refused(e) => tracing::warn!(topic = %entry.topic, seq = entry.seq, error = %e, "uplink: cloud topic refused; removed unsent"),
                            }
                            UplinkStatus::add(&status.unmapped, 1);
                            acked.push(entry.seq, held);
                        }
                        Ok(topic) => {
                            let pkid = ids.next(|id| {
                                inflight.contains_key(&id) || subscribing == Some(id)
                            });
                            inflight.insert(pkid, (entry.seq, held));
                            let publish = publish_for(ctx, entry, topic, pkid, now);
                            if conn.feed(Packet::Publish(publish)).await.is_err() {
                                break; // the flush below reports it
                            }
                            fed += 1;
                        }
                    }
                    if inflight.len() < window
                        && let Ok(held) = slots.clone().try_acquire_owned()
                    {
                        next = feed.try_recv().ok().map(|entry| (entry, held));
                    }
                }
                if let Err(e) = conn.flush().await {
                    break Err(transient("send PUBLISH", e));
                }
                UplinkStatus::add(&status.sent, fed);
                last_sent = Instant::now();
            }
            // The window is full: wake when a confirm gives a slot back.
            held = slots.clone().acquire_owned(), if open && slot.is_none() => slot = held.ok(),
            // The confirmer was busy after the last packet: hand it what waits.
            reserved = ctx.confirm.reserve(), if !acked.is_empty() => {
                let Ok(permit) = reserved else {
                    break Err(Failure::Transient("the journal confirmer stopped".into()));
                };
                UplinkStatus::add(&status.acked, acked.seqs.len() as u64);
                permit.send(std::mem::take(&mut acked));
            }
            _ = tick.tick() => {
                if let Some(at) = ping_sent && at.elapsed() > keepalive {
                    break Err(Failure::Transient(format!("no PINGRESP within {keepalive:?}")));
                }
                if last_received.elapsed() > keepalive.mul_f32(1.5) && ping_sent.is_none() && last_sent.elapsed() < keepalive {
                    // Traffic goes out but nothing comes back: probe.
                    last_sent = Instant::now() - keepalive;
                }
                if ping_sent.is_none() && last_sent.elapsed() >= keepalive {
                    if let Err(e) = conn.send(Packet::PingReq(PingReq)).await {
                        break Err(transient("send PINGREQ", e));
                    }
                    ping_sent = Some(Instant::now());
                    last_sent = Instant::now();
                }
            }
        }
        status
            .inflight
            .store(inflight.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if !acked.is_empty() {
            flush_acked(ctx, &mut acked, false).await;
        }
    };

    if result.is_ok() {
        // Stopping: no new publishes; collect the acknowledgements still coming.
        drop(feed);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while !inflight.is_empty() {
            match tokio::time::timeout_at(deadline, conn.next()).await {
                Ok(Some(Ok(Packet::PubAck(PubAck { pkid, reason, .. })))) => {
                    if let Some((seq, held)) = inflight.remove(&pkid)
                        && matches!(
                            reason,
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                        )
                    {
                        acked.push(seq, held);
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        let _ = conn
            .send(Packet::Disconnect(Disconnect::new(
                DisconnectReasonCode::NormalDisconnection,
            )))
            .await;
    }
    // The confirm channel holds as many batches as there are slots, so this does not
    // wait (unless the confirmer is gone, and then the entries simply stay).
    flush_acked(ctx, &mut acked, true).await;
    status
        .inflight
        .store(0, std::sync::atomic::Ordering::Relaxed);
    result
}

/// Entries the bridge acknowledged, on their way to the confirmer, with their window
/// slots (given back once the journal answered the confirm).
#[derive(Debug, Default)]
pub(crate) struct Acked {
    pub seqs: Vec<u64>,
    pub slots: Option<OwnedSemaphorePermit>,
}

impl Acked {
    fn push(&mut self, seq: u64, slot: OwnedSemaphorePermit) {
        self.seqs.push(seq);
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
