#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! A persistent session survives the death of its bridge: kill -9 the bridge process in the
//! middle of a QoS 1 stream, reconnect to another bridge instance, and every message
//! arrives; redeliveries stay within the in-flight window and carry DUP.

mod harness;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::clients::{Msg, Proto, rumqttc_publish};
use harness::subscriber::rumqttc_subscribe;
use harness::{config_text, password, start_bridge};
use test_support::{free_port, unique};

struct Bridge(Child);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_bridge(config: &std::path::Path) -> Bridge {
    let child = Command::new(env!("CARGO_BIN_EXE_cloud-bridge"))
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cloud-bridge binary");
    Bridge(child)
}

async fn wait_listening(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("bridge did not listen on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_moves_to_another_bridge_after_kill_9_without_loss() {
    const N: usize = 300;
    const WINDOW: usize = 32; // limits.max_inflight default
    for proto in [Proto::V311, Proto::V5] {
        let first = unique("ps");
        let topic = format!("{first}/stream");
        let dir = std::env::temp_dir().join(unique("ps-"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let text =
            config_text(&first, &[], "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        let path = dir.join("a.toml");
        std::fs::write(&path, &text).unwrap();

        // The publisher's bridge and the bridge the subscriber moves to run in-process.
        let (publisher_bridge, _) = start_bridge(&config_text(&first, &[], "")).await;
        let pub_addr = publisher_bridge.local_addr("mqtt").unwrap();
        let mut a = spawn_bridge(&path);
        wait_listening(port).await;

        let client_id = unique("sess");
        let a_addr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut sub = rumqttc_subscribe(
            a_addr,
            proto,
            &client_id,
            &password(&client_id),
            false,
            &[(&topic, 1)],
        )
        .await;
        assert_eq!(sub.suback, vec![1]);

        let publisher = {
            let topic = topic.clone();
            tokio::spawn(async move {
                for chunk in 0..(N / 10) {
                    let msgs: Vec<Msg> = (0..10)
                        .map(|i| Msg {
                            topic: topic.clone(),
                            qos: 1,
                            payload: format!("{}", chunk * 10 + i).into_bytes(),
                            user: Vec::new(),
                        })
                        .collect();
                    let id = format!("pub-{chunk}");
                    rumqttc_publish(pub_addr, Proto::V311, None, &id, &password(&id), &msgs).await;
                }
            })
        };

        let mut received = sub.collect(N / 3, Duration::from_secs(60)).await;
        assert!(
            received.len() >= N / 3,
            "{proto:?}: only {} before the kill",
            received.len()
        );
        a.0.kill().unwrap(); // SIGKILL
        let _ = a.0.wait();
        // The client acknowledges a message as it reads it from the socket; what it read
        // before the kill may still wait in the harness's channel. Take it, or a message
        // acknowledged to the killed bridge would count as lost (seen: 6 of them).
        for _ in 0..N {
            match sub.next(Duration::from_millis(300)).await {
                Some(r) => received.push(r),
                None => break,
            }
        }
        drop(sub);

        let (b, _) = start_bridge(&text.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:0")).await;
        let b_addr = b.local_addr("mqtt").unwrap();
        // Reconnect without subscribing: the session's subscriptions come back with it.
        let mut sub =
            rumqttc_subscribe(b_addr, proto, &client_id, &password(&client_id), false, &[]).await;
        publisher.await.unwrap();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for r in &received {
            *counts
                .entry(String::from_utf8_lossy(&r.payload).into_owned())
                .or_default() += 1;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while counts.len() < N && tokio::time::Instant::now() < deadline {
            if let Some(r) = sub.next(Duration::from_secs(5)).await {
                let key = String::from_utf8_lossy(&r.payload).into_owned();
                let seen = counts.entry(key.clone()).or_default();
                *seen += 1;
                if *seen > 1 {
                    assert!(r.dup, "{proto:?}: redelivery of {key} without DUP");
                }
                received.push(r);
            }
        }
        let missing: Vec<usize> = (0..N)
            .filter(|i| !counts.contains_key(&i.to_string()))
            .collect();
        assert!(
            missing.is_empty(),
            "{proto:?}: lost {} messages: {missing:?}",
            missing.len()
        );
        let duplicates: usize = counts.values().map(|c| c - 1).sum();
        assert!(
            duplicates <= WINDOW,
            "{proto:?}: {duplicates} redeliveries, more than the window {WINDOW}"
        );
        println!(
            "{proto:?}: {} received, {duplicates} redelivered after kill -9",
            received.len()
        );
        b.stop(Duration::from_secs(5)).await;
        publisher_bridge.stop(Duration::from_secs(5)).await;
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_of_a_client_whose_bridge_was_killed_is_published_by_another_bridge() {
    let first = unique("orphan");
    let dir = std::env::temp_dir().join(unique("orphan-"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let text = config_text(&first, &[], "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let path = dir.join("a.toml");
    std::fs::write(&path, &text).unwrap();
    let mut a = spawn_bridge(&path);
    wait_listening(port).await;

    let id = unique("dev");
    let will_topic = format!("{first}/status/{id}");
    let mut raw =
        test_support::raw::Raw::connect(format!("127.0.0.1:{port}").parse().unwrap(), false).await;
    let mut c = rumqttc::mqttbytes::v4::Connect::new(id.clone());
    c.set_login("demo", password(&id));
    c.last_will = Some(rumqttc::mqttbytes::v4::LastWill::new(
        will_topic.clone(),
        "offline",
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    raw.send4(rumqttc::mqttbytes::v4::Packet::Connect(c)).await;
    assert!(raw.recv(Duration::from_secs(10)).await.is_some(), "CONNACK");

    // The bridge dies with the client connected: nobody on it can publish the will.
    a.0.kill().unwrap();
    let _ = a.0.wait();
    let (b, _) = start_bridge(&config_text(&first, &[], "")).await;
    let got = harness::consume(&first, 1);
    assert_eq!(got[0]["properties"]["originMqttTopic"], will_topic.as_str());
    assert_eq!(got[0]["body_utf8"], "offline");
    b.stop(Duration::from_secs(5)).await;
    drop(raw);
    let _ = std::fs::remove_dir_all(dir);
}

/// A will belongs to one connection: a new connection of the client without a will
/// replaces it, and a normal DISCONNECT discards it. Neither may come back when the bridge
/// dies later (before: the taken-over connection's copy stayed in the will table and
/// another bridge published it after the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_or_discarded_will_is_not_published_after_the_bridge_dies() {
    use rumqttc::mqttbytes::v4;
    let first = unique("stale");
    let dir = std::env::temp_dir().join(unique("stale-"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let text = config_text(&first, &[], "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let path = dir.join("a.toml");
    std::fs::write(&path, &text).unwrap();
    let mut a = spawn_bridge(&path);
    wait_listening(port).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let connect = |id: &str, will: Option<&str>| {
        let mut c = v4::Connect::new(id.to_owned());
        c.set_login("demo", password(id));
        c.last_will =
            will.map(|t| v4::LastWill::new(t, "offline", rumqttc::QoS::AtLeastOnce, false));
        v4::Packet::Connect(c)
    };
    let status = |id: &str| format!("{first}/status/{id}");

    // x: a will, then a takeover by a connection without one, which disconnects normally.
    let x = unique("x");
    let mut first_conn = test_support::raw::Raw::connect(addr, false).await;
    first_conn.send4(connect(&x, Some(&status(&x)))).await;
    assert!(
        first_conn.recv(Duration::from_secs(10)).await.is_some(),
        "CONNACK"
    );
    let mut second = test_support::raw::Raw::connect(addr, false).await;
    second.send4(connect(&x, None)).await;
    assert!(
        second.recv(Duration::from_secs(10)).await.is_some(),
        "CONNACK"
    );
    second.send4(v4::Packet::Disconnect).await;
    // z: a will, discarded by a normal DISCONNECT.
    let z = unique("z");
    let mut zc = test_support::raw::Raw::connect(addr, false).await;
    zc.send4(connect(&z, Some(&status(&z)))).await;
    assert!(zc.recv(Duration::from_secs(10)).await.is_some(), "CONNACK");
    zc.send4(v4::Packet::Disconnect).await;
    // y (the control): a will, connected when the bridge dies.
    let y = unique("y");
    let mut yc = test_support::raw::Raw::connect(addr, false).await;
    yc.send4(connect(&y, Some(&status(&y)))).await;
    assert!(yc.recv(Duration::from_secs(10)).await.is_some(), "CONNACK");
    tokio::time::sleep(Duration::from_secs(1)).await;

    a.0.kill().unwrap();
    let _ = a.0.wait();
    let (b, _) = start_bridge(&config_text(&first, &[], "")).await;
    // The sweeper publishes y's will once a's heartbeat is stale (15 s).
    let y_lmq = cloud_bridge::lmq::lmq_name(&status(&y));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while test_support::rocketmq::max_offset(&y_lmq) < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        test_support::rocketmq::max_offset(&y_lmq),
        1,
        "the control will was published"
    );
    // One more sweep, then neither of the others.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for id in [&x, &z] {
        let lmq = cloud_bridge::lmq::lmq_name(&status(id));
        assert_eq!(
            test_support::rocketmq::max_offset(&lmq),
            0,
            "the will of {id} was published"
        );
    }
    b.stop(Duration::from_secs(5)).await;
    drop((first_conn, second, zc, yc));
    let _ = std::fs::remove_dir_all(dir);
}

/// Connects a persistent 3.1.1 session, optionally subscribes, and returns the publishes
/// received within a few seconds (acknowledging those `ack` accepts), then DISCONNECTs.
async fn session_round(
    addr: std::net::SocketAddr,
    client_id: &str,
    subscribe: Option<&str>,
    after_subscribe: impl std::future::Future<Output = ()>,
    ack: impl Fn(&str) -> bool,
) -> Vec<(String, bool)> {
    use rumqttc::mqttbytes::v4;
    let mut raw = test_support::raw::Raw::connect(addr, false).await;
    let mut c = v4::Connect::new(client_id);
    c.clean_session = false;
    c.set_login("demo", password(client_id));
    raw.send4(v4::Packet::Connect(c)).await;
    assert!(raw.recv(Duration::from_secs(10)).await.is_some(), "CONNACK");
    if let Some(filter) = subscribe {
        raw.send4(v4::Packet::Subscribe(v4::Subscribe::new(
            filter,
            rumqttc::QoS::AtLeastOnce,
        )))
        .await;
        assert!(raw.recv(Duration::from_secs(10)).await.is_some(), "SUBACK");
    }
    after_subscribe.await;
    let mut got = Vec::new();
    while let Some(p) = raw.recv(Duration::from_secs(3)).await {
        if let test_support::raw::Packet::V4(v4::Packet::Publish(p)) = p {
            let body = String::from_utf8_lossy(&p.payload).into_owned();
            if ack(&body) {
                raw.send4(v4::Packet::PubAck(v4::PubAck::new(p.pkid))).await;
            }
            got.push((body, p.dup));
        }
    }
    raw.send4(v4::Packet::Disconnect).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_left_unacknowledged_connection_after_connection_moves_to_the_retry_queue() {
    let first = unique("retry");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/cmd");
    let client_id = unique("stuck");
    let publish = async {
        let id = unique("p");
        let msgs = [("poison", 1u8), ("next", 1u8)].map(|(b, q)| Msg {
            topic: topic.clone(),
            qos: q,
            payload: b.as_bytes().to_vec(),
            user: Vec::new(),
        });
        rumqttc_publish(addr, Proto::V311, None, &id, &password(&id), &msgs).await;
    };
    // Three connections in a row end with "poison" unacknowledged (limit max_resends = 3).
    let round1 = session_round(addr, &client_id, Some(&topic), publish, |b| b != "poison").await;
    assert_eq!(
        round1,
        vec![("poison".into(), false), ("next".into(), false)]
    );
    for _ in 0..2 {
        let again = session_round(addr, &client_id, None, async {}, |b| b != "poison").await;
        // The committed offset stops at the unacknowledged head, so what follows it comes
        // again too, with DUP.
        assert_eq!(
            again,
            vec![("poison".into(), true), ("next".into(), true)],
            "redelivered with DUP"
        );
    }
    // It went to the client's retry queue; the session's own queue moved past it.
    let retry = cloud_bridge::lmq::retry_lmq(&client_id);
    assert_eq!(
        test_support::rocketmq::max_offset(&retry),
        1,
        "one message in {retry}"
    );
    let last = session_round(addr, &client_id, None, async {}, |_| true).await;
    assert_eq!(
        last,
        vec![("poison".into(), false)],
        "delivered once more from the retry queue"
    );
    let after = session_round(addr, &client_id, None, async {}, |_| true).await;
    assert!(after.is_empty(), "nothing left: {after:?}");
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_over_on_another_bridge_is_closed_on_the_first() {
    use rumqttc::v5::mqttbytes::v5;
    let first = unique("takeover");
    let text = config_text(&first, &[], "");
    let (a, _) = start_bridge(&text).await;
    let (b, _) = start_bridge(&text).await;
    let id = unique("roamer");
    let connect = |id: &str| {
        let props = v5::ConnectProperties {
            session_expiry_interval: Some(3600),
            ..v5::ConnectProperties::new()
        };
        v5::Packet::Connect(
            v5::Connect {
                keep_alive: 60,
                client_id: id.to_owned(),
                clean_start: false,
                properties: Some(props),
            },
            None,
            Some(v5::Login::new("demo", password(id))),
        )
    };
    let mut old = test_support::raw::Raw::connect(a.local_addr("mqtt").unwrap(), true).await;
    old.send5(connect(&id)).await;
    assert!(
        old.recv(Duration::from_secs(10)).await.is_some(),
        "CONNACK on A"
    );
    let mut new = test_support::raw::Raw::connect(b.local_addr("mqtt").unwrap(), true).await;
    new.send5(connect(&id)).await;
    assert!(
        new.recv(Duration::from_secs(10)).await.is_some(),
        "CONNACK on B"
    );
    // A notices within a sweep period (5 s) and closes its connection as taken over.
    let (closed, seen) = old.closed_within(Duration::from_secs(15)).await;
    assert!(closed, "the old connection on A must be closed");
    assert!(seen.iter().any(|p| matches!(p, test_support::raw::Packet::V5(v5::Packet::Disconnect(d)) if d.reason_code == v5::DisconnectReasonCode::SessionTakenOver)));
    let (closed, _) = new.closed_within(Duration::from_secs(2)).await;
    assert!(!closed, "the new connection on B stays");
    a.stop(Duration::from_secs(5)).await;
    b.stop(Duration::from_secs(5)).await;
}

/// A resumed session re-reads the messages behind an unacknowledged one: the QoS 1 one
/// comes again with DUP, the QoS 0 one never has DUP (2.1.2-4; the Paho suite's
/// redelivery test rejects such a packet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos_0_message_read_again_never_carries_dup_2_1_2_4() {
    let first = unique("dup0");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/d");
    let client_id = unique("s");
    let publish = async {
        let id = unique("p");
        let m = |qos, payload: &str| Msg {
            topic: topic.clone(),
            qos,
            payload: payload.as_bytes().to_vec(),
            user: Vec::new(),
        };
        rumqttc_publish(
            addr,
            Proto::V311,
            None,
            &id,
            &password(&id),
            &[m(1, "q1"), m(0, "q0")],
        )
        .await;
    };
    let got = session_round(addr, &client_id, Some(&topic), publish, |_| false).await;
    assert_eq!(got, vec![("q1".into(), false), ("q0".into(), false)]);
    let got = session_round(addr, &client_id, None, async {}, |_| true).await;
    assert_eq!(
        got,
        vec![("q1".into(), true), ("q0".into(), false)],
        "DUP on QoS 1 only"
    );
    server.stop(Duration::from_secs(5)).await;
}
