//! [`SessionCore`]: the MQTT protocol state of one server-side connection, without I/O.
//!
//! The I/O driver (`crate::connection`) feeds it inputs — a decoded packet, a store's
//! completion, a delivery offered by the backend, the current time — and carries out the
//! [`Action`] each returns: a packet to send, a store to start, a backend call. It owns
//! no socket, task or timer, so every rule below is unit-tested here with plain values
//! (see `tests` and the in-flight proptest).
//!
//! Invariants (each held by the table named):
//! - at most the client's Receive Maximum QoS 1/2 deliveries are unacknowledged
//!   (3.3.4-9); the driver offers a delivery only while [`SessionCore::can_deliver`];
//!   packet ids of deliveries are non-zero and unique among those in flight
//!   ([`super::outgoing`]);
//! - a QoS 1/2 publish is acknowledged only after its store completed with `Ok`; a QoS 2
//!   publish is stored once per packet id until PUBREL; an MQTT 5 client sending more
//!   unacknowledged QoS 1/2 publishes than the server's Receive Maximum is disconnected
//!   with 0x93 ([`super::incoming`]);
//! - topic aliases are checked and resolved inbound (0x94 / 0x82) and used outbound only
//!   as the client allowed ([`super::alias`]);
//! - the keepalive deadline moves with every packet ([`super::keepalive`]);
//! - a DISCONNECT may not raise a session expiry of 0 (3.14.2-? / 3.1.2-23: protocol
//!   error, 0x82);
//! - a packet a client must never send (a second CONNECT, CONNACK, SUBACK, AUTH...) is
//!   a protocol error (0x82).

use std::time::Instant;

use super::alias;
use super::incoming::{Incoming, Received};
use super::keepalive::KeepAlive;
use super::outgoing::Outgoing;
use crate::broker::{Refusal, apply_expiry};
use crate::packet::{Inbound, Message, Outbound, QoS, Reason, SubscriptionRequest, Version};

/// What the connection negotiated at CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Protocol version.
    pub version: Version,
    /// QoS 1/2 deliveries the client accepts unacknowledged (already bounded by the
    /// server's own cap).
    pub client_receive_maximum: u16,
    /// Receive Maximum the server advertised (enforced on MQTT 5 clients).
    pub server_receive_maximum: u16,
    /// Topic Alias Maximum the server advertised (aliases the client may use).
    pub server_topic_alias_maximum: u16,
    /// Topic Alias Maximum the client sent (aliases the server may use).
    pub client_topic_alias_maximum: u16,
    /// Keepalive granted, seconds (0: off).
    pub keep_alive: u16,
    /// The CONNECT's session expiry interval.
    pub connect_expiry: u32,
}

/// What the driver must do after an input.
#[derive(Debug)]
pub enum Action {
    /// Nothing.
    Nothing,
    /// Send this packet.
    Send(Outbound),
    /// Store this publish, then report with [`SessionCore::stored`].
    Store {
        /// Its packet id (0 at QoS 0).
        pkid: u16,
        /// The message, topic alias resolved.
        message: Message,
    },
    /// A QoS 2 publish stored already: report [`SessionCore::stored`] with success in
    /// order with the stores in flight, without storing it again.
    AckAgain {
        /// Its packet id.
        pkid: u16,
    },
    /// Apply these subscriptions, and answer SUBACK.
    Subscribe {
        /// The SUBSCRIBE's packet id.
        pkid: u16,
        /// Its filters.
        subscriptions: Vec<SubscriptionRequest>,
    },
    /// Remove these subscriptions, and answer UNSUBACK.
    Unsubscribe {
        /// The UNSUBSCRIBE's packet id.
        pkid: u16,
        /// Its filters.
        filters: Vec<String>,
    },
    /// The client acknowledged the delivery with this backend tag.
    Acked(u64),
    /// The client disconnected normally.
    Disconnected {
        /// Whether the will is published (DISCONNECT reason 0x04).
        will: bool,
        /// Its new session expiry, if it set one.
        session_expiry: Option<u32>,
    },
    /// The backend refused a publish in a way the client must see as a closed connection.
    Refused(Refusal),
    /// The client broke the protocol: send DISCONNECT with `reason` (MQTT 5) and close.
    Violation {
        /// Reason code.
        reason: Reason,
        /// Why.
        why: &'static str,
    },
}

