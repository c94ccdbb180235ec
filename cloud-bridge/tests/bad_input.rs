#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! Bad input ends in a clean disconnect, never a panic, and the bridge keeps serving.

mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use harness::{config_text, password, start_bridge};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use test_support::raw::{Packet, Raw};
use test_support::unique;

async fn still_serving(addr: SocketAddr, first: &str) {
    let mut c = Raw::connect(addr, true).await;
    assert_eq!(
        c.handshake("healthy", Some("demo"), Some(&password("healthy")))
            .await,
        0
    );
    c.send5(v5::Packet::Publish(v5::Publish {
        dup: false,
        qos: rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        retain: false,
        topic: Bytes::from(format!("{first}/ok")),
        pkid: 1,
        payload: Bytes::from_static(b"ok"),
        properties: None,
    }))
    .await;
    assert!(
        matches!(c.recv(Duration::from_secs(10)).await, Some(Packet::V5(v5::Packet::PubAck(a))) if a.reason == v5::PubAckReason::Success),
        "the bridge stopped serving"
    );
}

async fn connected(addr: SocketAddr, v5: bool) -> Raw {
    let mut c = Raw::connect(addr, v5).await;
    let id = unique("bad");
    assert_eq!(
        c.handshake(&id, Some("demo"), Some(&password(&id))).await,
        0
    );
    c
}

fn disconnect_reason(seen: &[Packet]) -> Option<v5::DisconnectReasonCode> {
    seen.iter().find_map(|p| match p {
        Packet::V5(v5::Packet::Disconnect(d)) => Some(d.reason_code),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_wildcard_publishes_are_disconnected_cleanly() {
    let first = unique("bad");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();

    // Garbage instead of CONNECT.
    let mut c = Raw::connect(addr, false).await;
    c.send_bytes(&[0xFF; 32]).await;
    assert!(
        c.closed_within(Duration::from_secs(5)).await.0,
        "garbage first packet"
    );

    // A malformed PUBLISH: topic length beyond the packet.
    for v5 in [false, true] {
        let mut c = connected(addr, v5).await;
        c.send_bytes(&[0x32, 0x04, 0x00, 0x40, b'a', b'b']).await;
        let (closed, seen) = c.closed_within(Duration::from_secs(5)).await;
        assert!(closed, "malformed publish (v5={v5})");
        if v5 {
            assert_eq!(
                disconnect_reason(&seen),
                Some(v5::DisconnectReasonCode::MalformedPacket)
            );
        }
    }

    // A packet over max_packet_size (65536 in the test config), announced by its header.
    for v5 in [false, true] {
        let mut c = connected(addr, v5).await;
        c.send_bytes(&[0x30, 0x80, 0x80, 0x08]).await; // remaining length 131072
        let (closed, seen) = c.closed_within(Duration::from_secs(5)).await;
        assert!(closed, "oversized packet (v5={v5})");
        if v5 {
            assert_eq!(
                disconnect_reason(&seen),
                Some(v5::DisconnectReasonCode::PacketTooLarge)
            );
        }
    }

    // PUBLISH topics with + # or %.
    for topic in [
        format!("{first}/+"),
        format!("{first}/#"),
        format!("{first}/a%b"),
    ] {
        for v5 in [false, true] {
            let mut c = connected(addr, v5).await;
            if v5 {
                c.send5(v5::Packet::Publish(v5::Publish {
                    dup: false,
                    qos: rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    retain: false,
                    topic: Bytes::from(topic.clone()),
                    pkid: 1,
                    payload: Bytes::from_static(b"x"),
                    properties: None,
                }))
                .await;
            } else {
                let mut p = v4::Publish::new(topic.clone(), rumqttc::QoS::AtLeastOnce, "x");
                p.pkid = 1;
                c.send4(v4::Packet::Publish(p)).await;
            }
            let (closed, seen) = c.closed_within(Duration::from_secs(5)).await;
            assert!(closed, "publish to {topic} (v5={v5})");
            assert!(
                !seen
                    .iter()
                    .any(|p| matches!(p, Packet::V5(v5::Packet::PubAck(_)))),
                "no PUBACK for {topic}"
            );
            if v5 {
                assert_eq!(
                    disconnect_reason(&seen),
                    Some(v5::DisconnectReasonCode::TopicNameInvalid)
                );
            }
        }
    }

    // A second CONNECT on a connection is a protocol error.
    let mut c = connected(addr, false).await;
    c.send4(v4::Packet::Connect(v4::Connect::new("again")))
        .await;
    assert!(
        c.closed_within(Duration::from_secs(5)).await.0,
        "second CONNECT"
    );

    // An unknown protocol level gets CONNACK 1 (3.1.1's "unacceptable protocol version").
    let mut c = Raw::connect(addr, false).await;
    c.send_bytes(&[
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x07, 0x02, 0x00, 0x1E, 0x00, 0x00,
    ])
    .await;
    match c.recv(Duration::from_secs(5)).await {
        Some(Packet::V4(v4::Packet::ConnAck(a))) => {
            assert_eq!(a.code, v4::ConnectReturnCode::RefusedProtocolVersion)
        }
        _ => panic!("expected CONNACK 1"),
    }

    still_serving(addr, &first).await;
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_connect_never_comes_is_closed() {
    let first = unique("slow");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let mut idle = Raw::connect(addr, false).await;
    let mut partial = Raw::connect(addr, false).await;
    partial.send_bytes(&[0x10, 0x20, 0x00]).await; // half a CONNECT
    // connect_timeout_secs = 2 in the test config.
    assert!(
        idle.closed_within(Duration::from_secs(5)).await.0,
        "idle connection"
    );
    assert!(
        partial.closed_within(Duration::from_secs(5)).await.0,
        "partial CONNECT"
    );
    still_serving(addr, &first).await;
    server.stop(Duration::from_secs(5)).await;
}
