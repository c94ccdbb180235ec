#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! MQTT 5 features of the bridge on the real RocketMQ, judged by third-party clients
//! (Python paho-mqtt 2.x and rumqttc v5): filters across first-level topics, publish
//! properties through RocketMQ, No Local, Retain As Published, Retain Handling,
//! Subscription Identifiers and message expiry.

mod harness;

use std::time::Duration;

use harness::paho_script::{self, received};
use harness::{config_text, password, start_bridge};
use serde_json::{Value, json};
use test_support::unique;

const SECRET: &str = "test-secret";

/// A bridge config on first-level topics `firsts` (the first one is the harness's).
fn config(firsts: &[&str], extra: &str) -> String {
    let text = config_text(firsts[0], &[], extra);
    let list: Vec<String> = firsts.iter().map(|f| format!("{f:?}")).collect();
    text.replacen(
        &format!("first_level = [{:?}]", firsts[0]),
        &format!("first_level = [{}]", list.join(", ")),
        1,
    )
}

fn payloads(msgs: &[&Value]) -> Vec<String> {
    let mut v: Vec<String> = msgs
        .iter()
        .map(|m| m["payload"].as_str().unwrap_or_default().to_owned())
        .collect();
    v.sort();
    v
}

fn by_payload<'a>(msgs: &[&'a Value], payload: &str) -> Vec<&'a Value> {
    msgs.iter()
        .filter(|m| m["payload"] == payload)
        .copied()
        .collect()
}