/// A delivery handed to the driver to write; give it back with
/// [`SessionCore::sent`] or [`SessionCore::not_sent`].
#[derive(Debug)]
#[must_use]
pub struct Ticket {
    pkid: u16,
    qos: QoS,
    tag: u64,
    new_alias: Option<(String, u16)>,
}

/// What to do with a delivery.
// Returned once per delivery and destructured at once: boxing would cost an allocation
// per message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Delivering {
    /// Its message expired: not sent; the backend's tag is acknowledged.
    Expired(u64),
    /// Write this PUBLISH.
    Send(Outbound, Ticket),
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct SessionCore {
    version: Version,
    outgoing: Outgoing,
    incoming: Incoming,
    aliases_in: alias::Inbound,
    aliases_out: alias::Outbound,
    keepalive: KeepAlive,
    connect_expiry: u32,
}

impl SessionCore {
    /// The state right after CONNACK, at `now`.
    pub fn new(p: Params, now: Instant) -> Self {
        let v5 = p.version == Version::V5;
        Self {
            version: p.version,
            outgoing: Outgoing::new(p.client_receive_maximum),
            incoming: Incoming::new(v5.then_some(p.server_receive_maximum)),
            aliases_in: alias::Inbound::new(if v5 { p.server_topic_alias_maximum } else { 0 }),
            aliases_out: alias::Outbound::new(if v5 { p.client_topic_alias_maximum } else { 0 }),
            keepalive: KeepAlive::new(p.keep_alive, now),
            connect_expiry: p.connect_expiry,
        }
    }

    /// When the client's silence ends the connection, if nothing arrives before.
    pub fn keepalive_deadline(&self) -> Option<Instant> {
        self.keepalive.deadline()
    }

    /// Whether a delivery may be offered now (the client's Receive Maximum has room).
    pub fn can_deliver(&self) -> bool {
        self.outgoing.has_room()
    }

    /// Deliveries unacknowledged by the client.
    pub fn in_flight(&self) -> usize {
        self.outgoing.len()
    }

    /// A packet arrived at `now`.
    pub fn packet(&mut self, packet: Inbound, now: Instant) -> Action {
        self.keepalive.packet(now);
        match packet {
            Inbound::Publish {
                pkid,
                dup: _,
                mut message,
                topic_alias,
            } => {
                let topic = std::mem::take(&mut message.topic);
                message.topic = match self.aliases_in.resolve(topic, topic_alias) {
                    Ok(t) => t,
                    Err((reason, why)) => return Action::Violation { reason, why },
                };
                match self.incoming.publish(pkid, message.qos) {
                    Received::Store => Action::Store { pkid, message },
                    Received::AckAgain => Action::AckAgain { pkid },
                    Received::InProgress => Action::Nothing,
                    Received::TooMany => Action::Violation {
                        reason: Reason::ReceiveMaximumExceeded,
                        why: "more unacknowledged QoS 1/2 publishes than the receive maximum",
                    },
                }
            }
            Inbound::PubRel(pkid) => {
                self.incoming.released(pkid);
                Action::Send(Outbound::PubComp(pkid))
            }
            Inbound::PubAck(pkid) | Inbound::PubComp(pkid) => match self.outgoing.completed(pkid) {
                Some(tag) => Action::Acked(tag),
                None => Action::Nothing,
            },
            Inbound::PubRec(pkid) => {
                self.outgoing.received(pkid);
                Action::Send(Outbound::PubRel(pkid))
            }
            Inbound::Subscribe {
                pkid,
                subscriptions,
            } => {
                if subscriptions
                    .iter()
                    .any(|s| s.no_local && s.filter.starts_with("$share/"))
                {
                    return Action::Violation {
                        reason: Reason::ProtocolError,
                        why: "No Local on a shared subscription (3.8.3-4)",
                    };
                }
                Action::Subscribe {
                    pkid,
                    subscriptions,
                }
            }
            Inbound::Unsubscribe { pkid, filters } => Action::Unsubscribe { pkid, filters },
            Inbound::PingReq => Action::Send(Outbound::PingResp),
            Inbound::Disconnect {
                reason,
                session_expiry_interval,
            } => {
                if self.connect_expiry == 0 && session_expiry_interval.is_some_and(|e| e > 0) {
                    return Action::Violation {
                        reason: Reason::ProtocolError,
                        why: "session expiry changed from 0 in DISCONNECT",
                    };
                }
                Action::Disconnected {
                    will: reason == 0x04,
                    session_expiry: session_expiry_interval,
                }
            }
            Inbound::Connect(_) => Action::Violation {
                reason: Reason::ProtocolError,
                why: "second CONNECT",
            },
            Inbound::Unexpected(what) => Action::Violation {
                reason: Reason::ProtocolError,
                why: what,
            },
        }
    }

