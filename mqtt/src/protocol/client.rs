//! [`ClientCore`]: the MQTT 5 protocol state of one client-side connection, without I/O.
//! Its user is the edge-agent's uplink to cloud-bridge (`agent/src/uplink/link.rs`, the
//! driver), which publishes journal entries at QoS 1 and subscribes for the downlink.
//!
//! The driver owns the socket, the codec, the tasks and the clock; it feeds the core a
//! packet from the server, a publish it is about to write, a downlink message the local
//! broker took, the time, and carries out what the core answers. Nothing here awaits or
//! reads a clock, so every rule below is unit-tested with plain values (see `tests` and
//! the proptest in `mqtt/tests/client_core.rs`).
//!
//! Invariants:
//! - at most `min(window, the server's Receive Maximum from CONNACK)` QoS 1 publishes are
//!   unacknowledged (MQTT 5 3.3.4-7); the driver takes the next publish only while
//!   [`ClientCore::can_publish`] and waits otherwise (nothing is dropped);
//! - packet ids come from [`super::outgoing`] (one allocator for both sides): never 0,
//!   unique among the publishes in flight and the SUBSCRIBE awaiting its SUBACK;
//! - a PUBACK settles exactly the publish sent with its packet id, once. A PUBACK for an
//!   id not in flight (unknown, or a duplicate) ends the connection: nothing can be
//!   confirmed from it, and everything unconfirmed is sent again on the next one. A
//!   PUBACK with an error reason confirms nothing and ends the connection too: a refusal
//!   for good (Not authorized, Topic Name invalid, Payload format invalid: sending it
//!   again gets the same answer) or a transient failure (anything else);
//! - a downlink QoS 1 message is acknowledged only after the driver reported that the
//!   local broker took it ([`ClientCore::delivered`]), one PUBACK per PUBLISH received;
//!   a QoS 2 message (we subscribe at QoS 1 at most) ends the connection;
//! - keepalive ([`super::keepalive::Pinger`]): PINGREQ after the keepalive without a
//!   write, or after 1.5 × it without a packet in; no PINGRESP within the keepalive ends
//!   the connection. The keepalive is the CONNECT's, or the server's Server Keep Alive
//!   when CONNACK sets one (3.2.2-21);
//! - topic aliases ([`super::alias::Outbound`]) only within the server's Topic Alias
//!   Maximum from CONNACK (none when it sets none), never re-mapped: a topic's first
//!   PUBLISH carries the topic and its alias, later ones only the alias. The mapping is
//!   recorded when the PUBLISH is handed to the driver, which writes it or loses the
//!   connection (and the core with it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::alias;
use super::keepalive::{Ping, Pinger};
use super::outgoing::Outgoing;
use crate::packet::{QoS, Reason};

/// What the connection negotiated: the client's own bounds and the server's CONNACK.
#[derive(Debug, Clone, Copy)]
pub struct ClientParams {
    /// Publishes the client lets be unacknowledged at most (the uplink's window).
    pub window: u16,
    /// The server's Receive Maximum (CONNACK; `None`: 65535).
    pub server_receive_maximum: Option<u16>,
    /// The server's Topic Alias Maximum (CONNACK; `None` or 0: no aliases).
    pub server_topic_alias_maximum: Option<u16>,
    /// Keepalive sent in CONNECT, seconds (0 pings every second, as before).
    pub keep_alive: u16,
    /// The server's Server Keep Alive (CONNACK), which replaces `keep_alive`.
    pub server_keep_alive: Option<u16>,
}

/// A packet from the server, as the core needs it. Any other packet (DISCONNECT, or one
/// a server never sends to a client) ends the connection: the driver says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromServer {
    /// PUBACK with its reason code.
    PubAck {
        /// Packet id.
        pkid: u16,
        /// Reason code (MQTT 5; Success under 3.1.1).
        reason: Reason,
    },
    /// SUBACK (the driver reads its reason codes).
    SubAck {
        /// Packet id.
        pkid: u16,
    },
    /// A downlink PUBLISH (the driver keeps the message).
    Publish {
        /// Packet id (0 at QoS 0).
        pkid: u16,
        /// Its QoS.
        qos: QoS,
    },
    /// PINGRESP.
    PingResp,
}

