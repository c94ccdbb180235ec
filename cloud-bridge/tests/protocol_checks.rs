#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The shared `mqtt` layer's protocol checks and Maximum Packet Size rule, on the bridge
//! (issue #20; the agent's side is `agent/tests/abuse.rs`): malformed MQTT 5 packets get
//! the specification's reason code, and a message over a subscriber's Maximum Packet
//! Size is skipped for it, never closing its connection.

mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use harness::{config_text, password, start_bridge};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5;
use test_support::raw::{Packet, Raw, packet};
use test_support::unique;

async fn connected(addr: SocketAddr, props: Option<v5::ConnectProperties>) -> (Raw, String) {
    let mut c = Raw::connect(addr, true).await;
    let id = unique("proto");
    let connect = v5::Connect {
        keep_alive: 30,
        client_id: id.clone(),
        clean_start: true,
        properties: props,
    };
    let login = Some(v5::Login::new("demo", password(&id)));
    c.send5(v5::Packet::Connect(connect, None, login)).await;
    match c.recv(Duration::from_secs(10)).await {
        Some(Packet::V5(v5::Packet::ConnAck(a))) => {
            assert_eq!(a.code, v5::ConnectReturnCode::Success)
        }
        other => panic!("no CONNACK: {:?}", other.as_ref().map(describe)),
    }
    (c, id)
}

fn describe(p: &Packet) -> String {
    match p {
        Packet::V4(p) => format!("{p:?}"),
        Packet::V5(p) => format!("{p:?}"),
    }
}

/// The malformed MQTT 5 packets (after CONNECT) and the DISCONNECT reason each gets
/// (the same cases as the agent's test).
fn cases(topic: &str) -> Vec<(&'static str, Vec<u8>, v5::DisconnectReasonCode)> {
    use v5::DisconnectReasonCode::{MalformedPacket, ProtocolError};
    let publish = |props: &[u8]| {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&[0, 1]);
        body.extend_from_slice(props);
        body.push(b'x');
        packet(0x32, &body)
    };
    let past_end = {
        let mut p = publish(&[0]);
        let at = p.len() - 2;
        p[at] = 0x40; // property length 64, past the end
        p
    };
    vec![
        (
            "duplicated message expiry",
            publish(&[10, 0x02, 0, 0, 0, 9, 0x02, 0, 0, 0, 9]),
            ProtocolError,
        ),
        (
            "subscription identifier in PUBLISH",
            publish(&[2, 0x0B, 5]),
            ProtocolError,
        ),
        ("property length past the end", past_end, MalformedPacket),
        (
            "SUBSCRIBE with fixed-header flags 0x80",
            vec![0x80, 0x07, 0, 1, 0, 0, 1, b'a', 0],
            MalformedPacket,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mqtt5_packets_get_the_specs_reason_codes() {
    let first = unique("proto");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    for (what, bytes, want) in cases(&format!("{first}/a")) {
        let (mut c, _) = connected(addr, None).await;
        c.send_bytes(&bytes).await;
        let (closed, seen) = c.closed_within(Duration::from_secs(5)).await;
        assert!(closed, "{what}: connection left open");
        let got = seen.iter().find_map(|p| match p {
            Packet::V5(v5::Packet::Disconnect(d)) => Some(d.reason_code),
            _ => None,
        });
        let seen: Vec<String> = seen.iter().map(describe).collect();
        assert_eq!(got, Some(want), "{what}: {seen:?}");
    }
    // CONNECT with its reserved flag set: CONNACK 0x81.
    let mut c = Raw::connect(addr, true).await;
    let mut b = bytes::BytesMut::new();
    v5::Packet::Connect(
        v5::Connect {
            keep_alive: 30,
            client_id: "reserved".into(),
            clean_start: true,
            properties: None,
        },
        None,
        None,
    )
    .write(&mut b, None)
    .unwrap();
    b[9] |= 0x01;
    c.send_bytes(&b).await;
    match c.recv(Duration::from_secs(10)).await {
        Some(Packet::V5(v5::Packet::ConnAck(a))) => {
            assert_eq!(a.code, v5::ConnectReturnCode::MalformedPacket)
        }
        other => panic!("reserved flag: {:?}", other.as_ref().map(describe)),
    }
    assert!(server.counters().malformed_packets >= 5);
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_subscribers_maximum_packet_size_is_skipped_not_fatal() {
    let first = unique("mps");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/mps");
    let mut props = v5::ConnectProperties::new();
    props.max_packet_size = Some(1024);
    let (mut sub, _) = connected(addr, Some(props)).await;
    let mut s = v5::Subscribe::new(v5::Filter::new(&topic, QoS::AtLeastOnce), None);
    s.pkid = 1;
    sub.send5(v5::Packet::Subscribe(s)).await;
    assert!(matches!(
        sub.recv(Duration::from_secs(10)).await,
        Some(Packet::V5(v5::Packet::SubAck(_)))
    ));
    harness::settle().await;
    let (mut publisher, _) = connected(addr, None).await;
    for (pkid, size) in [(1u16, 4096usize), (2, 10)] {
        publisher
            .send5(v5::Packet::Publish(v5::Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: Bytes::from(topic.clone()),
                pkid,
                payload: Bytes::from(vec![b'y'; size]),
                properties: None,
            }))
            .await;
        assert!(matches!(
            publisher.recv(Duration::from_secs(10)).await,
            Some(Packet::V5(v5::Packet::PubAck(_)))
        ));
    }
    // Only the small one arrives, and the subscriber stays connected.
    let mut got = Vec::new();
    while let Some(p) = sub.recv(Duration::from_secs(5)).await {
        match p {
            Packet::V5(v5::Packet::Publish(p)) => {
                got.push(p.payload.len());
                let ack = v5::PubAck::new(p.pkid, None);
                sub.send5(v5::Packet::PubAck(ack)).await;
            }
            Packet::V5(v5::Packet::Disconnect(d)) => panic!("disconnected: {d:?}"),
            _ => {}
        }
    }
    assert_eq!(got, [10]);
    sub.send5(v5::Packet::PingReq(v5::PingReq)).await;
    assert!(matches!(
        sub.recv(Duration::from_secs(5)).await,
        Some(Packet::V5(v5::Packet::PingResp(_)))
    ));
    assert_eq!(server.counters().publish_discarded_too_large, 1);
    server.stop(Duration::from_secs(5)).await;
}
