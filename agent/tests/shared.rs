//! Shared subscriptions `$share/{group}/{filter}` (MQTT 5 4.8.2) in the local broker,
//! with paho-mqtt 2.x, mosquitto_sub -V 5 and rumqttc v5: one member per message, in
//! turn; an unacknowledged QoS 1 message of a member whose session ends goes to
//! another member; a group of offline persistent members queues; retained messages
//! are not sent on a shared subscription (3.8.4).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{config, paho_async, start, stop};
use test_support::v5;

/// 4.8.2: each message to one member, round robin; other subscribers get every one;
/// no retained message on a shared subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_one_member_per_message_4_8_2_paho() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    paho_async(
        r##"
p = C("sh-p")
p.connect()
p.publish("sh/r", "kept", 1, retain=True)
m1, m2, all_ = C("sh-m1"), C("sh-m2"), C("sh-all")
for c in (m1, m2, all_):
    c.connect()
assert m1.subscribe("$share/g/sh/#", 1) == [1]
assert m2.subscribe("$share/g/sh/+", 1, sub_id=5) == [1]  # another group's filter
assert m2.subscribe("$share/g/sh/#", 1, sub_id=3) == [1]
all_.subscribe("sh/#", 1)
all_.wait_msgs(1)  # the retained one, on the ordinary subscription
time.sleep(0.5)
assert m1.got == [] and m2.got == [], ("no retained on $share", m1.got, m2.got)
all_.got.clear()
for i in range(6):
    p.publish("sh/x/%d" % i, str(i), 1)
all_.wait_msgs(6)
time.sleep(0.5)
g1 = [m for m in m1.got if m[0].startswith("sh/x/")]
g2 = [m for m in m2.got if m[0].startswith("sh/x/")]
assert len(g1) == 3 and len(g2) == 3, (m1.got, m2.got)
assert sorted(m[1] for m in g1 + g2) == [str(i) for i in range(6)]
assert all(m[4] == [3] for m in g2), g2
assert len(all_.got) == 6
# "$share/g/sh/+" (m2 alone) matches sh/y: m2 gets it with that subscription's id.
p.publish("sh/y", "y", 1)
time.sleep(0.5)
assert [5] in [m[4] for m in m2.got if m[0] == "sh/y"], m2.got
assert m1.subscribe("$share//x", 1) == [0x8F] and m1.subscribe("$share/g", 1) == [0x8F]
p.publish("sh/r", "", 1, retain=True)
"##,
        addr.port(),
    )
    .await;
    stop(agent).await;
}

/// The same with two mosquitto_sub -V 5 members: four messages, two each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let port = addr.port().to_string();
    tokio::task::spawn_blocking(move || {
        let sub = |id: &str| {
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", "5", "-i", id])
                .args(["-t", "$share/grp/shm/#", "-q", "1", "-C", "2", "-W", "15"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("mosquitto_sub")
        };
        let (a, b) = (sub("shm-a"), sub("shm-b"));
        std::thread::sleep(Duration::from_millis(700));
        for i in 0..4 {
            let st = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", "5", "-q", "1"])
                .args(["-t", &format!("shm/{i}"), "-m", &i.to_string()])
                .status()
                .unwrap();
            assert!(st.success());
        }
        let mut all = Vec::new();
        for c in [a, b] {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "each member gets two");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(text.lines().count(), 2, "{text:?}");
            all.extend(text.lines().map(str::to_owned));
        }
        all.sort();
        assert_eq!(all, ["0", "1", "2", "3"]);
    })
    .await
    .unwrap();
    stop(agent).await;
}

/// 4.8.2: a QoS 1 message sent to a member whose connection (and session, expiry 0)
/// ends before it acknowledged goes to another member (rumqttc v5, manual acks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_unacknowledged_message_goes_to_another_member_4_8_2_rumqttc() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let mut o = v5::options(addr, "shr-a");
    o.set_manual_acks(true);
    let (mut a, _) = v5::Client::connect(o).await;
    a.subscribe("$share/g/shr/#", v5::QoS::AtLeastOnce).await;
    let (mut b, _) = v5::Client::connect(v5::options(addr, "shr-b")).await;
    b.subscribe("$share/g/shr/#", v5::QoS::AtLeastOnce).await;
    let (p, _) = v5::Client::connect(v5::options(addr, "shr-p")).await;
    // "shr-a" sorts first: the first message is its turn.
    p.client
        .publish("shr/1", v5::QoS::AtLeastOnce, false, "one")
        .await
        .unwrap();
    let m = a
        .publish(test_support::WAIT)
        .await
        .expect("member a gets it");
    assert_eq!(&m.payload[..], b"one");
    assert!(b.publish(Duration::from_millis(500)).await.is_none());
    a.kill(); // never acknowledged
    let m = b
        .publish(test_support::WAIT)
        .await
        .expect("member b gets it after a dropped");
    assert_eq!(&m.payload[..], b"one");
    p.client
        .publish("shr/2", v5::QoS::AtLeastOnce, false, "two")
        .await
        .unwrap();
    let m = b
        .publish(test_support::WAIT)
        .await
        .expect("the only member left");
    assert_eq!(&m.payload[..], b"two");
    stop(agent).await;
}

/// A group whose members are all offline persistent sessions: each message is queued
/// to one of them (as mosquitto does), delivered when it reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_of_offline_persistent_members_queues_paho() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    paho_async(
        r##"
m1, m2 = C("sho-1"), C("sho-2")
for m in (m1, m2):
    m.connect(clean=True, expiry=600)
    m.subscribe("$share/g/sho/#", 1, sub_id=4)
    m.disconnect()
p = C("sho-p")
p.connect()
for i in range(4):
    p.publish("sho/%d" % i, str(i), 1)
for m in (m1, m2):
    assert m.connect(clean=False, expiry=600)[0] == 1
time.sleep(1.5)
got = sorted(x[1] for x in m1.got + m2.got)
assert got == ["0", "1", "2", "3"], (m1.got, m2.got)
assert len(m1.got) == 2 and len(m2.got) == 2, (m1.got, m2.got)
assert all(x[4] == [4] for x in m1.got + m2.got)
"##,
        addr.port(),
    )
    .await;
    stop(agent).await;
}