/// Why the connection is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// A PUBACK for a packet id not in flight.
    UnknownPubAck(u16),
    /// A QoS 2 PUBLISH from the server.
    ExactlyOnce,
    /// No PINGRESP within this keepalive.
    NoPingResp(Duration),
}

/// What the driver must do after a packet from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing.
    Nothing,
    /// The server stored the publish tagged `tag`: confirm it. `waited` runs from its
    /// hand-over to the driver ([`ClientCore::publish`]) to its PUBACK.
    Stored {
        /// The publish's tag.
        tag: u64,
        /// Time to its PUBACK.
        waited: Duration,
    },
    /// The server refused the publish for good (sending it again gets the same answer):
    /// the connection ends; the publish is not confirmed.
    Refused {
        /// The publish's tag.
        tag: u64,
        /// The PUBACK's reason.
        reason: Reason,
    },
    /// The server could not store the publish now: the connection ends; it is sent again
    /// on the next one.
    NotStored {
        /// The publish's tag.
        tag: u64,
        /// The PUBACK's reason.
        reason: Reason,
    },
    /// Hand the message to the local broker, and once it took it report
    /// [`ClientCore::delivered`] with `ack` (QoS 1; `None` at QoS 0: no acknowledgement).
    Deliver {
        /// The packet id to acknowledge, QoS 1.
        ack: Option<u16>,
    },
    /// The connection is lost.
    Lost(Lost),
}

/// How to write one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publishing {
    /// Its packet id.
    pub pkid: u16,
    /// The Topic Alias property to send, if any.
    pub topic_alias: Option<u16>,
    /// Whether the topic name is left empty (the alias stands for it).
    pub elide_topic: bool,
}

/// A publish in flight: the driver's tag and when it was handed over.
#[derive(Debug, Clone, Copy)]
struct Sent {
    tag: u64,
    at: Instant,
}

/// The protocol state of one client connection.
#[derive(Debug)]
pub struct ClientCore {
    outgoing: Outgoing<Sent>,
    subscribing: Option<u16>,
    aliases: alias::Outbound,
    pinger: Pinger,
    /// Downlink QoS 1 packet ids received and not yet acknowledged, with their count
    /// (a retransmission may arrive before the first copy was taken).
    downlink: HashMap<u16, u32>,
}

impl ClientCore {
    /// The state right after a successful CONNACK, at `now`.
    pub fn new(p: ClientParams, now: Instant) -> Self {
        let limit = p
            .window
            .min(p.server_receive_maximum.unwrap_or(u16::MAX))
            .max(1);
        let keep_alive = p.server_keep_alive.unwrap_or(p.keep_alive).max(1);
        Self {
            outgoing: Outgoing::new(limit),
            subscribing: None,
            aliases: alias::Outbound::new(p.server_topic_alias_maximum.unwrap_or(0)),
            pinger: Pinger::new(Duration::from_secs(u64::from(keep_alive)), now),
            downlink: HashMap::new(),
        }
    }

    /// Whether one more publish may be written now.
    pub fn can_publish(&self) -> bool {
        self.outgoing.has_room()
    }