    /// The store of a publish completed: its acknowledgement, or a refusal.
    pub fn stored(&mut self, pkid: u16, qos: QoS, result: Result<Reason, Refusal>) -> Action {
        self.incoming.stored(pkid, qos, result.is_ok());
        let packet = match (qos, result) {
            (QoS::AtMostOnce, Ok(_)) => return Action::Nothing,
            (QoS::AtLeastOnce, Ok(reason)) => Outbound::PubAck {
                pkid,
                reason,
                reason_string: None,
            },
            (QoS::ExactlyOnce, Ok(reason)) => Outbound::PubRec {
                pkid,
                reason,
                reason_string: None,
            },
            // QoS 0 has no ack to refuse with; 3.1.1 acks have no reason code: the
            // connection closes unacknowledged, so the client retries.
            (QoS::AtMostOnce, Err(refusal)) => return Action::Refused(refusal),
            (_, Err(refusal)) if self.version == Version::V311 => {
                return Action::Refused(refusal);
            }
            (QoS::AtLeastOnce, Err(refusal)) => Outbound::PubAck {
                pkid,
                reason: refusal.reason,
                reason_string: Some(refusal.message),
            },
            (QoS::ExactlyOnce, Err(refusal)) => Outbound::PubRec {
                pkid,
                reason: refusal.reason,
                reason_string: Some(refusal.message),
            },
        };
        Action::Send(packet)
    }

