#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! While the RocketMQ broker is down, QoS 1 publishes are not acknowledged; once it is
//! back, the client's retry lands, and no acknowledged message is missing.
//!
//! This stops and restarts the shared test broker, so it is the only test in its binary
//! (cargo runs test binaries one at a time).

mod harness;

use std::time::Duration;

use bytes::Bytes;
use harness::{config_text, consume, password, start_bridge};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use test_support::raw::{Packet, Raw};
use test_support::{rocketmq, unique};

fn broker(action: &str) {
    let status = rocketmq::script(&[action, "broker"])
        .status()
        .expect("rocketmq.sh");
    assert!(status.success(), "rocketmq.sh {action} broker failed");
}

/// Restarts the broker when dropped, so a failing test does not leave it stopped for the
/// tests that follow.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = rocketmq::script(&["start", "broker"]).status();
        }
    }
}

fn publish5(topic: &str, pkid: u16, dup: bool, payload: &str) -> v5::Packet {
    v5::Packet::Publish(v5::Publish {
        dup,
        qos: rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        retain: false,
        topic: Bytes::from(topic.to_owned()),
        pkid,
        payload: Bytes::from(payload.to_owned()),
        properties: None,
    })
}

async fn puback5(c: &mut Raw) -> v5::PubAckReason {
    match c.recv(Duration::from_secs(30)).await {
        Some(Packet::V5(v5::Packet::PubAck(a))) => a.reason,
        _ => panic!("no PUBACK"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_during_a_broker_outage_are_not_acknowledged_and_retries_land() {
    let first = unique("outage");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/line1");
    let mut acked: Vec<String> = Vec::new();

    let mut c5 = Raw::connect(addr, true).await;
    assert_eq!(
        c5.handshake("out5", Some("demo"), Some(&password("out5")))
            .await,
        0
    );
    for i in 0..5 {
        let p = format!("before-{i}");
        c5.send5(publish5(&topic, 1 + i, false, &p)).await;
        assert_eq!(puback5(&mut c5).await, v5::PubAckReason::Success);
        acked.push(p);
    }

    let _guard = RestartOnDrop;
    broker("stop");
    // MQTT 5: an error PUBACK, never Success, while the broker is down.
    for i in 0..3u16 {
        c5.send5(publish5(&topic, 10 + i, false, &format!("during-{i}")))
            .await;
        let reason = puback5(&mut c5).await;
        assert_ne!(
            reason,
            v5::PubAckReason::Success,
            "acknowledged while the broker is down"
        );
    }
    // MQTT 3.1.1: no PUBACK; the connection is closed so the client retries on reconnect.
    let mut c4 = Raw::connect(addr, false).await;
    assert_eq!(
        c4.handshake("out4", Some("demo"), Some(&password("out4")))
            .await,
        0
    );
    let mut p = v4::Publish::new(topic.clone(), rumqttc::QoS::AtLeastOnce, "v4-retry");
    p.pkid = 7;
    c4.send4(v4::Packet::Publish(p.clone())).await;
    let (closed, _) = c4.closed_within(Duration::from_secs(30)).await;
    assert!(closed, "3.1.1 connection must be closed unacknowledged");

    broker("start");
    // The retries land: MQTT 5 resends (the application's retry after the error PUBACK),
    // 3.1.1 reconnects and resends with DUP.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for i in 0..3u16 {
        let payload = format!("during-{i}");
        loop {
            c5.send5(publish5(&topic, 10 + i, true, &payload)).await;
            if puback5(&mut c5).await == v5::PubAckReason::Success {
                acked.push(payload);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "retry never landed");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut c4 = Raw::connect(addr, false).await;
    assert_eq!(
        c4.handshake("out4", Some("demo"), Some(&password("out4")))
            .await,
        0
    );
    p.dup = true;
    c4.send4(v4::Packet::Publish(p)).await;
    assert!(matches!(
        c4.recv(Duration::from_secs(30)).await,
        Some(Packet::V4(v4::Packet::PubAck(a))) if a.pkid == 7
    ));
    acked.push("v4-retry".into());

    let got = consume(&first, acked.len());
    let bodies: Vec<&str> = got.iter().filter_map(|m| m["body_utf8"].as_str()).collect();
    for a in &acked {
        assert!(
            bodies.contains(&a.as_str()),
            "acknowledged message {a} is missing"
        );
    }
    server.stop(Duration::from_secs(5)).await;
}