    /// Publishes written and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.outgoing.len()
    }

    /// The most publishes in flight at once.
    pub fn limit(&self) -> usize {
        self.outgoing.limit()
    }

    /// The keepalive the connection runs with.
    pub fn keep_alive(&self) -> Duration {
        self.pinger.interval()
    }

    /// A packet id not in flight and not the SUBSCRIBE's (`None`: all are taken).
    fn next_pkid(&mut self) -> Option<u16> {
        if self.outgoing.len() >= usize::from(u16::MAX) {
            return None;
        }
        // Two tries: the allocator skips the ids in flight; the second skips the
        // SUBSCRIBE's unless it is the only one left.
        for _ in 0..2 {
            let pkid = self.outgoing.next_pkid();
            if self.subscribing != Some(pkid) {
                return Some(pkid);
            }
        }
        None
    }

    /// The packet id of the SUBSCRIBE about to be written (`None`: no id free).
    pub fn subscribe(&mut self) -> Option<u16> {
        let pkid = self.next_pkid()?;
        self.subscribing = Some(pkid);
        Some(pkid)
    }

    /// Whether a SUBSCRIBE waits for its SUBACK.
    pub fn subscribing(&self) -> bool {
        self.subscribing.is_some()
    }

    /// A QoS 1 publish tagged `tag` on `topic` is handed over at `now`: how to write it.
    /// `None` (nothing recorded) unless [`Self::can_publish`].
    pub fn publish(&mut self, tag: u64, topic: &str, now: Instant) -> Option<Publishing> {
        if !self.outgoing.has_room() {
            return None;
        }
        let pkid = self.next_pkid()?;
        self.outgoing.sent(pkid, Sent { tag, at: now });
        let (topic_alias, elide_topic) = match self.aliases.lookup(topic) {
            alias::Use::None => (None, false),
            alias::Use::New(a) => {
                self.aliases.record(topic.to_owned(), a);
                (Some(a), false)
            }
            alias::Use::Known(a) => (Some(a), true),
        };
        Some(Publishing {
            pkid,
            topic_alias,
            elide_topic,
        })
    }

    /// Something was written at `now` (keepalive).
    pub fn wrote(&mut self, now: Instant) {
        self.pinger.wrote(now);
    }

    /// A packet from the server arrived at `now`.
    pub fn packet(&mut self, packet: FromServer, now: Instant) -> Event {
        self.pinger
            .received(now, matches!(packet, FromServer::PingResp));
        match packet {
            FromServer::PubAck { pkid, reason } => {
                let Some(sent) = self.outgoing.completed(pkid) else {
                    return Event::Lost(Lost::UnknownPubAck(pkid));
                };
                match reason {
                    Reason::Success | Reason::NoMatchingSubscribers => Event::Stored {
                        tag: sent.tag,
                        waited: now.saturating_duration_since(sent.at),
                    },
                    Reason::NotAuthorized
                    | Reason::TopicNameInvalid
                    | Reason::PayloadFormatInvalid => Event::Refused {
                        tag: sent.tag,
                        reason,
                    },
                    reason => Event::NotStored {
                        tag: sent.tag,
                        reason,
                    },
                }
            }
            FromServer::SubAck { pkid } => {
                if self.subscribing == Some(pkid) {
                    self.subscribing = None;
                }
                Event::Nothing
            }
            FromServer::Publish { pkid, qos } => match qos {
                QoS::AtMostOnce => Event::Deliver { ack: None },
                QoS::AtLeastOnce => {
                    let n = self.downlink.entry(pkid).or_default();
                    *n = n.saturating_add(1);
                    Event::Deliver { ack: Some(pkid) }
                }
                QoS::ExactlyOnce => Event::Lost(Lost::ExactlyOnce),
            },
            FromServer::PingResp => Event::Nothing,
        }
    }

    /// The local broker took the downlink message received with `pkid`: the packet id
    /// to acknowledge, if one such message awaits its PUBACK.
    pub fn delivered(&mut self, pkid: u16) -> Option<u16> {
        let waiting = self.downlink.get_mut(&pkid)?;
        *waiting -= 1;
        if *waiting == 0 {
            self.downlink.remove(&pkid);
        }
        Some(pkid)
    }

    /// Downlink messages received and not yet acknowledged.
    pub fn downlink_pending(&self) -> usize {
        self.downlink.values().map(|n| *n as usize).sum()
    }

    /// The keepalive at `now`: `Ok(true)` to write a PINGREQ now (recorded as written).
    pub fn tick(&mut self, now: Instant) -> Result<bool, Lost> {
        match self.pinger.poll(now) {
            Ping::Idle => Ok(false),
            Ping::Send => Ok(true),
            Ping::Overdue(k) => Err(Lost::NoPingResp(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(window: u16, receive_maximum: Option<u16>) -> ClientParams {
        ClientParams {
            window,
            server_receive_maximum: receive_maximum,
            server_topic_alias_maximum: None,
            keep_alive: 30,
            server_keep_alive: None,
        }
    }

    #[test]
    fn in_flight_bounded_by_window_and_receive_maximum_3_3_4_7() {
        let now = Instant::now();
        for (window, rm, limit) in [(256, Some(128), 128), (16, Some(128), 16), (8, None, 8)] {
            let mut c = ClientCore::new(params(window, rm), now);
            assert_eq!(c.limit(), limit);
            for tag in 0..limit as u64 {
                assert!(c.publish(tag, "t", now).is_some());
            }
            assert!(!c.can_publish());
            assert_eq!(c.publish(99, "t", now), None, "no room: nothing recorded");
            assert_eq!(c.in_flight(), limit);
        }
    }

    #[test]
    fn puback_settles_its_own_publish_once() {
        let t0 = Instant::now();
        let mut c = ClientCore::new(params(4, None), t0);
        let a = c.publish(10, "t", t0).unwrap().pkid;
        let b = c.publish(11, "t", t0).unwrap().pkid;
        assert_ne!(a, b);
        let later = t0 + Duration::from_millis(7);
        let ack = |pkid| FromServer::PubAck {
            pkid,
            reason: Reason::Success,
        };
        assert_eq!(
            c.packet(ack(b), later),
            Event::Stored {
                tag: 11,
                waited: Duration::from_millis(7)
            }
        );
        assert_eq!(c.packet(ack(b), later), Event::Lost(Lost::UnknownPubAck(b)));
        assert_eq!(
            c.packet(ack(999), later),
            Event::Lost(Lost::UnknownPubAck(999))
        );
        assert!(matches!(
            c.packet(ack(a), later),
            Event::Stored { tag: 10, .. }
        ));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn puback_errors_are_refusals_or_transient() {
        let now = Instant::now();
        let mut c = ClientCore::new(params(16, None), now);
        for (reason, refused) in [
            (Reason::NotAuthorized, true),
            (Reason::TopicNameInvalid, true),
            (Reason::PayloadFormatInvalid, true),
            (Reason::QuotaExceeded, false),
            (Reason::UnspecifiedError, false),
            (Reason::ImplementationSpecificError, false),
        ] {
            let pkid = c.publish(5, "t", now).unwrap().pkid;
            let e = c.packet(FromServer::PubAck { pkid, reason }, now);
            if refused {
                assert_eq!(e, Event::Refused { tag: 5, reason });
            } else {
                assert_eq!(e, Event::NotStored { tag: 5, reason });
            }
        }
        let pkid = c.publish(6, "t", now).unwrap().pkid;
        assert!(matches!(
            c.packet(
                FromServer::PubAck {
                    pkid,
                    reason: Reason::NoMatchingSubscribers
                },
                now
            ),
            Event::Stored { tag: 6, .. }
        ));
    }

    #[test]
    fn publishes_never_take_the_subscribes_packet_id() {
        let now = Instant::now();
        let mut c = ClientCore::new(params(u16::MAX, None), now);
        let sub = c.subscribe().unwrap();
        assert!(c.subscribing());
        let mut seen = std::collections::HashSet::new();
        for tag in 0..(u16::MAX as u64 - 1) {
            let p = c.publish(tag, "t", now).unwrap().pkid;
            assert_ne!(p, sub);
            assert_ne!(p, 0);
            assert!(seen.insert(p));
        }
        assert_eq!(c.in_flight(), usize::from(u16::MAX) - 1);
        assert!(c.can_publish(), "the limit is 65535, ...");
        assert_eq!(
            c.publish(1, "t", now),
            None,
            "... but only the SUBSCRIBE's id is free"
        );
        assert_eq!(
            c.packet(FromServer::SubAck { pkid: sub }, now),
            Event::Nothing
        );
        assert!(!c.subscribing());
        assert_eq!(c.publish(1, "t", now).map(|p| p.pkid), Some(sub));
    }

    #[test]
    fn downlink_qos1_is_acknowledged_only_once_taken() {
        let now = Instant::now();
        let mut c = ClientCore::new(params(4, None), now);
        assert_eq!(c.delivered(3), None, "never received");
        let publish = |pkid, qos| FromServer::Publish { pkid, qos };
        assert_eq!(
            c.packet(publish(3, QoS::AtLeastOnce), now),
            Event::Deliver { ack: Some(3) }
        );
        assert_eq!(
            c.packet(publish(3, QoS::AtLeastOnce), now),
            Event::Deliver { ack: Some(3) },
            "a retransmission is delivered (and acknowledged) again"
        );
        assert_eq!(c.downlink_pending(), 2);
        assert_eq!(c.delivered(3), Some(3));
        assert_eq!(c.delivered(3), Some(3));
        assert_eq!(c.delivered(3), None, "one PUBACK per PUBLISH");
        assert_eq!(
            c.packet(publish(0, QoS::AtMostOnce), now),
            Event::Deliver { ack: None }
        );
        assert_eq!(
            c.packet(publish(4, QoS::ExactlyOnce), now),
            Event::Lost(Lost::ExactlyOnce)
        );
    }

    #[test]
    fn aliases_within_the_servers_maximum() {
        let now = Instant::now();
        let mut c = ClientCore::new(
            ClientParams {
                server_topic_alias_maximum: Some(1),
                ..params(8, None)
            },
            now,
        );
        let first = c.publish(1, "a", now).unwrap();
        assert_eq!((first.topic_alias, first.elide_topic), (Some(1), false));
        let again = c.publish(2, "a", now).unwrap();
        assert_eq!((again.topic_alias, again.elide_topic), (Some(1), true));
        let other = c.publish(3, "b", now).unwrap();
        assert_eq!((other.topic_alias, other.elide_topic), (None, false));
        let mut none = ClientCore::new(params(8, None), now);
        let p = none.publish(1, "a", now).unwrap();
        assert_eq!((p.topic_alias, p.elide_topic), (None, false));
    }

    #[test]
    fn server_keep_alive_replaces_the_connects_3_2_2_21() {
        let t0 = Instant::now();
        let mut c = ClientCore::new(
            ClientParams {
                server_keep_alive: Some(5),
                ..params(8, None)
            },
            t0,
        );
        assert_eq!(c.keep_alive(), Duration::from_secs(5));
        assert_eq!(c.tick(t0 + Duration::from_secs(4)), Ok(false));
        assert_eq!(c.tick(t0 + Duration::from_secs(5)), Ok(true));
        assert_eq!(
            c.tick(t0 + Duration::from_secs(11)),
            Err(Lost::NoPingResp(Duration::from_secs(5)))
        );
        let c = ClientCore::new(
            ClientParams {
                keep_alive: 0,
                ..params(8, None)
            },
            t0,
        );
        assert_eq!(c.keep_alive(), Duration::from_secs(1));
    }

    #[test]
    fn pingresp_clears_the_outstanding_ping() {
        let t0 = Instant::now();
        let mut c = ClientCore::new(params(8, None), t0);
        assert_eq!(c.tick(t0 + Duration::from_secs(30)), Ok(true));
        assert_eq!(
            c.packet(FromServer::PingResp, t0 + Duration::from_secs(31)),
            Event::Nothing
        );
        assert_eq!(c.tick(t0 + Duration::from_secs(59)), Ok(false));
        assert_eq!(c.tick(t0 + Duration::from_secs(60)), Ok(true));
    }
}
