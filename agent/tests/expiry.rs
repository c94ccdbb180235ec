//! MQTT 5 expiry in the local broker: message expiry on offline queues, retained
//! messages and deliveries (expired messages are not delivered, the others go out with
//! the interval reduced by the wait), and the session expiry interval of a DISCONNECT
//! (0 ends the session; raising it from 0 is a protocol error that publishes the will).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectProperties, PublishProperties};
use support::{config, start, stop};
use test_support::{WAIT, raw, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn persistent(addr: std::net::SocketAddr, id: &str) -> rumqttc::v5::MqttOptions {
    let mut o = v5::options(addr, id);
    o.set_clean_start(false);
    o.set_connect_properties(ConnectProperties {
        session_expiry_interval: Some(600),
        ..ConnectProperties::new()
    });
    o
}

fn expiring(secs: Option<u32>) -> PublishProperties {
    PublishProperties {
        message_expiry_interval: secs,
        ..PublishProperties::default()
    }
}

/// Every PUBLISH that arrives within `wait` of the previous one: (topic, expiry).
async fn drain(c: &mut v5::Client, wait: Duration) -> Vec<(String, Option<u32>)> {
    let mut got = Vec::new();
    for _ in 0..100 {
        let Some(p) = c.publish(wait).await else {
            break;
        };
        let expiry = p.properties.and_then(|p| p.message_expiry_interval);
        got.push((String::from_utf8_lossy(&p.topic).into_owned(), expiry));
    }
    got.sort();
    got
}

#[tokio::test]
async fn expired_messages_are_not_delivered_and_the_rest_have_their_interval_reduced() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let (mut s, _) = v5::Client::connect(persistent(addr, "ex-sub")).await;
    s.subscribe("ex/#", v5::QoS::AtLeastOnce).await;
    s.disconnect().await;

    let (mut p, _) = v5::Client::connect(v5::options(addr, "ex-pub")).await;
    for (topic, retain, expiry) in [
        ("ex/short", false, Some(1)),
        ("ex/long", false, Some(100)),
        ("ex/none", false, None),
        ("ex/r-short", true, Some(1)),
        ("ex/r-long", true, Some(100)),
    ] {
        p.client
            .publish_with_properties(topic, v5::QoS::AtLeastOnce, retain, "x", expiring(expiry))
            .await
            .unwrap();
        p.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await;
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;

    // The offline queue: the two short-lived messages expired while it waited.
    let (mut s, _) = v5::Client::connect(persistent(addr, "ex-sub")).await;
    let got = drain(&mut s, Duration::from_millis(1500)).await;
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["ex/long", "ex/none", "ex/r-long"], "{got:?}");
    for (topic, expiry) in &got {
        match topic.as_str() {
            "ex/none" => assert_eq!(*expiry, None),
            _ => assert!(
                expiry.is_some_and(|e| (1..=98).contains(&e)),
                "{topic}: expiry {expiry:?} not reduced by the 2 s wait"
            ),
        }
    }
    s.disconnect().await;

    // Retained: the expired one is gone, the other one's interval is reduced.
    let (mut fresh, _) = v5::Client::connect(v5::options(addr, "ex-fresh")).await;
    fresh.subscribe("ex/#", v5::QoS::AtLeastOnce).await;
    let got = drain(&mut fresh, Duration::from_millis(1500)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "ex/r-long");
    assert!(got[0].1.is_some_and(|e| (1..=98).contains(&e)), "{got:?}");
    fresh.disconnect().await;
    p.disconnect().await;
    stop(agent).await;
}

/// An MQTT 5 CONNECT with clean start, optional session expiry and optional will.
fn connect_v5(client_id: &str, expiry: Option<u32>, will: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut props = Vec::new();
    if let Some(e) = expiry {
        props.push(0x11);
        props.extend_from_slice(&e.to_be_bytes());
    }
    let mut flags = 0x02;
    if will.is_some() {
        flags |= 0x04;
    }
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, flags, 0, 30];
    body.extend(raw::remaining_length(props.len()));
    body.extend(props);
    body.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    if let Some((topic, payload)) = will {
        body.push(0); // no will properties
        body.extend_from_slice(&u16::try_from(topic.len()).unwrap().to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        body.extend_from_slice(payload);
    }
    raw::packet(0x10, &body)
}

/// An MQTT 5 DISCONNECT (reason 0) with a session expiry interval.
fn disconnect_v5(expiry: u32) -> Vec<u8> {
    let mut p = vec![0xE0, 7, 0x00, 5, 0x11];
    p.extend_from_slice(&expiry.to_be_bytes());
    p
}

async fn raw_connect(addr: std::net::SocketAddr, connect: &[u8]) -> tokio::net::TcpStream {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(connect).await.unwrap();
    let mut head = [0u8; 2];
    tokio::time::timeout(WAIT, sock.read_exact(&mut head))
        .await
        .expect("CONNACK in time")
        .unwrap();
    assert_eq!(head[0], 0x20, "CONNACK");
    let mut rest = vec![0u8; usize::from(head[1])];
    sock.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest[1], 0, "accepted");
    sock
}

async fn session_present(addr: std::net::SocketAddr, id: &str) -> bool {
    let (c, connack) = v5::Client::connect(persistent(addr, id)).await;
    let v5::Packet::ConnAck(ack) = connack else {
        panic!("CONNACK expected, got {connack:?}");
    };
    c.disconnect().await;
    ack.session_present
}

#[tokio::test]
async fn disconnect_can_end_the_session_but_not_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;

    // A session kept by a plain DISCONNECT, and one ended by DISCONNECT expiry 0.
    for (id, expiry, kept) in [("dx-keep", 600, true), ("dx-end", 0, false)] {
        let mut sock = raw_connect(addr, &connect_v5(id, Some(600), None)).await;
        sock.write_all(&disconnect_v5(expiry)).await.unwrap();
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(WAIT, sock.read(&mut buf)).await; // closed by the server
        assert_eq!(session_present(addr, id).await, kept, "{id}");
    }

    // Session expiry 0 at CONNECT, 60 at DISCONNECT: protocol error, the will goes out.
    let (mut s, _) = v5::Client::connect(v5::options(addr, "dz-watch")).await;
    s.subscribe("dz/#", v5::QoS::AtLeastOnce).await;
    let mut sock = raw_connect(addr, &connect_v5("dz", None, Some(("dz/will", b"gone")))).await;
    sock.write_all(&disconnect_v5(60)).await.unwrap();
    let mut answer = [0u8; 3];
    tokio::time::timeout(WAIT, sock.read_exact(&mut answer))
        .await
        .expect("server DISCONNECT in time")
        .unwrap();
    assert_eq!(
        (answer[0], answer[2]),
        (0xE0, 0x82),
        "DISCONNECT, protocol error"
    );
    let will = s.publish(WAIT).await.expect("the will is published");
    assert_eq!(&will.payload[..], b"gone");
    s.disconnect().await;
    stop(agent).await;
}
