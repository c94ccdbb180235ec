//! MQTT 5 sessions in the local broker, judged by third-party clients (paho-mqtt 2.x
//! and rumqttc v5): session expiry (3.1.2-23: a session ends when its connection
//! closes with expiry 0, lives N seconds otherwise), offline queueing of a session
//! started with Clean Start 1, Subscription Identifiers (3.3.4-3/4: on live, queued
//! and retained deliveries, kept across a restart), overlapping subscriptions
//! (3.3.4-2) and the subscribe options (No Local 3.8.3-3, Retain As Published
//! 3.3.1-12/13, Retain Handling 3.3.1-9..11).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, Filter, RetainForwardRule, SubscribeProperties,
};
use support::{config, paho_async, start, stop};
use test_support::v5;

/// 3.1.2-23: expiry 0 (or absent) ends the session with the connection; expiry N keeps
/// it N seconds and no longer (even before the minute's sweep); a DISCONNECT may raise
/// a non-zero expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_3_1_2_23_paho() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    paho_async(
        r##"
a = C("se-a")
assert a.connect(clean=True, expiry=0) == (0, 0)
a.subscribe("se/t", 2)
a.disconnect()
assert a.connect(clean=False, expiry=0)[0] == 0, "expiry 0: the session ended"
a.disconnect()
assert a.connect(clean=False)[0] == 0, "expiry absent: the session ended"
a.disconnect()
a.connect(clean=False, expiry=3)
a.subscribe("se/t", 2)
a.disconnect()
time.sleep(1)
assert a.connect(clean=False, expiry=3)[0] == 1, "within 3 s: present"
a.disconnect()
time.sleep(4)
assert a.connect(clean=False, expiry=3)[0] == 0, "after 3 s: gone"
a.disconnect()
b = C("se-b")
b.connect(clean=True, expiry=1)
b.subscribe("se/t", 2)
b.disconnect(expiry=5)
time.sleep(2.5)
assert b.connect(clean=False, expiry=1)[0] == 1, "DISCONNECT raised the expiry to 5"
b.disconnect()
time.sleep(2)
assert b.connect(clean=False, expiry=0)[0] == 0, "expiry 1 passed"
b.disconnect()
"##,
        addr.port(),
    )
    .await;
    stop(agent).await;
}

/// The Paho suite's offline queueing: Clean Start 1 with expiry 99999, a wildcard QoS 2
/// subscription, disconnect; QoS 0, 1, 2 published; a reconnect with Clean Start 0
/// (and no expiry) gets the QoS 1 and 2 messages (QoS 0 is not queued offline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queueing_after_clean_start_paho() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    paho_async(
        r##"
a = C("oq-a")
a.connect(clean=True, expiry=99999)
a.subscribe("+/+", 2)
a.disconnect()
b = C("oq-b")
b.connect()
b.publish("oq/q0", "qos 0", 0)
b.publish("oq/q1", "qos 1", 1)
b.publish("oq/q2", "qos 2", 2)
time.sleep(0.5)
b.disconnect()
assert a.connect(clean=False)[0] == 1
got = a.wait_msgs(2)
time.sleep(0.5)
got = sorted((t, p) for (t, p, q, r, i) in a.got)
assert got == [("oq/q1", "qos 1"), ("oq/q2", "qos 2")], got
a.disconnect()
# It reconnected with expiry 0: the session ended with that connection.
assert a.connect(clean=False)[0] == 0
a.disconnect()
"##,
        addr.port(),
    )
    .await;
    stop(agent).await;
}

/// The same with rumqttc v5, and message expiry while queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queueing_after_clean_start_rumqttc() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let mut o = v5::options(addr, "oq-r");
    o.set_clean_start(true);
    o.set_connect_properties(ConnectProperties {
        session_expiry_interval: Some(99999),
        ..ConnectProperties::new()
    });
    let (mut s, _) = v5::Client::connect(o).await;
    s.subscribe("oqr/#", v5::QoS::ExactlyOnce).await;
    s.disconnect().await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "oq-rp")).await;
    for (i, expiry) in [(1, None), (2, Some(1)), (3, Some(100))] {
        let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
            message_expiry_interval: expiry,
            ..Default::default()
        };
        p.client
            .publish_with_properties(format!("oqr/{i}"), v5::QoS::ExactlyOnce, false, "x", props)
            .await
            .unwrap();
        p.wait_for(|p| matches!(p, v5::Packet::PubComp(_))).await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut o = v5::options(addr, "oq-r");
    o.set_clean_start(false);
    let (mut s, connack) = v5::Client::connect(o).await;
    let v5::Packet::ConnAck(ack) = connack else {
        panic!("{connack:?}")
    };
    assert!(ack.session_present);
    let mut topics = Vec::new();
    while let Some(m) = s.publish(Duration::from_millis(1500)).await {
        topics.push(String::from_utf8_lossy(&m.topic).into_owned());
    }
    topics.sort();
    assert_eq!(topics, ["oqr/1", "oqr/3"], "oqr/2 expired while queued");
    stop(agent).await;
}

