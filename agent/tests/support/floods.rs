//! The floods of the security audit (issue #20), set up once for `tests/abuse.rs` (which
//! asserts the bounds) and `benches/abuse.rs` (which prints figures): the same CONNECTs,
//! wills, sessions and paho-mqtt publishers in both. Every loop is bounded by its caller's
//! count; all traffic is on loopback.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::Command;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectProperties, LastWill, Login};
use test_support::raw::{connect5, first_reply};
use test_support::v5;

/// The config lines of user `dev` with password `right` (an Argon2 hash of it).
pub fn dev_user() -> String {
    let hash = edge_agent::auth::hash_password("right").unwrap();
    format!("\n[[auth.users]]\nname = \"dev\"\npassword_hash = \"{hash}\"\n")
}

/// `n` CONNECTs of user `dev` with a wrong password, all at once; the CONNACK code each
/// got (`None`: no CONNACK).
pub async fn wrong_passwords(addr: SocketAddr, n: usize) -> Vec<Option<u8>> {
    let wrong = connect5(
        "flood",
        ConnectProperties::new(),
        None,
        Some(Login::new("dev", "wrong")),
    );
    let mut flood = Vec::new();
    for _ in 0..n {
        let bytes = wrong.clone();
        flood.push(tokio::spawn(async move { first_reply(addr, &bytes).await }));
    }
    let mut codes = Vec::new();
    for f in flood {
        codes.push(f.await.unwrap().get(3).copied());
    }
    codes
}

/// Connection properties of a session that outlives its connection by an hour.
pub fn hour_session() -> ConnectProperties {
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(3600);
    props
}

/// The CONNECT of client `w{i}`: a one-hour session with a will of 60 KB (a will payload
/// is at most 64 KiB) to `will/{i}`, delayed by an hour.
pub fn delayed_will(i: usize) -> Vec<u8> {
    let will = LastWill::new(
        format!("will/{i}"),
        vec![7u8; 60_000],
        QoS::AtLeastOnce,
        false,
        Some(v5::will_delay(3600)),
    );
    connect5(&format!("w{i}"), hour_session(), Some(will), None)
}

/// Options of a persistent MQTT 5 session `id` (clean start off, one hour), with Maximum
/// Packet Size `max_packet` when given.
pub fn persistent(addr: SocketAddr, id: &str, max_packet: Option<u32>) -> rumqttc::v5::MqttOptions {
    let mut o = v5::options(addr, id);
    o.set_clean_start(false);
    let mut props = hour_session();
    props.max_packet_size = max_packet;
    o.set_connect_properties(props);
    o
}

/// A persistent MQTT 5 subscriber to `filter` at QoS 1, then gone (its session stays).
pub async fn offline_subscriber(addr: SocketAddr, id: &str, filter: &str) {
    let (mut c, _) = v5::Client::connect(persistent(addr, id, None)).await;
    c.subscribe(filter, QoS::AtLeastOnce).await;
    c.disconnect().await;
}

/// Publishes `n` QoS 1 messages of `size` bytes to `topic` (`{i}` replaced by the
/// message's number; retained if `retain`) with paho-mqtt, 16 in flight; returns once
/// every PUBACK came or `wait_secs` passed for one.
pub fn paho_publish(
    addr: SocketAddr,
    topic: &str,
    n: usize,
    size: usize,
    retain: bool,
    wait_secs: u32,
) {
    let script = r#"
import sys, paho.mqtt.client as mqtt
port, topic, n, size, retain, wait = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", int(sys.argv[6])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-pub", protocol=mqtt.MQTTv5)
c.max_inflight_messages_set(16)
c.connect("127.0.0.1", port)
c.loop_start()
infos = [c.publish(topic.replace("{i}", str(i)), b"x" * size, qos=1, retain=retain) for i in range(n)]
for i in infos:
    i.wait_for_publish(wait)
c.disconnect()
c.loop_stop()
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(addr.port().to_string())
        .arg(topic)
        .arg(n.to_string())
        .arg(size.to_string())
        .arg(if retain { "1" } else { "0" })
        .arg(wait_secs.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "paho: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
