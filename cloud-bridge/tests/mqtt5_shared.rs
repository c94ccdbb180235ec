#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The MQTT 5 features of the shared `mqtt` crate (issue #14), on the bridge with its
//! configuration keys, against the real RocketMQ: Server Keep Alive
//! (`limits.max_keepalive`, 3.2.2.3.14), topic aliases from the client up to
//! `limits.topic_alias_maximum` and from the server to a client that allows them
//! (3.3.2.3.4), and the Receive Maximum advertised. With paho-mqtt and rumqttc. The same
//! features are tested in depth against edge-agent (`agent/tests/mqtt5_shared.rs`).

mod harness;

use std::process::Command;
use std::time::Duration;

use harness::{config_text, password, start_bridge};
use test_support::unique;

/// A bridge whose `[limits]` also hold `limits` (keys, one per line).
fn text(first: &str, limits: &str) -> String {
    config_text(first, &[], "").replacen("[limits]\n", &format!("[limits]\n{limits}\n"), 1)
}

const PAHO: &str = r##"
import sys, time, hmac, hashlib, base64, paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port, first = int(sys.argv[1]), sys.argv[2]
def pw(cid):
    return base64.b64encode(hmac.new(b"test-secret", cid.encode(), hashlib.sha1).digest()).decode()
def client(cid, keepalive, alias_max=None):
    res = {}
    def on_connect(c, u, f, rc, props):
        res["rc"] = rc.value
        res["ska"] = getattr(props, "ServerKeepAlive", None)
        res["tam"] = getattr(props, "TopicAliasMaximum", None)
        res["rm"] = getattr(props, "ReceiveMaximum", None)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.username_pw_set("demo", pw(cid))
    c.on_connect = on_connect
    p = None
    if alias_max is not None:
        p = Properties(PacketTypes.CONNECT); p.TopicAliasMaximum = alias_max
    c.connect("127.0.0.1", port, keepalive=keepalive, properties=p)
    c.loop_start()
    deadline = time.time() + 10
    while time.time() < deadline and "rc" not in res:
        time.sleep(0.05)
    return c, res
got = []
sub, r = client(first + "-sub", 60, alias_max=2)
assert r == {"rc": 0, "ska": 5, "tam": 10, "rm": 128}, r
aliases = {}
def on_message(c, u, m):
    # paho-mqtt does not resolve the aliases a server sends: resolve them here.
    alias = getattr(m.properties, "TopicAlias", None) if m.properties is not None else None
    topic = m.topic
    if alias is not None:
        assert 1 <= alias <= 2, alias
        if topic:
            aliases[alias] = topic
        else:
            topic = aliases[alias]
    got.append((topic, m.payload, m.topic == ""))
sub.on_message = on_message
sub.subscribe(first + "/#", qos=1)
time.sleep(1)
pub, r = client(first + "-pub", 0)
assert r["rc"] == 0 and r["ska"] == 5, r
a = Properties(PacketTypes.PUBLISH); a.TopicAlias = 3
pub.publish(first + "/one", b"m1", qos=1, properties=a).wait_for_publish(10)
pub.publish("", b"m2", qos=1, properties=a).wait_for_publish(10)
b = Properties(PacketTypes.PUBLISH); b.TopicAlias = 10
pub.publish(first + "/ten", b"m3", qos=1, properties=b).wait_for_publish(10)
pub.publish("", b"m4", qos=1, properties=b).wait_for_publish(10)
pub.publish(first + "/one", b"m5", qos=1).wait_for_publish(10)
deadline = time.time() + 20
while time.time() < deadline and len(got) < 5:
    time.sleep(0.05)
want = [(first + "/one", b"m1"), (first + "/one", b"m2"), (first + "/ten", b"m3"),
        (first + "/ten", b"m4"), (first + "/one", b"m5")]
assert sorted((t, p) for t, p, _ in got) == sorted(want), got
assert any(empty for _, _, empty in got), got
print("OK")
for c in (sub, pub):
    c.disconnect(); c.loop_stop()
"##;

/// paho-mqtt: Server Keep Alive for a client asking for more and for 0, the Topic Alias
/// Maximum and Receive Maximum in CONNACK, aliases from the publisher resolved (3.3.2-12),
/// and the subscriber, which allows 2, sent aliases 1..=2 for its repeated topics (paho
/// hands them over unresolved: the script resolves them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_topic_aliases_on_the_bridge_paho_3_2_2_21_3_3_2_10() {
    let first = unique("m5s");
    let (bridge, _) = start_bridge(&text(&first, "max_keepalive = 5")).await;
    let port = bridge.local_addr("mqtt").unwrap().port();
    let f = first.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["90", "python3", "-c", PAHO, &port.to_string(), &f])
            .output()
            .expect("python3 with paho-mqtt")
    })
    .await
    .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "paho: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    bridge.stop(Duration::from_secs(2)).await;
}

/// rumqttc v5: the same CONNACK (Server Keep Alive, Topic Alias Maximum), and a
/// publish through an alias reaches a subscriber with its topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_topic_aliases_on_the_bridge_rumqttc_3_2_2_21_3_3_2_12() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    let first = unique("m5r");
    let (bridge, _) = start_bridge(&text(&first, "max_keepalive = 5")).await;
    let addr = bridge.local_addr("mqtt").unwrap();
    let topic = format!("{first}/aliased");
    let connect = |id: String| {
        let mut o = MqttOptions::new(id.clone(), "127.0.0.1", addr.port());
        o.set_credentials("demo", password(&id));
        o.set_keep_alive(Duration::from_secs(30));
        AsyncClient::new(o, 16)
    };
    let (sub, mut sub_ev) = connect(unique("rs"));
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok(e) = sub_ev.poll().await {
            if tx.send(e).await.is_err() {
                return;
            }
        }
    });
    let mut connack = None;
    let mut subscribed = false;
    while !subscribed {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(Event::Incoming(Packet::ConnAck(a)))) => {
                connack = Some(a);
                sub.subscribe(format!("{first}/#"), QoS::AtLeastOnce)
                    .await
                    .unwrap();
            }
            Ok(Some(Event::Incoming(Packet::SubAck(_)))) => subscribed = true,
            Ok(Some(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
    let props = connack
        .and_then(|a| a.properties)
        .expect("CONNACK properties");
    assert_eq!(props.server_keep_alive, Some(5), "{props:?}");
    assert_eq!(props.topic_alias_max, Some(10), "{props:?}");

    let (publisher, mut pub_ev) = connect(unique("rp"));
    tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });
    let alias = |n| PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    };
    publisher
        .publish_with_properties(&topic, QoS::AtLeastOnce, false, "a1", alias(4))
        .await
        .unwrap();
    publisher
        .publish_with_properties("", QoS::AtLeastOnce, false, "a2", alias(4))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(Event::Incoming(Packet::Publish(p)))) => {
                got.push((String::from_utf8_lossy(&p.topic).into_owned(), p.payload));
            }
            Ok(Some(_)) => {}
            other => panic!("publishes missing ({got:?}): {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            (topic.clone(), bytes::Bytes::from_static(b"a1")),
            (topic.clone(), bytes::Bytes::from_static(b"a2"))
        ]
    );
    bridge.stop(Duration::from_secs(2)).await;
}
