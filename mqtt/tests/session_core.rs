//! Proptest of the session core's in-flight rules (`mqtt::protocol`): random sequences of
//! deliveries, client acks, client publishes, store completions and PUBRELs, checked
//! against a model after every step:
//! - never more than the client's Receive Maximum unacknowledged QoS 1/2 deliveries
//!   (MQTT 5 3.3.4-9), and a delivery waits (is never dropped) while there is no room;
//! - packet ids of deliveries non-zero and unique among those in flight;
//! - a QoS 2 publish stored once per packet id until its PUBREL (4.3.3);
//! - an ack (PUBACK/PUBREC) only as the answer to a completed store, never to a packet;
//! - never more than the server's Receive Maximum unacknowledged client publishes (v5).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use mqtt::packet::{Inbound, Message, MessageProperties, Outbound, QoS, Reason, Version};
use mqtt::protocol::{Action, Delivering, Params, SessionCore};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// The backend offers a delivery at this QoS.
    Deliver(u8),
    /// The client acks the n-th delivery in flight (PUBACK/PUBREC/PUBCOMP by its QoS).
    Ack(usize),
    /// The client acks a packet id that may not be in flight.
    StrayAck(u16),
    /// The client publishes QoS 2 with a packet id in 1..=6, or QoS 1 in 7..=12.
    Publish(u16, bool),
    /// The oldest store in flight completes (ok or refused).
    StoreDone(bool),
    /// The client releases a QoS 2 packet id.
    PubRel(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3).prop_map(Op::Deliver),
        (0usize..8).prop_map(Op::Ack),
        (0u16..20).prop_map(Op::StrayAck),
        (1u16..=12, any::<bool>()).prop_map(|(p, dup)| Op::Publish(p, dup)),
        prop::bool::weighted(0.9).prop_map(Op::StoreDone),
        (1u16..=6).prop_map(Op::PubRel),
    ]
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn message(q: QoS) -> Message {
    Message {
        topic: "t".into(),
        payload: Bytes::from_static(b"p"),
        qos: q,
        retain: false,
        properties: MessageProperties::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn in_flight_rules_hold_3_3_4_9_and_4_3_3(
        client_max in 1u16..5,
        server_max in 1u16..5,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let now = Instant::now();
        let mut core = SessionCore::new(Params {
            version: Version::V5,
            client_receive_maximum: client_max,
            server_receive_maximum: server_max,
            server_topic_alias_maximum: 0,
            client_topic_alias_maximum: 0,
            keep_alive: 0,
            connect_expiry: 0,
        }, now);
        // Model: deliveries in flight (pkid -> qos), in send order.
        let mut in_flight: Vec<(u16, QoS)> = Vec::new();
        let mut waiting = 0usize;
        let mut next_tag = 0u64;
        let mut tags: HashMap<u64, u16> = HashMap::new();
        // Client side: stores in flight in order (pkid, qos), QoS 2 ids stored and not released.
        let mut stores: VecDeque<(u16, QoS)> = VecDeque::new();
        let mut awaiting_rel: HashSet<u16> = HashSet::new();
        for op in ops {
            match op {
                Op::Deliver(q) => {
                    if !core.can_deliver() {
                        // Waits: the driver does not take it from the backend's queue.
                        prop_assert_eq!(in_flight.len(), usize::from(client_max));
                        waiting += 1;
                        continue;
                    }
                    let q = qos(q);
                    next_tag += 1;
                    match core.deliver(message(q), false, next_tag, None, vec![], 0) {
                        Delivering::Send(Outbound::Publish { pkid, .. }, ticket) => {
                            if q == QoS::AtMostOnce {
                                prop_assert_eq!(pkid, 0);
                                prop_assert_eq!(core.sent(ticket), Some(next_tag));
                            } else {
                                prop_assert_ne!(pkid, 0);
                                prop_assert!(in_flight.iter().all(|(p, _)| *p != pkid),
                                    "packet id {} reused while in flight", pkid);
                                prop_assert_eq!(core.sent(ticket), None);
                                in_flight.push((pkid, q));
                                tags.insert(next_tag, pkid);
                            }
                        }
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                Op::Ack(i) => {
                    if in_flight.is_empty() { continue; }
                    let (pkid, q) = in_flight[i % in_flight.len()];
                    if q == QoS::ExactlyOnce {
                        let a = core.packet(Inbound::PubRec(pkid), now);
                        prop_assert!(matches!(a, Action::Send(Outbound::PubRel(p)) if p == pkid));
                        // The slot stays taken until PUBCOMP.
                        prop_assert_eq!(core.in_flight(), in_flight.len());
                    }
                    let done = if q == QoS::ExactlyOnce { Inbound::PubComp(pkid) } else { Inbound::PubAck(pkid) };
                    match core.packet(done, now) {
                        Action::Acked(tag) => prop_assert_eq!(tags.remove(&tag), Some(pkid)),
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                    in_flight.retain(|(p, _)| *p != pkid);
                }
                Op::StrayAck(pkid) => {
                    let known = in_flight.iter().any(|(p, _)| *p == pkid);
                    let a = core.packet(Inbound::PubAck(pkid), now);
                    if known {
                        prop_assert!(matches!(a, Action::Acked(_)));
                        in_flight.retain(|(p, _)| *p != pkid);
                        tags.retain(|_, p| *p != pkid);
                    } else {
                        prop_assert!(matches!(a, Action::Nothing), "a stray ack freed a slot");
                    }
                }
                Op::Publish(pkid, dup) => {
                    let q = if pkid <= 6 { QoS::ExactlyOnce } else { QoS::AtLeastOnce };
                    let a = core.packet(Inbound::Publish { pkid, dup, message: message(q), topic_alias: None }, now);
                    let pending = stores.iter().any(|(p, _)| *p == pkid);
                    match a {
                        Action::Store { pkid: p, .. } => {
                            prop_assert_eq!(p, pkid);
                            prop_assert!(!pending, "stored while its store is in flight");
                            prop_assert!(!awaiting_rel.contains(&pkid),
                                "QoS 2 packet id {} stored twice before PUBREL", pkid);
                            stores.push_back((pkid, q));
                        }
                        Action::AckAgain { pkid: p } => {
                            prop_assert_eq!(p, pkid);
                            prop_assert!(awaiting_rel.remove(&pkid));
                            stores.push_back((pkid, q));
                        }
                        Action::Nothing => prop_assert!(pending),
                        Action::Violation { reason, .. } => {
                            prop_assert_eq!(reason, Reason::ReceiveMaximumExceeded);
                            prop_assert!(stores.len() + awaiting_rel.len() >= usize::from(server_max));
                            continue;
                        }
                        other => prop_assert!(false, "a PUBLISH answered with {:?}", other),
                    }
                    prop_assert!(stores.len() + awaiting_rel.len() <= usize::from(server_max));
                }
                Op::StoreDone(ok) => {
                    let Some((pkid, q)) = stores.pop_front() else { continue };
                    let result = if ok { Ok(Reason::Success) } else {
                        Err(mqtt::broker::Refusal::new(Reason::QuotaExceeded, "full"))
                    };
                    match core.stored(pkid, q, result) {
                        Action::Send(Outbound::PubAck { pkid: p, reason, .. }) => {
                            prop_assert_eq!(q, QoS::AtLeastOnce);
                            prop_assert_eq!(p, pkid);
                            prop_assert_eq!(reason == Reason::Success, ok);
                        }
                        Action::Send(Outbound::PubRec { pkid: p, reason, .. }) => {
                            prop_assert_eq!(q, QoS::ExactlyOnce);
                            prop_assert_eq!(p, pkid);
                            prop_assert_eq!(reason == Reason::Success, ok);
                            if ok { awaiting_rel.insert(pkid); }
                        }
                        other => prop_assert!(false, "a store answered with {:?}", other),
                    }
                }
                Op::PubRel(pkid) => {
                    let a = core.packet(Inbound::PubRel(pkid), now);
                    prop_assert!(matches!(a, Action::Send(Outbound::PubComp(p)) if p == pkid));
                    awaiting_rel.remove(&pkid);
                }
            }
            prop_assert!(in_flight.len() <= usize::from(client_max));
            prop_assert_eq!(core.in_flight(), in_flight.len());
        }
        let _ = waiting;
    }
}
