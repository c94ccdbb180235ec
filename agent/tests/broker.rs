//! The local broker's protocol behaviour with our own clients (rumqttc, 3.1.1 and 5, and
//! raw bytes): QoS downgrade, retained messages and wills (with MQTT 5 will delay),
//! keepalive 0, noLocal, persistent sessions across an agent restart, authentication,
//! and uplink publishes acknowledged after the journal commit.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use edge_agent::config::UserConfig;
use support::{config, start, stop};
use test_support::{WAIT, raw, v4, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn qos_is_downgraded_to_min_of_publish_and_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let (mut s0, _) = v5::Client::connect(v5::options(addr, "s0")).await;
    s0.subscribe("d/#", v5::QoS::AtMostOnce).await;
    let (mut s2, _) = v4::Client::connect(v4::options(addr, "s2")).await;
    s2.subscribe("d/#", v4::QoS::ExactlyOnce).await;
    let (p, _) = v5::Client::connect(v5::options(addr, "p")).await;
    p.client
        .publish("d/x", v5::QoS::ExactlyOnce, false, "two")
        .await
        .unwrap();
    p.client
        .publish("d/y", v5::QoS::AtLeastOnce, false, "one")
        .await
        .unwrap();
    let a = s0.publish(WAIT).await.expect("s0 gets d/x");
    let b = s0.publish(WAIT).await.expect("s0 gets d/y");
    assert_eq!((a.qos, b.qos), (v5::QoS::AtMostOnce, v5::QoS::AtMostOnce));
    let a = s2.publish(WAIT).await.expect("s2 gets d/x");
    let b = s2.publish(WAIT).await.expect("s2 gets d/y");
    assert_eq!(a.qos, v4::QoS::ExactlyOnce);
    assert_eq!(
        b.qos,
        v4::QoS::AtLeastOnce,
        "not upgraded to the subscription's QoS"
    );
    assert_eq!(&b.payload[..], b"one");
    p.disconnect().await;
    s0.disconnect().await;
    s2.disconnect().await;
    stop(agent).await;
}

#[tokio::test]
async fn retained_messages_survive_a_restart_and_empty_payload_clears() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let (p, _) = v4::Client::connect(v4::options(addr, "p")).await;
    p.client
        .publish("r/a", v4::QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    p.client
        .publish("r/b", v4::QoS::AtLeastOnce, true, "gone")
        .await
        .unwrap();
    p.client
        .publish("r/b", v4::QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    p.disconnect().await;
    stop(agent).await;

    let (agent, addr) = start(config(), dir.path()).await;
    let (mut s, _) = v5::Client::connect(v5::options(addr, "s")).await;
    s.subscribe("r/#", v5::QoS::AtLeastOnce).await;
    let m = s.publish(WAIT).await.expect("retained after restart");
    assert_eq!(
        (&m.topic[..], &m.payload[..], m.retain),
        (&b"r/a"[..], &b"kept"[..], true)
    );
    assert!(
        s.publish(Duration::from_millis(300)).await.is_none(),
        "r/b was cleared"
    );
    // A live publish to a subscriber is not flagged retained (no retain-as-published).
    let (p, _) = v5::Client::connect(v5::options(addr, "p")).await;
    p.client
        .publish("r/a", v5::QoS::AtLeastOnce, true, "new")
        .await
        .unwrap();
    let m = s.publish(WAIT).await.expect("live");
    assert!(!m.retain);
    p.disconnect().await;
    s.disconnect().await;
    stop(agent).await;
}

#[tokio::test]
async fn will_is_published_on_abnormal_end_and_will_delay_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let (mut s, _) = v5::Client::connect(v5::options(addr, "s")).await;
    s.subscribe("will/#", v5::QoS::AtLeastOnce).await;

    let mut o = v4::options(addr, "dies");
    o.set_last_will(rumqttc::LastWill::new(
        "will/dies",
        "bye",
        v4::QoS::AtLeastOnce,
        false,
    ));
    let (c, _) = v4::Client::connect(o).await;
    c.kill();
    let m = s.publish(WAIT).await.expect("will");
    assert_eq!(&m.payload[..], b"bye");

    // A normal DISCONNECT publishes no will.
    let mut o = v4::options(addr, "polite");
    o.set_last_will(rumqttc::LastWill::new(
        "will/polite",
        "x",
        v4::QoS::AtLeastOnce,
        false,
    ));
    let (c, _) = v4::Client::connect(o).await;
    c.disconnect().await;
    assert!(s.publish(Duration::from_millis(500)).await.is_none());

    // MQTT 5 will delay: not before the delay.
    let mut o = v5::options(addr, "delayed");
    let props = v5::will_delay(2);
    o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "will/delayed",
        "late",
        v5::QoS::AtLeastOnce,
        false,
        Some(props),
    ));
    o.set_connect_properties(rumqttc::v5::mqttbytes::v5::ConnectProperties {
        session_expiry_interval: Some(60),
        ..rumqttc::v5::mqttbytes::v5::ConnectProperties::new()
    });
    let (c, _) = v5::Client::connect(o).await;
    let t0 = tokio::time::Instant::now();
    c.kill();
    assert!(
        s.publish(Duration::from_millis(1200)).await.is_none(),
        "too early"
    );
    let m = s.publish(WAIT).await.expect("delayed will");
    assert_eq!(&m.payload[..], b"late");
    assert!(t0.elapsed() >= Duration::from_millis(1900));
    s.disconnect().await;
    stop(agent).await;
}