/// 3.3.4-3/4: a delivery carries the identifiers of every matching subscription (one
/// copy per client, 3.3.4-2, at the highest granted QoS), also on retained messages
/// sent on subscribe and on messages queued offline; no identifier without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifiers_3_3_4_3_paho() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    paho_async(
        r##"
p = C("sid-p")
p.connect()
p.publish("sid/r", "kept", 1, retain=True)
a = C("sid-a")
a.connect(clean=True, expiry=600)
a.subscribe("sid/#", 2, sub_id=7)
got = a.wait_msgs(1)
assert got[0] == ("sid/r", "kept", 1, 1, [7]), got
a.subscribe("sid/+", 1, sub_id=9)
a.subscribe("sid/x/#", 1)
got = a.wait_msgs(2)
assert got[1] == ("sid/r", "kept", 1, 1, [9]), got
p.publish("sid/a", "both", 2)
got = a.wait_msgs(3)
time.sleep(0.5)
assert len(a.got) == 3, a.got
assert a.got[2] == ("sid/a", "both", 2, 0, [7, 9]), a.got
p.publish("sid/x/y", "one", 1)
got = a.wait_msgs(4)
assert got[3] == ("sid/x/y", "one", 1, 0, [7]), got
a.disconnect()
p.publish("sid/b", "offline", 1)
a.got.clear()
assert a.connect(clean=False, expiry=600)[0] == 1
got = a.wait_msgs(1)
assert got[0] == ("sid/b", "offline", 1, 0, [7, 9]), got
a.disconnect()
p.publish("sid/r", "", 1, retain=True)
"##,
        addr.port(),
    )
    .await;
    stop(agent).await;
}

/// Subscription identifiers are kept in `broker.db`: after a restart a persistent
/// session's subscription still carries its identifier (rumqttc v5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifiers_survive_a_restart_rumqttc() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let persistent = |addr| {
        let mut o = v5::options(addr, "sid-r");
        o.set_clean_start(false);
        o.set_connect_properties(ConnectProperties {
            session_expiry_interval: Some(600),
            ..ConnectProperties::new()
        });
        o
    };
    let (s, _) = v5::Client::connect(persistent(addr)).await;
    s.client
        .subscribe_with_properties(
            "sidr/#",
            v5::QoS::AtLeastOnce,
            SubscribeProperties {
                id: Some(42),
                user_properties: Vec::new(),
            },
        )
        .await
        .unwrap();
    let mut s = s;
    s.wait_for(|p| matches!(p, v5::Packet::SubAck(_))).await;
    s.disconnect().await;
    stop(agent).await;

    let mut c = config();
    c.listeners[0].bind = addr;
    let (agent, addr) = start(c, dir.path()).await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "sid-rp")).await;
    p.client
        .publish("sidr/q", v5::QoS::AtLeastOnce, false, "queued")
        .await
        .unwrap();
    p.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await;
    let (mut s, _) = v5::Client::connect(persistent(addr)).await;
    let m = s.publish(test_support::WAIT).await.expect("queued message");
    let ids = m.properties.map(|p| p.subscription_identifiers);
    assert_eq!(ids, Some(vec![42]), "queued");
    p.client
        .publish("sidr/l", v5::QoS::AtLeastOnce, false, "live")
        .await
        .unwrap();
    let m = s.publish(test_support::WAIT).await.expect("live message");
    let ids = m.properties.map(|p| p.subscription_identifiers);
    assert_eq!(ids, Some(vec![42]), "live");
    stop(agent).await;
}

/// No Local (3.8.3-3), Retain As Published (3.3.1-12/13) and Retain Handling 0/1/2
/// (3.3.1-9..11) with paho.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_options_paho() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    paho_async(
        r##"
a = C("so-a")
a.connect()
a.subscribe("so/nl", 1, noLocal=True)
a.subscribe("so/l", 1)
a.publish("so/nl", "mine", 1)
a.publish("so/l", "mine too", 1)
got = a.wait_msgs(1)
time.sleep(0.5)
assert [m[0] for m in a.got] == ["so/l"], a.got
a.got.clear()
a.publish("so/r", "kept", 1, retain=True)
b = C("so-b")
b.connect()
b.subscribe("so/r", 1, retainAsPublished=True, retainHandling=0)
b.wait_msgs(1)
b.subscribe("so/r", 1, retainAsPublished=True, retainHandling=1)  # exists: not sent
b.subscribe("so/+", 1, retainHandling=2)  # never sent
b.subscribe("so/#", 1, retainHandling=1)  # new: sent
b.wait_msgs(2)
time.sleep(0.5)
assert [(m[0], m[3]) for m in b.got] == [("so/r", 1), ("so/r", 1)], b.got
b.got.clear()
b.c.unsubscribe("so/+"); b.c.unsubscribe("so/#"); time.sleep(0.3)
a.publish("so/r", "again", 1, retain=True)
got = b.wait_msgs(1)
time.sleep(0.3)
assert [(m[0], m[3]) for m in b.got] == [("so/r", 1)], ("retain as published", b.got)
c = C("so-c")
c.connect()
c.subscribe("so/r", 1)
c.wait_msgs(1)
c.got.clear()
a.publish("so/r", "live", 1, retain=True)
got = c.wait_msgs(1)
assert got[0][3] == 0, ("retain cleared without RAP", got)
a.publish("so/r", "", 1, retain=True)
"##,
        addr.port(),
    )
    .await;
    stop(agent).await;
}

