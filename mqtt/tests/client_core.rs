//! Proptest of the client core's in-flight and packet-id rules (`mqtt::protocol::client`,
//! the uplink's protocol state): random sequences of publishes, PUBACKs (of publishes in
//! flight, with any reason, and stray or duplicate ones), SUBSCRIBEs and SUBACKs, and
//! downlink messages and their hand-over to the local broker, checked against a model
//! after every step:
//! - never more than min(window, the server's Receive Maximum) publishes unacknowledged
//!   (MQTT 5 3.3.4-7), and a publish without room records nothing (the driver waits);
//! - packet ids non-zero and unique among the publishes in flight and the SUBSCRIBE
//!   awaiting its SUBACK;
//! - a PUBACK settles exactly the publish of its packet id (its tag), once; a PUBACK for
//!   an id not in flight ends the connection and frees nothing;
//! - a downlink QoS 1 message gets exactly one PUBACK, and only once it was taken.

use std::time::{Duration, Instant};

use mqtt::packet::{QoS, Reason};
use mqtt::protocol::{ClientCore, ClientParams, Event, FromServer, Lost};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// The driver hands over the next journal entry.
    Publish,
    /// The server acknowledges the n-th publish in flight with this reason.
    Ack(usize, u8),
    /// The server acknowledges a packet id that may not be in flight.
    StrayAck(u16),
    /// The driver subscribes (if no SUBSCRIBE is pending).
    Subscribe,
    /// The server answers the pending SUBSCRIBE.
    SubAck,
    /// A downlink message with this packet id, QoS 1 (or QoS 0).
    Downlink(u16, bool),
    /// The local broker took the oldest downlink message waiting.
    Taken,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Publish),
        3 => (0usize..16, 0u8..10).prop_map(|(i, r)| Op::Ack(i, r)),
        1 => (0u16..40).prop_map(Op::StrayAck),
        1 => Just(Op::Subscribe),
        1 => Just(Op::SubAck),
        1 => (1u16..6, any::<bool>()).prop_map(|(p, q1)| Op::Downlink(p, q1)),
        1 => Just(Op::Taken),
    ]
}