#[tokio::test]
async fn keepalive_zero_is_accepted_and_never_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(&raw::connect_v311("ka0", 0)).await.unwrap();
    let mut connack = [0u8; 4];
    sock.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "accepted");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sock.write_all(&raw::publish_v311("k/a", 1, 7, b"still here"))
        .await
        .unwrap();
    let mut puback = [0u8; 4];
    tokio::time::timeout(WAIT, sock.read_exact(&mut puback))
        .await
        .expect("PUBACK in time")
        .unwrap();
    assert_eq!(puback, [0x40, 2, 0, 7]);
    stop(agent).await;
}

#[tokio::test]
async fn no_local_skips_the_publishers_own_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let (mut c, _) = v5::Client::connect(v5::options(addr, "me")).await;
    let filter = rumqttc::v5::mqttbytes::v5::Filter {
        path: "nl/#".into(),
        qos: v5::QoS::AtLeastOnce,
        nolocal: true,
        preserve_retain: false,
        retain_forward_rule: rumqttc::v5::mqttbytes::v5::RetainForwardRule::OnEverySubscribe,
    };
    c.client.subscribe_many([filter]).await.unwrap();
    c.wait_for(|p| matches!(p, v5::Packet::SubAck(_))).await;
    c.client
        .publish("nl/x", v5::QoS::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    assert!(c.publish(Duration::from_millis(500)).await.is_none());
    let (o, _) = v5::Client::connect(v5::options(addr, "other")).await;
    o.client
        .publish("nl/x", v5::QoS::AtLeastOnce, false, "theirs")
        .await
        .unwrap();
    let m = c.publish(WAIT).await.expect("other's message");
    assert_eq!(&m.payload[..], b"theirs");
    stop(agent).await;
}

#[tokio::test]
async fn persistent_session_survives_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let mut o = v4::options(addr, "keeper");
    o.set_clean_session(false);
    let (mut s, _) = v4::Client::connect(o).await;
    s.subscribe("q/#", v4::QoS::AtLeastOnce).await;
    s.disconnect().await;
    let (p, _) = v4::Client::connect(v4::options(addr, "p")).await;
    for i in 0..5 {
        p.client
            .publish("q/x", v4::QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .unwrap();
    }
    p.client
        .publish("q/x", v4::QoS::AtMostOnce, false, "qos0-not-queued")
        .await
        .unwrap();
    p.disconnect().await;
    stop(agent).await;

    let (agent, addr) = start(config(), dir.path()).await;
    let mut o = v4::options(addr, "keeper");
    o.set_clean_session(false);
    let (mut s, connack) = v4::Client::connect(o).await;
    match connack {
        v4::Packet::ConnAck(a) => assert!(a.session_present, "session present"),
        other => panic!("{other:?}"),
    }
    for i in 0..5 {
        let m = s.publish(WAIT).await.expect("queued message");
        assert_eq!(m.payload, format!("m{i}").as_bytes(), "in order");
    }
    // The subscription came back too.
    let (p, _) = v4::Client::connect(v4::options(addr, "p")).await;
    p.client
        .publish("q/y", v4::QoS::AtLeastOnce, false, "live")
        .await
        .unwrap();
    let m = s.publish(WAIT).await.expect("live");
    assert_eq!(&m.payload[..], b"live");
    s.disconnect().await;
    stop(agent).await;
}

#[tokio::test]
async fn passwords_and_anonymous_access() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.auth.allow_anonymous = Some(false);
    c.auth.users.push(UserConfig {
        name: "dev".into(),
        password_hash: edge_agent::auth::hash_password("right").unwrap(),
    });
    let (agent, addr) = start(c, dir.path()).await;
    let code = raw::connack_code(addr, &raw::connect_v311_auth("a", "dev", "wrong")).await;
    assert_eq!(code, 4, "bad user name or password");
    let code = raw::connack_code(addr, &raw::connect_v311_auth("a", "nobody", "right")).await;
    assert_eq!(code, 4, "unknown user: same answer");
    let code = raw::connack_code(addr, &raw::connect_v311("anon", 30)).await;
    assert_eq!(code, 5, "anonymous: not authorized");
    let mut o = v4::options(addr, "b");
    o.set_credentials("dev", "right");
    let (c, connack) = v4::Client::connect(o).await;
    match connack {
        v4::Packet::ConnAck(a) => assert_eq!(a.code, rumqttc::ConnectReturnCode::Success),
        other => panic!("{other:?}"),
    }
    c.disconnect().await;
    stop(agent).await;
}

#[tokio::test]
async fn uplink_publishes_are_in_the_journal_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.uplink.topics = vec!["up/#".into()];
    let (agent, addr) = start(c, dir.path()).await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "p")).await;
    for i in 0..20 {
        p.client
            .publish("up/t", v5::QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
    p.client
        .publish("local/t", v5::QoS::AtLeastOnce, false, "stays")
        .await
        .unwrap();
    let mut acks = 0;
    while acks < 21 {
        if let v5::Packet::PubAck(_) = p.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await {
            acks += 1;
        }
    }
    let stats = agent.journal().stats().await.unwrap();
    assert_eq!(stats.entries, 20, "local/t is not an uplink topic");
    let entries = agent.journal().peek(100).await.unwrap();
    let payloads: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected, "in publish order");
    p.disconnect().await;
    stop(agent).await;
}
