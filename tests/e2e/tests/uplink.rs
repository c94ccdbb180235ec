//! Uplink end to end: a device (mosquitto_pub) publishes to the agent, the agent forwards
//! over mutual TLS to cloud-bridge, and a plain RocketMQ consumer (the Java client) reads
//! the messages: payload, mapped topic, message key = gateway id + journal sequence.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use e2e::{Agent, Bridge, device_publish};
use test_support::certs::Pki;
use test_support::rocketmq::consume;
use test_support::unique;

#[test]
fn device_to_rocketmq_consumer_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let first = unique("e2eup");
    let gateway = unique("gw");
    let pki = Pki::new(&dir.path().join("pki"));
    let gw_cert = pki.client(&gateway, true);
    let bridge = Bridge::start(dir.path(), &first, Some(&pki), "");
    let uplink = format!(
        "bridge = \"localhost:{}\"\nusername = \"demo\"\npassword = {:?}\ntls = {{ ca = {:?}, cert = {:?}, key = {:?} }}",
        bridge.port,
        bridge.password(&gateway),
        pki.ca,
        gw_cert.cert,
        gw_cert.key
    );
    let agent = Agent::start(dir.path(), &gateway, &first, &uplink, "");

    let payloads: Vec<String> = (0..50).map(|i| format!("{{\"temp\":{i}}}")).collect();
    device_publish(agent.port, "dev-1", "sensors/temp", 1, &payloads);
    agent.wait_drained(Duration::from_secs(60));

    let got = consume(&first, payloads.len(), Duration::from_secs(60));
    assert_eq!(got.len(), payloads.len());
    let mut seqs = Vec::new();
    for (m, want) in got.iter().zip(&payloads) {
        let props = &m["properties"];
        assert_eq!(
            props["originMqttTopic"].as_str(),
            Some(format!("{first}/{gateway}/sensors/temp").as_str()),
            "{m}"
        );
        // One topic, one queue: the consumer sees publish order.
        assert_eq!(m["body_utf8"].as_str(), Some(want.as_str()), "{m}");
        let key = m["keys"].as_str().expect("KEYS set");
        let (gw, seq) = key.split_once(':').expect("gateway:seq");
        assert_eq!(gw, gateway);
        seqs.push(seq.parse::<u64>().expect("seq"));
        // The user properties travel in mqtt5UserProperties, never in extData (issue #15).
        let user: Vec<(String, String)> = serde_json::from_str(
            props["mqtt5UserProperties"]
                .as_str()
                .expect("mqtt5UserProperties"),
        )
        .expect("json");
        assert!(
            user.contains(&("msg-key".to_owned(), key.to_owned())),
            "{user:?}"
        );
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "keys in journal order: {seqs:?}"
    );
    assert!(agent.process.log_text().contains("uplink connected"));
}