fn reason(n: u8) -> Reason {
    match n {
        0..=5 => Reason::Success,
        6 => Reason::NoMatchingSubscribers,
        7 => Reason::NotAuthorized,
        8 => Reason::QuotaExceeded,
        _ => Reason::UnspecifiedError,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn in_flight_and_packet_id_rules_hold_3_3_4_7(
        window in 1u16..12,
        receive_maximum in prop::option::of(1u16..12),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let t0 = Instant::now();
        let mut core = ClientCore::new(ClientParams {
            window,
            server_receive_maximum: receive_maximum,
            server_topic_alias_maximum: Some(2),
            keep_alive: 30,
            server_keep_alive: None,
        }, t0);
        let limit = usize::from(window.min(receive_maximum.unwrap_or(u16::MAX)));
        prop_assert_eq!(core.limit(), limit);
        // Model: publishes in flight (pkid, tag) in send order; the pending SUBSCRIBE.
        let mut in_flight: Vec<(u16, u64)> = Vec::new();
        let mut subscribing: Option<u16> = None;
        let mut next_tag = 0u64;
        // Downlink: packet ids received at QoS 1, in order, not yet taken.
        let mut downlink: Vec<u16> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            let now = t0 + Duration::from_millis(step as u64);
            match op {
                Op::Publish => {
                    next_tag += 1;
                    let room = in_flight.len() < limit;
                    prop_assert_eq!(core.can_publish(), room);
                    match core.publish(next_tag, "t", now) {
                        None => prop_assert!(!room, "a publish refused with room"),
                        Some(p) => {
                            prop_assert!(room, "more than {} in flight", limit);
                            prop_assert_ne!(p.pkid, 0);
                            prop_assert!(in_flight.iter().all(|(id, _)| *id != p.pkid),
                                "packet id {} reused while in flight", p.pkid);
                            prop_assert_ne!(Some(p.pkid), subscribing, "the SUBSCRIBE's id");
                            in_flight.push((p.pkid, next_tag));
                        }
                    }
                }
                Op::Ack(i, r) => {
                    if in_flight.is_empty() { continue; }
                    let (pkid, tag) = in_flight.remove(i % in_flight.len());
                    let reason = reason(r);
                    let e = core.packet(FromServer::PubAck { pkid, reason }, now);
                    let settled = match e {
                        Event::Stored { tag, .. } => {
                            prop_assert!(!reason.is_error());
                            tag
                        }
                        Event::Refused { tag, reason: got } => {
                            prop_assert_eq!(got, Reason::NotAuthorized);
                            tag
                        }
                        Event::NotStored { tag, reason: got } => {
                            prop_assert!(got.is_error() && got != Reason::NotAuthorized);
                            tag
                        }
                        other => { prop_assert!(false, "unexpected {:?}", other); 0 }
                    };
                    prop_assert_eq!(settled, tag, "the PUBACK settled another publish");
                    // A second PUBACK for it frees nothing.
                    let again = core.packet(FromServer::PubAck { pkid, reason: Reason::Success }, now);
                    prop_assert_eq!(again, Event::Lost(Lost::UnknownPubAck(pkid)));
                }
                Op::StrayAck(pkid) => {
                    let known = in_flight.iter().position(|(id, _)| *id == pkid);
                    let e = core.packet(FromServer::PubAck { pkid, reason: Reason::Success }, now);
                    match known {
                        Some(i) => {
                            let (_, tag) = in_flight.remove(i);
                            let stored = matches!(e, Event::Stored { tag: t, .. } if t == tag);
                            prop_assert!(stored, "{:?}", e);
                        }
                        None => prop_assert_eq!(e, Event::Lost(Lost::UnknownPubAck(pkid))),
                    }
                }
                Op::Subscribe => {
                    if subscribing.is_some() { continue; }
                    let pkid = core.subscribe();
                    prop_assert!(pkid.is_some());
                    let pkid = pkid.unwrap_or_default();
                    prop_assert_ne!(pkid, 0);
                    prop_assert!(in_flight.iter().all(|(id, _)| *id != pkid),
                        "SUBSCRIBE took packet id {} of a publish in flight", pkid);
                    subscribing = Some(pkid);
                }
                Op::SubAck => {
                    let Some(pkid) = subscribing.take() else { continue };
                    prop_assert_eq!(core.packet(FromServer::SubAck { pkid }, now), Event::Nothing);
                    prop_assert!(!core.subscribing());
                }
                Op::Downlink(pkid, q1) => {
                    let qos = if q1 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
                    let e = core.packet(FromServer::Publish { pkid: if q1 { pkid } else { 0 }, qos }, now);
                    if q1 {
                        prop_assert_eq!(e, Event::Deliver { ack: Some(pkid) });
                        downlink.push(pkid);
                    } else {
                        prop_assert_eq!(e, Event::Deliver { ack: None });
                    }
                }
                Op::Taken => {
                    if downlink.is_empty() {
                        // Nothing waits: a hand-over report acknowledges nothing.
                        prop_assert_eq!(core.delivered(1), None);
                        continue;
                    }
                    let pkid = downlink.remove(0);
                    prop_assert_eq!(core.delivered(pkid), Some(pkid));
                }
            }
            prop_assert_eq!(core.in_flight(), in_flight.len());
            prop_assert!(core.in_flight() <= limit);
            prop_assert_eq!(core.subscribing(), subscribing.is_some());
            prop_assert_eq!(core.downlink_pending(), downlink.len());
        }
        // Whatever waits is acknowledged once each, then nothing more.
        for pkid in downlink.drain(..) {
            prop_assert_eq!(core.delivered(pkid), Some(pkid));
        }
        for pkid in 1u16..6 {
            prop_assert_eq!(core.delivered(pkid), None, "a second PUBACK for {}", pkid);
        }
    }
}