/// `#`, `+/C`, `/#` span first-level topics: each message arrives once per client (even
/// where several LMQs of the session hold it), with the identifiers of every matching
/// subscription (3.3.4-3/4); a first-level topic added while the subscription lives joins
/// it; a topic outside the first-level topics is refused with 0x90.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_across_first_level_topics_deliver_each_message_once_3_3_4_3() {
    let base = unique("span");
    let (a, b, c) = (format!("{base}a"), format!("{base}b"), format!("{base}c"));
    let (server, _) = start_bridge(&config(&[&a, &b], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let spec = json!({
        "clients": {
            "s5": {"id": unique("s5")},
            "s3": {"id": unique("s3"), "proto": 3},
            "p": {"id": unique("p")},
        },
        "steps": [
            {"c": "s5", "op": "subscribe", "subs": [{"filter": "#"}], "id": 1},
            {"c": "s5", "op": "subscribe", "subs": [{"filter": "+/C"}], "id": 2},
            {"c": "s5", "op": "subscribe", "subs": [{"filter": format!("{a}/+")}], "id": 3},
            {"c": "s5", "op": "subscribe", "subs": [{"filter": "/#"}], "id": 4},
            {"c": "s3", "op": "subscribe", "subs": [{"filter": "#", "qos": 2}, {"filter": "+/C"}]},
            {"c": "p", "op": "publish", "topic": format!("{a}/C"), "payload": "aC"},
            {"c": "p", "op": "publish", "topic": format!("{b}/C"), "payload": "bC"},
            {"c": "p", "op": "publish", "topic": format!("/{a}"), "payload": "/a"},
            {"c": "p", "op": "publish", "topic": a.clone(), "payload": "a"},
            {"c": "p", "op": "publish", "topic": format!("{b}/x/y"), "payload": "bxy"},
            {"c": "p", "op": "publish", "topic": format!("{base}zz/x"), "payload": "nowhere"},
            {"op": "sleep", "secs": 12},
            {"c": "p", "op": "publish", "topic": format!("{c}/new"), "payload": "cnew"},
        ],
        "collect_secs": 4,
    });
    let run = tokio::task::spawn_blocking(move || paho_script::run(addr, SECRET, spec));
    // While the subscriptions live, a new first-level topic is created (as `init` of
    // another bridge would), and joins them.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let with_c = cloud_bridge::config::Config::parse(&config(&[&a, &b, &c], ""), "c").unwrap();
    cloud_bridge::admin::init(&with_c)
        .await
        .expect("init with c");
    let out = run.await.unwrap();
    assert_eq!(out["suback"]["s5"], json!([[1], [1], [1], [1]]), "{out}");
    assert_eq!(out["suback"]["s3"], json!([[2, 1]]), "{out}");
    assert_eq!(
        out["puback"]["p"],
        json!([0, 0, 0, 0, 0, 0x90, 0]),
        "a topic outside the first-level topics: 0x90 Topic Name invalid; {out}"
    );
    let s5 = received(&out, "s5", &base);
    assert_eq!(
        payloads(&s5),
        vec!["/a", "a", "aC", "bC", "bxy", "cnew"],
        "each once: {s5:?}"
    );
    let sid = |p: &str| by_payload(&s5, p)[0]["sid"].clone();
    assert_eq!(sid("aC"), json!([1, 2, 3]));
    assert_eq!(sid("bC"), json!([1, 2]));
    assert_eq!(sid("/a"), json!([1, 4]));
    assert_eq!(sid("a"), json!([1]));
    assert_eq!(sid("cnew"), json!([1]));
    let s3 = received(&out, "s3", &base);
    assert_eq!(
        payloads(&s3),
        vec!["/a", "a", "aC", "bC", "bxy", "cnew"],
        "each once: {s3:?}"
    );
    assert!(
        s3.iter().all(|m| m["qos"] == 1),
        "min(publish 1, granted 2)"
    );
    server.stop(Duration::from_secs(5)).await;
}

/// A `#` subscriber gets the retained messages of every first-level topic, and clears
/// them with empty retained publishes (what the Paho suite's clean-up does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_gets_and_clears_retained_messages_of_every_first_level_topic() {
    let base = unique("ret");
    let (a, b) = (format!("{base}a"), format!("{base}b"));
    let (server, _) = start_bridge(&config(&[&a, &b], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let spec = json!({
        "clients": {"p": {"id": unique("p")}, "s": {"id": unique("s")}, "s3": {"id": unique("s3"), "proto": 3}},
        "steps": [
            {"c": "p", "op": "publish", "topic": format!("{a}/r"), "payload": "ra", "retain": true},
            {"c": "p", "op": "publish", "topic": format!("{b}/x/r"), "payload": "rb", "retain": true},
            {"c": "s", "op": "subscribe", "subs": [{"filter": "#"}]},
            {"c": "s3", "op": "subscribe", "subs": [{"filter": "+/#"}]},
            {"op": "sleep", "secs": 3},
        ],
        "collect_secs": 1,
    });
    let out = paho_script::run(addr, SECRET, spec);
    for client in ["s", "s3"] {
        let got = received(&out, client, &base);
        assert_eq!(payloads(&got), vec!["ra", "rb"], "{client}: {out}");
        assert!(got.iter().all(|m| m["retain"] == true));
    }
    let clear = json!({
        "clients": {"p": {"id": unique("p")}, "s": {"id": unique("s")}},
        "steps": [
            {"c": "p", "op": "publish", "topic": format!("{a}/r"), "payload": "", "retain": true},
            {"c": "p", "op": "publish", "topic": format!("{b}/x/r"), "payload": "", "retain": true},
            {"op": "sleep", "secs": 1},
            {"c": "s", "op": "subscribe", "subs": [{"filter": "#"}]},
            {"op": "sleep", "secs": 3},
        ],
        "collect_secs": 1,
    });
    let out = paho_script::run(addr, SECRET, clear);
    let got: Vec<&Value> = received(&out, "s", &base)
        .into_iter()
        .filter(|m| m["retain"] == true)
        .collect();
    assert!(got.is_empty(), "cleared: {got:?}");
    server.stop(Duration::from_secs(5)).await;
}

/// Payload Format Indicator, Content Type, Response Topic, Correlation Data (binary),
/// Message Expiry Interval (time left) and user properties (order, repeated keys) come
/// through RocketMQ unchanged (3.3.2-x), and sit in `mqtt5*` properties a plain RocketMQ
/// consumer reads; `extData` stays rocketmq-mqtt's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_properties_survive_rocketmq_3_3_2() {
    let first = unique("props");
    let (server, _) = start_bridge(&config(&[&first], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/m");
    let props = json!({
        "pfi": 1, "ct": "application/json", "rt": format!("{first}/reply"),
        "cd_hex": "00ff10", "mei": 300, "up": [["k", "1"], ["z", "x"], ["k", "2"]],
    });
    let pid = unique("p");
    let spec = json!({
        "clients": {"p": {"id": pid}, "s": {"id": unique("s")}},
        "steps": [
            {"c": "s", "op": "subscribe", "subs": [{"filter": topic}]},
            {"c": "p", "op": "publish", "topic": topic, "payload": "{}", "props": props},
        ],
        "collect_secs": 3,
    });
    let out = paho_script::run(addr, SECRET, spec);
    let got = received(&out, "s", &first);
    assert_eq!(got.len(), 1, "{out}");
    let m = got[0];
    assert_eq!(m["pfi"], 1);
    assert_eq!(m["ct"], "application/json");
    assert_eq!(m["rt"], format!("{first}/reply"));
    assert_eq!(m["cd_hex"], "00ff10");
    assert_eq!(m["up"], json!([["k", "1"], ["z", "x"], ["k", "2"]]));
    let mei = m["mei"].as_u64().expect("an expiry interval");
    assert!((290..=300).contains(&mei), "time left: {mei}");
    // A plain RocketMQ consumer reads them.
    let stored = harness::consume(&first, 1);
    let p = &stored[0]["properties"];
    assert_eq!(p["mqtt5PayloadFormat"], "1", "{p}");
    assert_eq!(p["mqtt5ContentType"], "application/json");
    assert_eq!(p["mqtt5ResponseTopic"], format!("{first}/reply"));
    assert_eq!(p["mqtt5CorrelationData"], "AP8Q");
    assert!(p["mqtt5ExpiresAt"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(
        p["mqtt5UserProperties"],
        r#"[["k","1"],["z","x"],["k","2"]]"#
    );
    assert_eq!(p["extData"], r#"{"qosLevel":"1"}"#);
    assert_eq!(p["mqtt5Publisher"], pid, "No Local on any bridge");
    server.stop(Duration::from_secs(5)).await;
}

/// No Local (3.8.3-3), Retain As Published (3.8.3-4), Retain Handling 0/1/2 (3.8.4-1..3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_retain_as_published_and_retain_handling_3_8_3() {
    let first = unique("opts");
    let (server, _) = start_bridge(&config(&[&first], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let nl = format!("{first}/nl");
    let rap = format!("{first}/rap");
    let rh = format!("{first}/rh");
    let spec = json!({
        "clients": {"p": {"id": unique("p")}, "s": {"id": unique("s")}, "t": {"id": unique("t")}},
        "steps": [
            {"c": "p", "op": "publish", "topic": rh, "payload": "r1", "retain": true},
            {"c": "s", "op": "subscribe", "subs": [{"filter": nl, "no_local": true}], "id": 9},
            {"c": "t", "op": "subscribe", "subs": [{"filter": nl}]},
            {"c": "s", "op": "subscribe", "subs": [{"filter": rap, "rap": true}]},
            {"c": "t", "op": "subscribe", "subs": [{"filter": rap}]},
            {"c": "s", "op": "publish", "topic": nl, "payload": "own"},
            {"c": "p", "op": "publish", "topic": nl, "payload": "other"},
            {"c": "p", "op": "publish", "topic": rap, "payload": "live", "retain": true},
            {"c": "s", "op": "subscribe", "subs": [{"filter": rh, "rh": 0}]},
            {"op": "sleep", "secs": 1},
            {"c": "s", "op": "subscribe", "subs": [{"filter": rh, "rh": 1}]},
            {"op": "sleep", "secs": 1},
            {"c": "s", "op": "subscribe", "subs": [{"filter": rh, "rh": 0}]},
            {"c": "t", "op": "subscribe", "subs": [{"filter": rh, "rh": 2}]},
            {"c": "t", "op": "subscribe", "subs": [{"filter": format!("{first}/+"), "rh": 1}]},
            {"op": "sleep", "secs": 2},
            {"c": "p", "op": "publish", "topic": rap, "payload": "", "retain": true},
            {"c": "p", "op": "publish", "topic": rh, "payload": "", "retain": true},
        ],
        "collect_secs": 3,
    });
    let out = paho_script::run(addr, SECRET, spec);
    let s = received(&out, "s", &first);
    let t = received(&out, "t", &first);
    let on = |msgs: &[&Value], topic: &str| -> Vec<Value> {
        msgs.iter()
            .filter(|m| m["topic"] == topic && m["payload"] != "")
            .map(|m| json!([m["payload"], m["retain"]]))
            .collect()
    };
    assert_eq!(
        on(&s, &nl),
        vec![json!(["other", false])],
        "No Local: {out}"
    );
    assert_eq!(
        s.iter().find(|m| m["topic"] == nl).unwrap()["sid"],
        json!([9])
    );
    assert_eq!(
        on(&t, &nl),
        vec![json!(["own", false]), json!(["other", false])]
    );
    assert_eq!(
        on(&s, &rap)[0],
        json!(["live", true]),
        "Retain As Published: {out}"
    );
    assert_eq!(on(&t, &rap)[0], json!(["live", false]), "RETAIN cleared");
    // rh 0 sends, rh 1 on an existing subscription does not, rh 0 again does.
    assert_eq!(
        on(&s, &rh),
        vec![json!(["r1", true]), json!(["r1", true])],
        "Retain Handling: {out}"
    );
    // rh 2 never; rh 1 on a new subscription does (`{first}/+` matches `rh` and `rap`).
    assert_eq!(on(&t, &rh), vec![json!(["r1", true])], "{out}");
    server.stop(Duration::from_secs(5)).await;
}

/// A message that expired while the session was away is not delivered; one that did not
/// carries the time left (3.3.2-5/6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_not_delivered_3_3_2_5() {
    let first = unique("exp");
    let (server, _) = start_bridge(&config(&[&first], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/e");
    let spec = json!({
        "clients": {"p": {"id": unique("p")}, "s": {"id": unique("s"), "clean": false, "expiry": 300}},
        "steps": [
            {"c": "s", "op": "subscribe", "subs": [{"filter": topic}]},
            {"c": "s", "op": "disconnect"},
            {"c": "p", "op": "publish", "topic": topic, "payload": "short", "props": {"mei": 2}},
            {"c": "p", "op": "publish", "topic": topic, "payload": "long", "props": {"mei": 600}},
            {"op": "sleep", "secs": 4},
            {"c": "s", "op": "connect"},
        ],
        "collect_secs": 4,
    });
    let out = paho_script::run(addr, SECRET, spec);
    let got = received(&out, "s", &first);
    assert_eq!(payloads(&got), vec!["long"], "{out}");
    let mei = got[0]["mei"].as_u64().unwrap();
    assert!((580..600).contains(&mei), "time left: {mei}");
    server.stop(Duration::from_secs(5)).await;
}

/// Clean Start 0 resumes the stored session even when the new connection asks for no
/// Session Expiry (3.1.2-4, the Paho suite's publication expiry test does this); the
/// session then ends with that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_start_0_resumes_the_session_whatever_the_new_expiry_3_1_2_4() {
    let first = unique("res");
    let (server, _) = start_bridge(&config(&[&first], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let topic = format!("{first}/q");
    let spec = json!({
        "clients": {"p": {"id": unique("p")}, "s": {"id": unique("s"), "clean": false, "expiry": 300}},
        "steps": [
            {"c": "s", "op": "subscribe", "subs": [{"filter": topic}]},
            {"c": "s", "op": "disconnect"},
            {"c": "p", "op": "publish", "topic": topic, "payload": "queued"},
            {"op": "sleep", "secs": 1},
            {"c": "s", "op": "connect", "expiry": 0},
            {"op": "sleep", "secs": 3},
            {"c": "s", "op": "disconnect"},
            {"op": "sleep", "secs": 1},
            {"c": "s", "op": "connect", "expiry": 0},
        ],
        "collect_secs": 1,
    });
    let out = paho_script::run(addr, SECRET, spec);
    assert_eq!(
        out["connack"]["s"],
        json!([[0, false], [0, true], [0, false]]),
        "resumed once, then gone: {out}"
    );
    assert_eq!(
        payloads(&received(&out, "s", &first)),
        vec!["queued"],
        "{out}"
    );
    server.stop(Duration::from_secs(5)).await;
}

/// The same behaviours judged by rumqttc v5: properties, Subscription Identifiers of two
/// overlapping subscriptions (one delivery), No Local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_sees_properties_subscription_ids_and_no_local() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PublishProperties, SubscribeProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let base = unique("rq");
    let (a, b) = (format!("{base}a"), format!("{base}b"));
    let (server, _) = start_bridge(&config(&[&a, &b], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let client = |id: &str| {
        let mut o = MqttOptions::new(id, "127.0.0.1", addr.port());
        o.set_credentials("demo", password(id));
        AsyncClient::new(o, 64)
    };
    let (sub, mut sub_ev) = client(&unique("rs"));
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(ev) = sub_ev.poll().await {
            if let Event::Incoming(p) = ev {
                let _ = tx.send(p).await;
            }
        }
    });
    let topic = format!("{a}/rq");
    let mut nl = Filter::new(topic.clone(), QoS::AtLeastOnce);
    nl.nolocal = true;
    let mut span = Filter::new("+/rq", QoS::AtLeastOnce);
    span.nolocal = true;
    for (f, id) in [(nl, 42), (span, 7)] {
        let p = SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        };
        sub.subscribe_many_with_properties([f], p).await.unwrap();
    }
    let mut subacks = 0;
    while subacks < 2 {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(Packet::SubAck(_))) => subacks += 1,
            Ok(Some(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
    sub.publish(topic.clone(), QoS::AtLeastOnce, false, "own")
        .await
        .unwrap();
    let (publ, mut pub_ev) = client(&unique("rp"));
    tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(120),
        response_topic: Some(format!("{b}/reply")),
        correlation_data: Some(vec![1u8, 0, 2].into()),
        user_properties: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
        content_type: Some("text/plain".into()),
        ..PublishProperties::default()
    };
    publ.publish_with_properties(topic.clone(), QoS::AtLeastOnce, false, "other", props)
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if let Packet::Publish(p) = p {
            got.push(p);
        }
    }
    assert_eq!(got.len(), 1, "one delivery, not our own: {got:?}");
    let p = &got[0];
    assert_eq!(&p.payload[..], b"other");
    let pr = p.properties.as_ref().expect("properties");
    assert_eq!(pr.payload_format_indicator, Some(1));
    assert_eq!(pr.content_type.as_deref(), Some("text/plain"));
    assert_eq!(pr.response_topic, Some(format!("{b}/reply")));
    assert_eq!(pr.correlation_data.as_deref(), Some(&[1u8, 0, 2][..]));
    assert_eq!(
        pr.user_properties,
        vec![
            ("k".to_owned(), "1".to_owned()),
            ("k".to_owned(), "2".to_owned())
        ]
    );
    assert!(matches!(pr.message_expiry_interval, Some(110..=120)));
    let mut ids = pr.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 42]);
    server.stop(Duration::from_secs(5)).await;
}