/// The same subscribe options with rumqttc v5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_options_rumqttc() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let (mut a, _) = v5::Client::connect(v5::options(addr, "sor-a")).await;
    let mut nl = Filter::new("sor/nl", v5::QoS::AtLeastOnce);
    nl.nolocal = true;
    a.client.subscribe_many([nl]).await.unwrap();
    a.wait_for(|p| matches!(p, v5::Packet::SubAck(_))).await;
    a.client
        .publish("sor/nl", v5::QoS::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    a.client
        .publish("sor/r", v5::QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    assert!(
        a.publish(Duration::from_millis(800)).await.is_none(),
        "No Local"
    );

    let (mut b, _) = v5::Client::connect(v5::options(addr, "sor-b")).await;
    let mut f = Filter::new("sor/r", v5::QoS::AtLeastOnce);
    f.preserve_retain = true;
    f.retain_forward_rule = RetainForwardRule::OnEverySubscribe;
    b.client.subscribe_many([f.clone()]).await.unwrap();
    let m = b
        .publish(test_support::WAIT)
        .await
        .expect("retained, handling 0");
    assert!(m.retain);
    f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    b.client.subscribe_many([f.clone()]).await.unwrap();
    let mut never = Filter::new("sor/+", v5::QoS::AtLeastOnce);
    never.retain_forward_rule = RetainForwardRule::Never;
    b.client.subscribe_many([never]).await.unwrap();
    assert!(
        b.publish(Duration::from_millis(800)).await.is_none(),
        "handling 1 on an existing subscription and 2 send nothing"
    );
    b.client.unsubscribe("sor/+").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.client
        .publish("sor/r", v5::QoS::AtLeastOnce, true, "again")
        .await
        .unwrap();
    let m = b.publish(test_support::WAIT).await.expect("live retained");
    assert!(m.retain, "retain as published");
    a.client
        .publish("sor/r", v5::QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    stop(agent).await;
}

/// A `broker.db` written by the version before subscription identifiers (no
/// `subscriptions.sub_id`, no `queue.sub_ids`) opens: its session resumes with its
/// queued message and its subscription, and new subscriptions get identifiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_broker_db_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join("broker.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE sessions (client_id TEXT PRIMARY KEY, expiry_secs INTEGER NOT NULL,
                disconnected_ms INTEGER);
             CREATE TABLE subscriptions (client_id TEXT NOT NULL, filter TEXT NOT NULL,
                qos INTEGER NOT NULL, no_local INTEGER NOT NULL,
                retain_as_published INTEGER NOT NULL, PRIMARY KEY (client_id, filter));
             CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL,
                topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
                retain INTEGER NOT NULL, props TEXT, expires_ms INTEGER,
                sent INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX queue_client ON queue (client_id, id);
             CREATE TABLE retained (topic TEXT PRIMARY KEY, payload BLOB NOT NULL,
                qos INTEGER NOT NULL, props TEXT, expires_ms INTEGER);
             INSERT INTO sessions VALUES ('old-c', 600, NULL);
             INSERT INTO subscriptions VALUES ('old-c', 'old/#', 1, 0, 0);
             INSERT INTO queue VALUES (1, 'old-c', 'old/x', X'71', 1, 0, NULL, NULL, 0);",
        )
        .unwrap();
    }
    let (agent, addr) = start(config(), dir.path()).await;
    let mut o = v5::options(addr, "old-c");
    o.set_clean_start(false);
    o.set_connect_properties(ConnectProperties {
        session_expiry_interval: Some(600),
        ..ConnectProperties::new()
    });
    let (mut s, connack) = v5::Client::connect(o).await;
    let v5::Packet::ConnAck(ack) = connack else {
        panic!("{connack:?}")
    };
    assert!(ack.session_present);
    let m = s
        .publish(test_support::WAIT)
        .await
        .expect("the stored message");
    assert_eq!((&m.topic[..], &m.payload[..]), (&b"old/x"[..], &b"q"[..]));
    s.client
        .subscribe_with_properties(
            "new/#",
            v5::QoS::AtLeastOnce,
            SubscribeProperties {
                id: Some(8),
                user_properties: Vec::new(),
            },
        )
        .await
        .unwrap();
    s.wait_for(|p| matches!(p, v5::Packet::SubAck(_))).await;
    let (p, _) = v5::Client::connect(v5::options(addr, "old-p")).await;
    for t in ["old/y", "new/y"] {
        p.client
            .publish(t, v5::QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = s.publish(test_support::WAIT).await.expect("live message");
        let ids = m
            .properties
            .map(|p| p.subscription_identifiers)
            .unwrap_or_default();
        got.push((String::from_utf8_lossy(&m.topic).into_owned(), ids));
    }
    got.sort();
    assert_eq!(
        got,
        [("new/y".to_owned(), vec![8]), ("old/y".to_owned(), vec![])]
    );
    stop(agent).await;
}
