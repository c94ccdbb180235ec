#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The read path against the real broker: subscriptions on LMQs, QoS downgrade, wildcard
//! registration policies, p2p, retained messages, plain RocketMQ producers, two bridges.

mod harness;

use std::time::Duration;

use harness::clients::{Msg, Proto, rumqttc_publish};
use harness::subscriber::{External, rumqttc_subscribe};
use harness::{config_text, password, start_bridge, tool, unique};

fn msg(topic: &str, qos: u8, payload: &str) -> Msg {
    Msg {
        topic: topic.to_owned(),
        qos,
        payload: payload.as_bytes().to_vec(),
        user: Vec::new(),
    }
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_and_wildcard_subscribers_get_publishes_at_the_downgraded_qos() {
    let first = unique("sub");
    let plus = format!("{first}/+");
    let (server, _) = start_bridge(&config_text(&first, &[&plus], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let exact = format!("{first}/a");
    let mut subs = Vec::new();
    for (proto, filter, qos) in [
        (Proto::V311, exact.as_str(), 1u8),
        (Proto::V5, exact.as_str(), 0u8),
        (Proto::V311, plus.as_str(), 2u8),
        (Proto::V5, plus.as_str(), 1u8),
    ] {
        let id = unique("s");
        let s = rumqttc_subscribe(addr, proto, &id, &password(&id), true, &[(filter, qos)]).await;
        assert_eq!(s.suback, vec![qos], "SUBACK for {filter} ({proto:?})");
        subs.push((s, qos));
    }
    let id = unique("p");
    let sent = [
        msg(&exact, 2, "m0"),
        msg(&exact, 1, "m1"),
        msg(&exact, 0, "m2"),
    ];
    rumqttc_publish(addr, Proto::V5, None, &id, &password(&id), &sent).await;
    for (s, granted) in &mut subs {
        let got = s.collect(3, WAIT).await;
        assert_eq!(got.len(), 3, "granted {granted}: {got:?}");
        for (g, m) in got.iter().zip(&sent) {
            assert_eq!(g.topic, exact);
            assert_eq!(g.payload, m.payload, "order is kept");
            assert_eq!(g.qos, m.qos.min(*granted), "min(publish, granted) QoS");
        }
    }
    // Nothing else arrives (no duplicates).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (s, _) in &mut subs {
        assert!(s.rx.try_recv().is_err());
    }
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_subscribers_receive_messages() {
    let first = unique("ext");
    let plus = format!("{first}/+");
    let (server, _) = start_bridge(&config_text(&first, &[&plus], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/dev");
    let mut externals = Vec::new();
    for (kind, proto) in [
        ("mosq", Proto::V311),
        ("mosq", Proto::V5),
        ("paho", Proto::V311),
        ("paho", Proto::V5),
    ] {
        let id = unique(kind);
        let filter = if proto == Proto::V5 {
            plus.as_str()
        } else {
            topic.as_str()
        };
        let e = if kind == "mosq" {
            External::mosquitto(addr, proto, &id, &password(&id), filter, 1, 2)
        } else {
            External::paho(addr, proto, &id, &password(&id), filter, 1, 2)
        };
        externals.push((kind, proto, e));
    }
    // mosquitto_sub prints nothing on SUBACK: give the four processes time to subscribe.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let id = unique("p");
    rumqttc_publish(
        addr,
        Proto::V311,
        None,
        &id,
        &password(&id),
        &[msg(&topic, 1, "one"), msg(&topic, 1, "two")],
    )
    .await;
    for (kind, proto, e) in externals {
        let lines = tokio::task::spawn_blocking(move || e.lines())
            .await
            .unwrap();
        assert_eq!(lines.len(), 2, "{kind} {proto:?}: {lines:?}");
        assert!(
            lines[0].starts_with(&format!("{topic} one")),
            "{kind} {proto:?}: {lines:?}"
        );
        assert!(
            lines[1].starts_with(&format!("{topic} two")),
            "{kind} {proto:?}: {lines:?}"
        );
    }
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_wildcards_are_registered_or_refused_by_config() {
    let first = unique("wild");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let filter = format!("{first}/+/temp");
    let id = unique("s");
    let mut s =
        rumqttc_subscribe(addr, Proto::V5, &id, &password(&id), true, &[(&filter, 1)]).await;
    assert_eq!(s.suback, vec![1]);
    let kv = tool(&["get-kv", "--key", &first]).unwrap();
    // Other subscribers of the cluster whose filters span first-level topics (`+/+`)
    // may have listed their parts (`{first}/+`) too.
    let listed: Vec<&str> = kv[0]["value"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .collect();
    assert!(
        listed.contains(&filter.as_str()),
        "registered in kvconfig: {listed:?}"
    );
    let id = unique("p");
    rumqttc_publish(
        addr,
        Proto::V5,
        None,
        &id,
        &password(&id),
        &[msg(&format!("{first}/m7/temp"), 1, "hot")],
    )
    .await;
    let got = s
        .next(WAIT)
        .await
        .expect("a message through the registered wildcard");
    assert_eq!(got.payload, b"hot");
    server.stop(Duration::from_secs(5)).await;

    let first = unique("wildr");
    let extra = "[subscriptions]\nunregistered = \"refuse\"\n";
    let (server, _) = start_bridge(&config_text(&first, &[], extra)).await;
    let addr = server.local_addr("mqtt").unwrap();
    for proto in [Proto::V311, Proto::V5] {
        let id = unique("s");
        let s = rumqttc_subscribe(
            addr,
            proto,
            &id,
            &password(&id),
            true,
            &[(&format!("{first}/+"), 1), (&format!("{first}/x"), 1)],
        )
        .await;
        let refused = if proto == Proto::V5 { 0x83 } else { 0x80 };
        assert_eq!(s.suback, vec![refused, 1], "{proto:?}");
    }
    // Not registered by this bridge (a stored session of the cluster whose filter spans
    // first-level topics may list its own parts, `{first}/#`, on any bridge that may).
    let kv = tool(&["get-kv", "--key", &first]).unwrap();
    let listed = kv[0]["value"].as_str().unwrap_or_default();
    assert!(
        !listed.split(',').any(|f| f == format!("{first}/+")),
        "{listed}"
    );
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_and_subscription_storms_are_refused_and_the_bridge_keeps_serving() {
    let first = unique("badsub");
    let extra =
        "[subscriptions]\nmax_filter_length = 64\nmax_filter_depth = 4\nmax_per_client = 5\n";
    let (server, _) = start_bridge(&config_text(&first, &[], extra)).await;
    let addr = server.local_addr("mqtt").unwrap();
    let long = format!("{first}/{}", "x".repeat(80));
    let deep = format!("{first}/a/b/c/d");
    let cases: Vec<(String, u8)> = vec![
        (format!("{first}/a#"), 0x8F),
        (format!("{first}/a+/b"), 0x8F),
        (long, 0x8F),
        (deep, 0x8F),
        // `#` spans first-level topics and is granted now; a spanning filter with a
        // character RocketMQ cannot carry is not.
        ("+/a%b".to_string(), 0x8F),
        ("nosuchfirst/a".to_string(), 0x8F),
        (format!("{first}/a%b"), 0x8F),
        (format!("$share/g/{first}/a"), 0x9E),
    ];
    // rumqttc refuses to send invalid filters, so a raw client sends them.
    use rumqttc::v5::mqttbytes::v5;
    let mut raw = harness::raw::Raw::connect(addr, true).await;
    let id = unique("s");
    assert_eq!(
        raw.handshake(&id, Some("demo"), Some(&password(&id))).await,
        0
    );
    let filters = cases
        .iter()
        .map(|(f, _)| v5::Filter::new(f.clone(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce))
        .collect();
    raw.send5(v5::Packet::Subscribe(v5::Subscribe {
        pkid: 1,
        filters,
        properties: None,
    }))
    .await;
    let codes: Vec<u8> = match raw.recv(WAIT).await {
        Some(harness::raw::Packet::V5(v5::Packet::SubAck(a))) => a
            .return_codes
            .iter()
            .map(|c| match c {
                v5::SubscribeReasonCode::Success(q) => *q as u8,
                v5::SubscribeReasonCode::TopicFilterInvalid => 0x8F,
                v5::SubscribeReasonCode::SharedSubscriptionsNotSupported => 0x9E,
                _ => 0x80,
            })
            .collect(),
        _ => panic!("no SUBACK"),
    };
    let expected: Vec<u8> = cases.iter().map(|(_, c)| *c).collect();
    assert_eq!(codes, expected);

    // A storm: 50 filters from one client; only max_per_client (5) are granted.
    let storm: Vec<String> = (0..50).map(|i| format!("{first}/storm/{i}")).collect();
    let filters: Vec<(&str, u8)> = storm.iter().map(|f| (f.as_str(), 0)).collect();
    let id = unique("storm");
    let s = rumqttc_subscribe(addr, Proto::V5, &id, &password(&id), true, &filters).await;
    assert_eq!(s.suback.iter().filter(|c| **c == 0).count(), 5);
    assert_eq!(s.suback.iter().filter(|c| **c == 0x97).count(), 45);

    // Still serving.
    let id = unique("ok");
    let mut ok = rumqttc_subscribe(
        addr,
        Proto::V311,
        &id,
        &password(&id),
        true,
        &[(&format!("{first}/ok"), 1)],
    )
    .await;
    let id = unique("p");
    rumqttc_publish(
        addr,
        Proto::V311,
        None,
        &id,
        &password(&id),
        &[msg(&format!("{first}/ok"), 1, "fine")],
    )
    .await;
    assert!(ok.next(WAIT).await.is_some());
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_publishes_reach_exactly_that_client() {
    let first = unique("p2p");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let target = unique("target");
    let other = unique("other");
    let mut t = rumqttc_subscribe(addr, Proto::V5, &target, &password(&target), true, &[]).await;
    let mut o = rumqttc_subscribe(addr, Proto::V311, &other, &password(&other), true, &[]).await;
    let id = unique("p");
    let topic = format!("{first}/p2p/{target}");
    rumqttc_publish(
        addr,
        Proto::V311,
        None,
        &id,
        &password(&id),
        &[msg(&topic, 1, "for you")],
    )
    .await;
    let got = t.next(WAIT).await.expect("p2p message");
    assert_eq!(got.topic, topic);
    assert_eq!(got.payload, b"for you");
    assert!(
        o.next(Duration::from_secs(2)).await.is_none(),
        "another client got a p2p message"
    );
    server.stop(Duration::from_secs(5)).await;
}

/// One SUBSCRIBE with many filters (duplicates and overlaps included) reads the retained
/// messages once and sends each once, at the highest QoS granted to a filter matching it.
/// Before, every filter entry read the whole retained store and sent its own copies: a 14 KB
/// SUBSCRIBE of 2,000 entries read the name server's retained namespace 2,000 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscribe_sends_each_retained_message_once() {
    let first = unique("ret1");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topics: Vec<String> = (0..3).map(|i| format!("{first}/r/{i}")).collect();
    let retained: Vec<serde_json::Value> = topics
        .iter()
        .map(|t| serde_json::json!({"op": "publish", "topic": t, "qos": 1, "retain": true, "payload": "kept"}))
        .collect();
    let r = harness::paho_sessions::run(
        addr,
        1,
        &[serde_json::json!({"client_id": unique("p"), "ops": retained})],
    );
    assert_eq!(r[0]["ops"], serde_json::json!([0, 0, 0]), "{}", r[0]);
    let wild = format!("{first}/r/+");
    let all = format!("{first}/#");
    let mut filters: Vec<(&str, u8)> = vec![(&wild, 0), (&all, 1), (&topics[0], 0)];
    for _ in 0..20 {
        filters.push((&wild, 0));
    }
    let id = unique("s");
    let mut s = rumqttc_subscribe(addr, Proto::V311, &id, &password(&id), true, &filters).await;
    let mut got = Vec::new();
    while let Some(m) = s.next(Duration::from_secs(3)).await {
        got.push((m.topic, m.qos));
    }
    got.sort();
    let expected: Vec<(String, u8)> = topics.iter().map(|t| (t.clone(), 1)).collect();
    assert_eq!(
        got, expected,
        "each retained message once, at the highest granted QoS"
    );
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_survive_a_bridge_restart_and_are_shared() {
    let first = unique("ret");
    let text = config_text(&first, &[], "");
    let (a, _) = start_bridge(&text).await;
    let topic = format!("{first}/state");
    let id = unique("p");
    let mut m = msg(&topic, 1, "on");
    m.qos = 1;
    {
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{AsyncClient, MqttOptions};
        let addr = a.local_addr("mqtt").unwrap();
        let mut o = MqttOptions::new(&id, "127.0.0.1", addr.port());
        o.set_credentials("demo", password(&id));
        let (client, mut ev) = AsyncClient::new(o, 8);
        client
            .publish(topic.clone(), QoS::AtLeastOnce, true, "on")
            .await
            .unwrap();
        loop {
            match tokio::time::timeout(WAIT, ev.poll()).await {
                Ok(Ok(rumqttc::v5::Event::Incoming(
                    rumqttc::v5::mqttbytes::v5::Packet::PubAck(_),
                ))) => break,
                Ok(Ok(_)) => {}
                other => panic!("retained publish: {other:?}"),
            }
        }
    }
    a.stop(Duration::from_secs(5)).await;
    let (b, _) = start_bridge(&text).await;
    let addr = b.local_addr("mqtt").unwrap();
    for proto in [Proto::V311, Proto::V5] {
        let id = unique("s");
        let mut s = rumqttc_subscribe(
            addr,
            proto,
            &id,
            &password(&id),
            true,
            &[(&format!("{first}/+"), 1)],
        )
        .await;
        let got = s.next(WAIT).await.expect("the retained message");
        assert_eq!(
            (got.topic.as_str(), got.payload.as_slice(), got.retain),
            (topic.as_str(), &b"on"[..], true)
        );
    }
    b.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_rocketmq_producer_reaches_mqtt_subscribers() {
    let first = unique("plain");
    let plus = format!("{first}/+");
    let (server, _) = start_bridge(&config_text(&first, &[&plus], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/cmd");
    let id = unique("s");
    let mut exact =
        rumqttc_subscribe(addr, Proto::V311, &id, &password(&id), true, &[(&topic, 1)]).await;
    let id = unique("s");
    let mut wild =
        rumqttc_subscribe(addr, Proto::V5, &id, &password(&id), true, &[(&plus, 1)]).await;
    let dispatch = format!(
        "INNER_MULTI_DISPATCH={},{}",
        cloud_bridge::lmq::lmq_name(&topic),
        cloud_bridge::lmq::lmq_name(&plus)
    );
    let origin = format!("originMqttTopic={topic}");
    tool(&[
        "produce", "--topic", &first, "--body", "reboot", "--prop", &dispatch, "--prop", &origin,
    ])
    .unwrap();
    // Without originMqttTopic the topic is rebuilt from the LMQ name.
    tool(&[
        "produce", "--topic", &first, "--body", "again", "--prop", &dispatch,
    ])
    .unwrap();
    for s in [&mut exact, &mut wild] {
        let got = s.collect(2, WAIT).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            (got[0].topic.as_str(), got[0].payload.as_slice()),
            (topic.as_str(), &b"reboot"[..])
        );
        assert_eq!(
            (got[1].topic.as_str(), got[1].payload.as_slice()),
            (topic.as_str(), &b"again"[..])
        );
    }
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_form_one_service() {
    let first = unique("two");
    let plus = format!("{first}/+");
    let text = config_text(&first, &[&plus], "");
    let (a, _) = start_bridge(&text).await;
    let (b, _) = start_bridge(&text).await;
    let id = unique("s");
    let mut s = rumqttc_subscribe(
        b.local_addr("mqtt").unwrap(),
        Proto::V5,
        &id,
        &password(&id),
        true,
        &[(&plus, 1)],
    )
    .await;
    let id = unique("p");
    let sent: Vec<Msg> = (0..20)
        .map(|i| msg(&format!("{first}/d{}", i % 3), 1, &format!("n{i}")))
        .collect();
    rumqttc_publish(
        a.local_addr("mqtt").unwrap(),
        Proto::V311,
        None,
        &id,
        &password(&id),
        &sent,
    )
    .await;
    let got = s.collect(20, WAIT).await;
    assert_eq!(
        got.len(),
        sent.len(),
        "every message, through the other bridge"
    );
    // Each topic in publish order (publishes to different topics are stored concurrently).
    for t in 0..3 {
        let topic = format!("{first}/d{t}");
        let payloads = |of: &mut dyn Iterator<Item = (&String, &Vec<u8>)>| -> Vec<Vec<u8>> {
            of.filter(|(to, _)| **to == topic)
                .map(|(_, p)| p.clone())
                .collect()
        };
        assert_eq!(
            payloads(&mut got.iter().map(|g| (&g.topic, &g.payload))),
            payloads(&mut sent.iter().map(|m| (&m.topic, &m.payload))),
            "{topic}: in order through the other bridge"
        );
    }
    a.stop(Duration::from_secs(5)).await;
    b.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_publishes_and_subscribes() {
    let first = unique("ws");
    let extra = "[[listener]]\nname = \"ws\"\nbind = \"127.0.0.1:0\"\nwebsocket = true\n";
    let (server, _) = start_bridge(&config_text(&first, &[], extra)).await;
    let ws = server.local_addr("ws").unwrap();
    let tcp = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/browser");
    let id = unique("s");
    let mut s =
        rumqttc_subscribe(tcp, Proto::V311, &id, &password(&id), true, &[(&topic, 1)]).await;

    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let id = unique("wsc");
    let mut o = MqttOptions::new(&id, format!("ws://127.0.0.1:{}/mqtt", ws.port()), ws.port());
    o.set_transport(rumqttc::Transport::Ws);
    o.set_credentials("demo", password(&id));
    let (client, mut ev) = AsyncClient::new(o, 8);
    client
        .subscribe(topic.clone(), QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish(topic.clone(), QoS::AtLeastOnce, false, "over ws")
        .await
        .unwrap();
    let mut acked = false;
    let mut echoed = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(acked && echoed) {
        match tokio::time::timeout_at(deadline, ev.poll()).await {
            Ok(Ok(Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_)))) => acked = true,
            Ok(Ok(Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)))) => {
                assert_eq!(&p.payload[..], b"over ws");
                echoed = true;
            }
            Ok(Ok(_)) => {}
            other => panic!("websocket client: {other:?}"),
        }
    }
    let got = s
        .next(WAIT)
        .await
        .expect("the TCP subscriber gets the WebSocket publish");
    assert_eq!(got.payload, b"over ws");
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_acls_and_overlapping_ones_deliver_one_copy() {
    let first = unique("sacl");
    let plus = format!("{first}/+/cmd");
    let extra = format!(
        "[[acl]]\nclients = [\"gw-*\"]\npublish = [\"{first}/#\"]\nsubscribe = [\"{first}/{{client}}/#\"]\n"
    );
    let (server, _) = start_bridge(&config_text(&first, &[&plus], &extra)).await;
    let addr = server.local_addr("mqtt").unwrap();
    let mine = format!("{first}/gw-1/cmd");
    let theirs = format!("{first}/gw-2/cmd");
    let mut s = rumqttc_subscribe(
        addr,
        Proto::V5,
        "gw-1",
        &password("gw-1"),
        true,
        &[(&mine, 1), (&theirs, 1), (&format!("{first}/gw-1/#"), 1)],
    )
    .await;
    assert_eq!(s.suback, vec![1, 0x87, 1], "ACL on subscribe");
    rumqttc_publish(
        addr,
        Proto::V311,
        None,
        "gw-9",
        &password("gw-9"),
        &[msg(&mine, 1, "once")],
    )
    .await;
    // The message is in both subscribed LMQs; the session delivers it once.
    let got = s.collect(2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].payload, b"once");
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_bounds_deliveries_in_flight_and_unsubscribe_stops_them() {
    use bytes::Bytes;
    use harness::raw::{Packet, Raw};
    use rumqttc::v5::mqttbytes::v5;
    let first = unique("rmax");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/q");
    let mut raw = Raw::connect(addr, true).await;
    let id = unique("slow");
    let props = v5::ConnectProperties {
        receive_maximum: Some(2),
        ..v5::ConnectProperties::new()
    };
    raw.send5(v5::Packet::Connect(
        v5::Connect {
            keep_alive: 30,
            client_id: id.clone(),
            clean_start: true,
            properties: Some(props),
        },
        None,
        Some(v5::Login::new("demo", password(&id))),
    ))
    .await;
    assert!(matches!(
        raw.recv(WAIT).await,
        Some(Packet::V5(v5::Packet::ConnAck(_)))
    ));
    raw.send5(v5::Packet::Subscribe(v5::Subscribe {
        pkid: 1,
        filters: vec![v5::Filter::new(
            topic.clone(),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )],
        properties: None,
    }))
    .await;
    assert!(matches!(
        raw.recv(WAIT).await,
        Some(Packet::V5(v5::Packet::SubAck(_)))
    ));
    let pid = unique("p");
    let msgs: Vec<Msg> = (0..5).map(|i| msg(&topic, 1, &format!("m{i}"))).collect();
    rumqttc_publish(addr, Proto::V311, None, &pid, &password(&pid), &msgs).await;

    // Receive maximum 2: two deliveries, then nothing until one is acknowledged.
    let mut pkids = Vec::new();
    while let Some(Packet::V5(v5::Packet::Publish(p))) = raw.recv(Duration::from_secs(3)).await {
        pkids.push((p.pkid, p.payload.clone()));
    }
    assert_eq!(pkids.len(), 2, "in flight beyond receive maximum");
    assert_eq!(pkids[0].1, Bytes::from_static(b"m0"));
    raw.send5(v5::Packet::PubAck(v5::PubAck::new(pkids[0].0, None)))
        .await;
    match raw.recv(Duration::from_secs(5)).await {
        Some(Packet::V5(v5::Packet::Publish(p))) => assert_eq!(&p.payload[..], b"m2"),
        _ => panic!("no delivery after an acknowledgement"),
    }

    // UNSUBSCRIBE: success, then "no subscription existed".
    for (pkid, expected) in [
        (7u16, v5::UnsubAckReason::Success),
        (8, v5::UnsubAckReason::NoSubscriptionExisted),
    ] {
        raw.send5(v5::Packet::Unsubscribe(v5::Unsubscribe {
            pkid,
            filters: vec![topic.clone()],
            properties: None,
        }))
        .await;
        loop {
            match raw.recv(WAIT).await {
                Some(Packet::V5(v5::Packet::UnsubAck(a))) => {
                    assert_eq!(a.pkid, pkid);
                    assert_eq!(a.reasons, vec![expected]);
                    break;
                }
                Some(Packet::V5(v5::Packet::Publish(_))) => {}
                _ => panic!("no UNSUBACK"),
            }
        }
    }
    server.stop(Duration::from_secs(5)).await;
}

/// The wildcard lists of `first` as kvconfig holds them now.
async fn listed(config: &cloud_bridge::config::Config, first: &str) -> Vec<String> {
    cloud_bridge::admin::wildcard_list(config)
        .await
        .expect("wildcard list")
        .into_iter()
        .find(|(f, _)| f == first)
        .map(|(_, l)| l)
        .unwrap_or_default()
}

/// Polls until `done` holds for the list of `first`, or `within` passed; returns the list.
async fn list_until(
    config: &cloud_bridge::config::Config,
    first: &str,
    within: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let list = listed(config, first).await;
        if done(&list) || tokio::time::Instant::now() >= deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Issue #21: registrations made on subscribe are pruned once no subscriber of any bridge
/// and no stored session uses them; pinned filters, filters a live subscriber on another
/// bridge reads and filters a stored persistent session reads stay, and a live
/// subscriber's filter that another tool removed comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_wildcard_registrations_are_pruned_and_used_ones_kept() {
    let first = unique("wp");
    let prune_after = Duration::from_secs(4);
    let text = config_text(
        &first,
        &[],
        &format!(
            "[subscriptions]\nprune_wildcards_after_secs = {}\n",
            prune_after.as_secs()
        ),
    );
    let (b1, config) = start_bridge(&text).await;
    let (b2, _) = start_bridge(&text).await;
    let a1 = b1.local_addr("mqtt").unwrap();
    let a2 = b2.local_addr("mqtt").unwrap();
    let [gone, stored, live, pinned] =
        ["gone", "stored", "live", "pinned"].map(|w| format!("{first}/{w}/+"));

    cloud_bridge::admin::wildcard_add(&config, &pinned)
        .await
        .expect("wildcard add");
    // A subscriber that leaves at once, and a persistent session (3.1.1, clean session
    // false: it never expires) that leaves, both on bridge 1 (paho-mqtt).
    let sessions = [
        serde_json::json!({"client_id": unique("gone"), "proto": 3,
            "ops": [{"op": "subscribe", "filter": gone, "qos": 1}]}),
        serde_json::json!({"client_id": unique("stored"), "proto": 3, "clean": false,
            "ops": [{"op": "subscribe", "filter": stored, "qos": 1}]}),
    ];
    let stored_id = sessions[1]["client_id"].as_str().unwrap().to_owned();
    for r in harness::paho_sessions::run(a1, 2, &sessions) {
        assert_eq!(r["ops"], serde_json::json!([1]), "SUBACK: {r}");
    }
    // A subscriber that stays, on bridge 2 (rumqttc).
    let id = unique("live");
    let mut sub = rumqttc_subscribe(a2, Proto::V5, &id, &password(&id), true, &[(&live, 1)]).await;
    assert_eq!(sub.suback, vec![1]);
    let all = listed(&config, &first).await;
    for w in [&gone, &stored, &live, &pinned] {
        assert!(all.contains(w), "{w} registered: {all:?}");
    }

    // Leases are renewed every second (a quarter of 4 s): within a few periods the unused
    // registration goes, and only it.
    let list = list_until(&config, &first, prune_after * 4, |l| !l.contains(&gone)).await;
    assert!(!list.contains(&gone), "{gone} pruned: {list:?}");
    // Give the others as long again to be (wrongly) pruned.
    tokio::time::sleep(prune_after * 2).await;
    let list = listed(&config, &first).await;
    for w in [&stored, &live, &pinned] {
        assert!(list.contains(w), "{w} kept: {list:?}");
    }

    // The live subscriber still gets publishes through its wildcard, from the other bridge.
    let pid = unique("p");
    let topic = format!("{first}/live/x");
    harness::clients::mosquitto_pub(
        a1,
        Proto::V311,
        &pid,
        &password(&pid),
        &msg(&topic, 1, "l1"),
    );
    let got = sub.collect(1, WAIT).await;
    assert_eq!(got.len(), 1, "live wildcard still dispatched: {got:?}");
    assert_eq!(got[0].payload, b"l1");

    // Another tool removes the live subscriber's filter: its bridge registers it again.
    cloud_bridge::admin::wildcard_remove(&config, &live)
        .await
        .expect("wildcard remove");
    let list = list_until(&config, &first, Duration::from_secs(10), |l| {
        l.contains(&live)
    })
    .await;
    assert!(list.contains(&live), "{live} registered again: {list:?}");

    // The stored session gets what was published to its filter while it was away.
    let topic = format!("{first}/stored/y");
    harness::clients::mosquitto_pub(
        a2,
        Proto::V311,
        &pid,
        &password(&pid),
        &msg(&topic, 1, "s1"),
    );
    let mut back = rumqttc_subscribe(
        a1,
        Proto::V311,
        &stored_id,
        &password(&stored_id),
        false,
        &[],
    )
    .await;
    let got = back.collect(1, WAIT).await;
    assert_eq!(
        got.len(),
        1,
        "stored session's wildcard kept filling: {got:?}"
    );
    assert_eq!(got[0].payload, b"s1");
    drop(back);
    drop(sub);
    b1.stop(Duration::from_secs(2)).await;
    b2.stop(Duration::from_secs(2)).await;
}

/// A SUBSCRIBE that registers a new wildcard gets its SUBACK only after
/// `registration_settle_ms` (so that rocketmq-mqtt servers see the filter), but the
/// connection goes on meanwhile: a QoS 1 publish sent right after it is acknowledged and
/// delivered through the new subscription, both before the SUBACK (rumqttc, MQTT 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_suback_does_not_hold_the_connection() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    let first = unique("held");
    let extra = "[subscriptions]\nregistration_settle_ms = 4000\n";
    let (server, _) = start_bridge(&config_text(&first, &[], extra)).await;
    let addr = server.local_addr("mqtt").unwrap();
    let id = unique("c");
    let mut o = MqttOptions::new(&id, "127.0.0.1", addr.port());
    o.set_credentials("demo", password(&id));
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(o, 10);
    let filter = format!("{first}/+/temp");
    let topic = format!("{first}/m1/temp");
    let start = std::time::Instant::now();
    client
        .subscribe(filter.clone(), QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish(topic.clone(), QoS::AtLeastOnce, false, b"warm".to_vec())
        .await
        .unwrap();
    // (event, seconds since the SUBSCRIBE) in arrival order, until the SUBACK.
    let mut seen: Vec<(&str, f64)> = Vec::new();
    while !seen.iter().any(|(e, _)| *e == "suback") {
        let event = tokio::time::timeout(WAIT, events.poll())
            .await
            .expect("no event for a while")
            .expect("connection");
        let at = start.elapsed().as_secs_f64();
        match event {
            Event::Incoming(Packet::PubAck(_)) => seen.push(("puback", at)),
            Event::Incoming(Packet::Publish(p)) if p.payload.as_ref() == b"warm" => {
                seen.push(("delivery", at))
            }
            Event::Incoming(Packet::SubAck(_)) => seen.push(("suback", at)),
            _ => {}
        }
    }
    println!("events before the SUBACK: {seen:?}");
    let at = |name: &str| seen.iter().find(|(e, _)| *e == name).map(|(_, t)| *t);
    let suback = at("suback").unwrap();
    assert!(
        suback >= 3.5,
        "the SUBACK waits registration_settle_ms: {suback:.2} s"
    );
    let puback = at("puback").expect("PUBACK before the SUBACK");
    assert!(
        puback < 2.0,
        "the publish was acknowledged at once: {puback:.2} s"
    );
    let delivery = at("delivery").expect("delivered before the SUBACK");
    assert!(delivery < suback);
    server.stop(Duration::from_secs(5)).await;
}