    /// A delivery offered by the backend (call only while [`Self::can_deliver`]), at
    /// `now_ms` (Unix milliseconds, the clock of `expires_ms`).
    pub fn deliver(
        &mut self,
        mut message: Message,
        dup: bool,
        tag: u64,
        expires_ms: Option<i64>,
        subscription_ids: Vec<u32>,
        now_ms: i64,
    ) -> Delivering {
        if !apply_expiry(&mut message, expires_ms, now_ms) {
            return Delivering::Expired(tag);
        }
        let qos = message.qos;
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            self.outgoing.next_pkid()
        };
        let (topic_alias, new_alias) = match self.aliases_out.lookup(&message.topic) {
            alias::Use::None => (None, None),
            alias::Use::New(a) => (Some(a), Some((message.topic.clone(), a))),
            alias::Use::Known(a) => {
                message.topic.clear();
                (Some(a), None)
            }
        };
        Delivering::Send(
            Outbound::Publish {
                pkid,
                dup,
                message,
                subscription_ids,
                topic_alias,
            },
            Ticket {
                pkid,
                qos,
                tag,
                new_alias,
            },
        )
    }

    /// The delivery was written: QoS 1/2 now wait for the client's ack; a QoS 0 one is
    /// done (its tag is returned, to acknowledge to the backend).
    pub fn sent(&mut self, t: Ticket) -> Option<u64> {
        if let Some((topic, alias)) = t.new_alias {
            self.aliases_out.record(topic, alias);
        }
        if t.qos == QoS::AtMostOnce {
            Some(t.tag)
        } else {
            self.outgoing.sent(t.pkid, t.tag);
            None
        }
    }

    /// The delivery could not be written (larger than the client's Maximum Packet
    /// Size): nothing changed; its tag, to acknowledge to the backend as if delivered
    /// (3.1.2-25).
    pub fn not_sent(&mut self, t: Ticket) -> u64 {
        t.tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::MessageProperties;
    use bytes::Bytes;

    fn params(version: Version) -> Params {
        Params {
            version,
            client_receive_maximum: 2,
            server_receive_maximum: 3,
            server_topic_alias_maximum: 10,
            client_topic_alias_maximum: 2,
            keep_alive: 0,
            connect_expiry: 0,
        }
    }

    fn message(topic: &str, qos: QoS) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"x"),
            qos,
            retain: false,
            properties: MessageProperties::default(),
        }
    }

    fn publish(pkid: u16, topic: &str, qos: QoS, alias: Option<u16>) -> Inbound {
        Inbound::Publish {
            pkid,
            dup: false,
            message: message(topic, qos),
            topic_alias: alias,
        }
    }

    #[test]
    fn ack_only_after_store_completed() {
        let now = Instant::now();
        let mut c = SessionCore::new(params(Version::V5), now);
        assert!(matches!(
            c.packet(publish(1, "t", QoS::AtLeastOnce, None), now),
            Action::Store { pkid: 1, .. }
        ));
        assert!(matches!(
            c.stored(1, QoS::AtLeastOnce, Ok(Reason::Success)),
            Action::Send(Outbound::PubAck {
                pkid: 1,
                reason: Reason::Success,
                ..
            })
        ));
    }

    #[test]
    fn refused_store_closes_311_and_answers_v5_with_its_reason() {
        let now = Instant::now();
        let refusal = Refusal::new(Reason::NotAuthorized, "no");
        let mut c = SessionCore::new(params(Version::V311), now);
        let _ = c.packet(publish(1, "t", QoS::AtLeastOnce, None), now);
        assert!(matches!(
            c.stored(1, QoS::AtLeastOnce, Err(refusal.clone())),
            Action::Refused(_)
        ));
        let mut c = SessionCore::new(params(Version::V5), now);
        let _ = c.packet(publish(1, "t", QoS::ExactlyOnce, None), now);
        assert!(matches!(
            c.stored(1, QoS::ExactlyOnce, Err(refusal)),
            Action::Send(Outbound::PubRec {
                reason: Reason::NotAuthorized,
                ..
            })
        ));
    }

    #[test]
    fn no_local_on_a_shared_subscription_is_a_protocol_error_3_8_3_4() {
        let now = Instant::now();
        let mut c = SessionCore::new(params(Version::V5), now);
        let request = |filter: &str, no_local| crate::packet::SubscriptionRequest {
            filter: filter.to_owned(),
            qos: QoS::AtLeastOnce,
            no_local,
            retain_as_published: false,
            retain_handling: 0,
            subscription_id: None,
        };
        let subscribe = |subscriptions| Inbound::Subscribe {
            pkid: 1,
            subscriptions,
        };
        assert!(matches!(
            c.packet(
                subscribe(vec![request("$share/g/t", false), request("t", true)]),
                now
            ),
            Action::Subscribe { .. }
        ));
        assert!(matches!(
            c.packet(subscribe(vec![request("$share/g/t", true)]), now),
            Action::Violation {
                reason: Reason::ProtocolError,
                ..
            }
        ));
    }

    #[test]
    fn inbound_topic_alias_resolved_and_checked_3_3_2_8_to_12() {
        let now = Instant::now();
        let mut c = SessionCore::new(params(Version::V5), now);
        let _ = c.packet(publish(0, "a/b", QoS::AtMostOnce, Some(1)), now);
        match c.packet(publish(0, "", QoS::AtMostOnce, Some(1)), now) {
            Action::Store { message, .. } => assert_eq!(message.topic, "a/b"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.packet(publish(0, "x", QoS::AtMostOnce, Some(11)), now),
            Action::Violation {
                reason: Reason::TopicAliasInvalid,
                ..
            }
        ));
        // A 3.1.1 connection has no aliases (its codec never yields one, but still).
        let mut c = SessionCore::new(params(Version::V311), now);
        assert!(matches!(
            c.packet(publish(0, "x", QoS::AtMostOnce, Some(1)), now),
            Action::Violation {
                reason: Reason::TopicAliasInvalid,
                ..
            }
        ));
    }

    #[test]
    fn outbound_alias_first_full_then_empty_topic() {
        let now = Instant::now();
        let mut c = SessionCore::new(params(Version::V5), now);
        let mut topics = Vec::new();
        for _ in 0..2 {
            match c.deliver(message("s/t", QoS::AtMostOnce), false, 1, None, vec![], 0) {
                Delivering::Send(
                    Outbound::Publish {
                        message,
                        topic_alias,
                        ..
                    },
                    t,
                ) => {
                    topics.push((message.topic, topic_alias));
                    assert_eq!(c.sent(t), Some(1));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            topics,
            [("s/t".to_owned(), Some(1)), (String::new(), Some(1))]
        );
    }

    #[test]
    fn unsent_delivery_records_no_alias_and_no_slot_3_1_2_25() {
        let now = Instant::now();
        let mut c = SessionCore::new(params(Version::V5), now);
        match c.deliver(message("s/t", QoS::AtLeastOnce), false, 4, None, vec![], 0) {
            Delivering::Send(_, t) => assert_eq!(c.not_sent(t), 4),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.in_flight(), 0);
        match c.deliver(message("s/t", QoS::AtMostOnce), false, 5, None, vec![], 0) {
            Delivering::Send(Outbound::Publish { message, .. }, _) => {
                assert_eq!(message.topic, "s/t")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expired_message_is_not_delivered_3_3_2_5() {
        let mut c = SessionCore::new(params(Version::V5), Instant::now());
        assert!(matches!(
            c.deliver(
                message("t", QoS::AtLeastOnce),
                false,
                9,
                Some(1_000),
                vec![],
                2_000
            ),
            Delivering::Expired(9)
        ));
        match c.deliver(
            message("t", QoS::AtLeastOnce),
            false,
            9,
            Some(10_000),
            vec![],
            2_500,
        ) {
            Delivering::Send(Outbound::Publish { message, .. }, _) => {
                assert_eq!(message.properties.message_expiry_interval, Some(8));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn disconnect_may_not_raise_expiry_from_0_3_14_2_2() {
        let now = Instant::now();
        let mut c = SessionCore::new(params(Version::V5), now);
        assert!(matches!(
            c.packet(
                Inbound::Disconnect {
                    reason: 0,
                    session_expiry_interval: Some(5)
                },
                now
            ),
            Action::Violation {
                reason: Reason::ProtocolError,
                ..
            }
        ));
    }

    #[test]
    fn second_connect_is_a_protocol_error_3_1_0_2() {
        let now = Instant::now();
        let mut c = SessionCore::new(params(Version::V5), now);
        assert!(matches!(
            c.packet(Inbound::Unexpected("AUTH"), now),
            Action::Violation {
                reason: Reason::ProtocolError,
                ..
            }
        ));
    }
}
