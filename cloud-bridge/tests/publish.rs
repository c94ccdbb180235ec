#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The write path against the real RocketMQ: every publish through the bridge is readable
//! by a plain RocketMQ consumer of the first-level topic, with rocketmq-mqtt's properties,
//! and grows exactly the right LMQs.

mod harness;

use cloud_bridge::config::Config;
use harness::clients::{Msg, Proto, Tls, mosquitto_pub, paho_publish, rumqttc_publish};
use harness::{config_text, consume, password, start_bridge, with_metrics};
use std::time::Duration;
use test_support::certs::Pki;
use test_support::metrics::{samples, value};
use test_support::rocketmq::max_offset;
use test_support::unique;

fn msg(topic: String, qos: u8, payload: &str) -> Msg {
    Msg {
        topic,
        qos,
        payload: payload.as_bytes().to_vec(),
        user: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_from_every_client_land_in_rocketmq() {
    let first = unique("pub");
    let dir = std::env::temp_dir().join(unique("pki-"));
    let pki = Pki::new(&dir);
    let extra = format!(
        "[[listener]]\nname = \"mqtts\"\nbind = \"127.0.0.1:0\"\ntls = {{ cert = {:?}, key = {:?} }}\n",
        pki.server_cert, pki.server_key
    );
    let wildcard = format!("{first}/+");
    let (server, _) = start_bridge(&config_text(&first, &[&wildcard], &extra)).await;
    let tcp = server.local_addr("mqtt").expect("tcp listener");
    let tls = server.local_addr("mqtts").expect("tls listener");

    let mut expected: Vec<Msg> = Vec::new();
    for proto in [Proto::V311, Proto::V5] {
        for secure in [false, true] {
            let mut batch = Vec::new();
            for qos in 0..=2u8 {
                let tag = format!("rumqttc-{proto:?}-tls{secure}-q{qos}");
                batch.push(msg(
                    format!("{first}/{tag}"),
                    qos,
                    &format!("payload of {tag}"),
                ));
            }
            let client_id = unique("c");
            let addr = if secure { tls } else { tcp };
            let tls_opt = secure.then(|| Tls {
                ca: &pki.ca,
                client: None,
            });
            rumqttc_publish(
                addr,
                proto,
                tls_opt,
                &client_id,
                &password(&client_id),
                &batch,
            )
            .await;
            expected.extend(batch);
        }
    }
    for (proto, qos) in [(Proto::V311, 1u8), (Proto::V5, 2u8)] {
        let tag = format!("mosquitto-{proto:?}-q{qos}");
        let m = msg(format!("{first}/{tag}"), qos, &format!("payload of {tag}"));
        let client_id = unique("mosq");
        mosquitto_pub(tcp, proto, &client_id, &password(&client_id), &m);
        expected.push(m);

        let tag = format!("paho-{proto:?}-q{qos}");
        let m = msg(format!("{first}/{tag}"), qos, &format!("payload of {tag}"));
        let client_id = unique("paho");
        paho_publish(tcp, proto, &client_id, &password(&client_id), &m);
        expected.push(m);
    }

    let got = consume(&first, expected.len());
    assert_eq!(got.len(), expected.len());
    for m in &expected {
        let found = got
            .iter()
            .find(|g| g["properties"]["originMqttTopic"] == m.topic.as_str())
            .unwrap_or_else(|| panic!("{} not found in RocketMQ", m.topic));
        let p = &found["properties"];
        assert_eq!(found["topic"], first.as_str());
        assert_eq!(
            found["body_utf8"],
            String::from_utf8_lossy(&m.payload).as_ref()
        );
        assert_eq!(p["qosLevel"], m.qos.to_string().as_str(), "{}", m.topic);
        assert_eq!(p["IS_EMPTY_MSG"], "false");
        assert_eq!(p["retryTimes"], "0");
        assert_eq!(p["TAGS"], "MQTT_COMMON");
        assert!(p["UNIQ_KEY"].as_str().is_some_and(|k| !k.is_empty()));
        let own = cloud_bridge::lmq::lmq_name(&m.topic);
        let wild = cloud_bridge::lmq::lmq_name(&wildcard);
        assert_eq!(p["INNER_MULTI_DISPATCH"], format!("{own},{wild}").as_str());
        assert!(p["INNER_MULTI_QUEUE_OFFSET"].as_str().is_some());
        // extData exactly as rocketmq-mqtt writes it (issue #15).
        assert_eq!(
            p["extData"],
            format!(r#"{{"qosLevel":"{}"}}"#, m.qos).as_str()
        );
        assert!(p.get("mqtt5UserProperties").is_none_or(|v| v.is_null()));
    }
    server.stop(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lmqs_of_the_topic_and_matching_wildcards_grow_by_one() {
    let first = unique("lmq");
    let w_plus = format!("{first}/+");
    let w_hash = format!("{first}/a/#");
    let w_other = format!("{first}/b/+");
    let (server, _) = start_bridge(&config_text(&first, &[&w_plus, &w_hash, &w_other], "")).await;
    let addr = server.local_addr("mqtt").expect("listener");
    let topic = format!("{first}/a");
    let queues = [
        (cloud_bridge::lmq::lmq_name(&topic), 1),
        (cloud_bridge::lmq::lmq_name(&w_plus), 1),
        (cloud_bridge::lmq::lmq_name(&w_hash), 1),
        (cloud_bridge::lmq::lmq_name(&w_other), 0),
    ];
    let before: Vec<i64> = queues.iter().map(|(q, _)| max_offset(q)).collect();
    let client_id = unique("c");
    rumqttc_publish(
        addr,
        Proto::V5,
        None,
        &client_id,
        &password(&client_id),
        &[msg(topic.clone(), 1, "grow")],
    )
    .await;
    for ((q, growth), b) in queues.iter().zip(before) {
        assert_eq!(max_offset(q), b + growth, "max offset of {q}");
    }
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_payload_and_user_properties_are_stored_like_rocketmq_mqtt() {
    let first = unique("props");
    let (server, _) = start_bridge(&config_text(&first, &[], "")).await;
    let addr = server.local_addr("mqtt").expect("listener");
    let client_id = unique("c");
    let msgs = vec![
        Msg {
            topic: format!("{first}/empty"),
            qos: 1,
            payload: Vec::new(),
            user: Vec::new(),
        },
        Msg {
            topic: format!("{first}/props"),
            qos: 1,
            payload: b"x".to_vec(),
            user: vec![
                ("unit".into(), "celsius".into()),
                ("msg-key".into(), "gw-7:42".into()),
            ],
        },
    ];
    rumqttc_publish(
        addr,
        Proto::V5,
        None,
        &client_id,
        &password(&client_id),
        &msgs,
    )
    .await;
    let got = consume(&first, 2);
    let by_topic = |t: &str| {
        got.iter()
            .find(|g| g["properties"]["originMqttTopic"] == t)
            .unwrap_or_else(|| panic!("{t} missing"))
            .clone()
    };
    let empty = by_topic(&msgs[0].topic);
    assert_eq!(empty["body_utf8"], "★\r\n\t☀");
    assert_eq!(empty["properties"]["IS_EMPTY_MSG"], "true");
    let props = by_topic(&msgs[1].topic);
    assert_eq!(props["properties"]["IS_EMPTY_MSG"], "false");
    // User properties in a property of their own, never in extData (issue #15).
    let user: Vec<(String, String)> = serde_json::from_str(
        props["properties"]["mqtt5UserProperties"]
            .as_str()
            .expect("mqtt5UserProperties"),
    )
    .expect("json");
    assert!(
        user.contains(&("unit".into(), "celsius".into())),
        "{user:?}"
    );
    assert!(
        user.contains(&("msg-key".into(), "gw-7:42".into())),
        "{user:?}"
    );
    assert_eq!(
        props["properties"]["extData"],
        format!(r#"{{"qosLevel":"{}"}}"#, msgs[1].qos).as_str()
    );
    assert_eq!(props["keys"], "gw-7:42");
    server.stop(Duration::from_secs(5)).await;
}

/// With a publish pipeline (16 stores in flight, the default) one client's publishes to
/// several topics are stored concurrently, yet every topic's LMQ holds them in publish
/// order: the wildcard subscriber reads the LMQ that every one of them was appended to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_keep_the_order_of_each_topic() {
    let (server, config) = ordered_publishes(None).await;
    assert_eq!(config.limits.publish_pipeline, 16, "the default pipeline");
    assert_eq!(server.counters().publish_budget_waits, 0);
    server.stop(Duration::from_secs(5)).await;
}

/// A store budget (`limits.max_storing_bytes`) with room for about 3 publishes holds the
/// publisher back (its publishes wait, counted) and changes nothing else: all are stored,
/// each topic in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_store_budget_holds_publishes_back_without_loss_or_reordering() {
    let (server, _) = ordered_publishes(Some(100)).await;
    let waits = server.counters().publish_budget_waits;
    assert!(waits > 0, "no publish waited for the budget");
    server.stop(Duration::from_secs(5)).await;
}

/// One publisher sends 300 QoS 1 messages to each of 4 topics (interleaved); a wildcard
/// subscriber must get all of them, each topic in order.
async fn ordered_publishes(budget: Option<usize>) -> (cloud_bridge::server::Server, Config) {
    const TOPICS: usize = 4;
    const PER_TOPIC: usize = 300;
    let first = unique("ord");
    let plus = format!("{first}/+");
    let mut config = Config::parse(&config_text(&first, &[&plus], ""), "test").expect("config");
    if let Some(b) = budget {
        config.limits.max_storing_bytes = b;
    }
    cloud_bridge::admin::init(&config).await.expect("init");
    let server = cloud_bridge::server::Server::start(config.clone())
        .await
        .expect("start bridge");
    let addr = server.local_addr("mqtt").expect("listener");
    let id = unique("s");
    let mut sub = harness::subscriber::rumqttc_subscribe(
        addr,
        Proto::V5,
        &id,
        &password(&id),
        true,
        &[(plus.as_str(), 1)],
    )
    .await;

    let mut sent = Vec::new();
    for n in 0..PER_TOPIC {
        for t in 0..TOPICS {
            sent.push(msg(format!("{first}/t{t}"), 1, &n.to_string()));
        }
    }
    let id = unique("p");
    rumqttc_publish(addr, Proto::V311, None, &id, &password(&id), &sent).await;

    let got = sub.collect(sent.len(), Duration::from_secs(60)).await;
    assert_eq!(
        got.len(),
        sent.len(),
        "every publish reaches the subscriber"
    );
    let mut next = [0usize; TOPICS];
    for (i, g) in got.iter().enumerate() {
        let t: usize = g.topic.rsplit_once("/t").unwrap().1.parse().unwrap();
        let n: usize = String::from_utf8_lossy(&g.payload).parse().unwrap();
        assert_eq!(
            n, next[t],
            "{}: message {i} of the LMQ is out of order",
            g.topic
        );
        next[t] += 1;
    }
    (server, config)
}

/// Issue #17: on a broker with one send thread (the test broker, as rocketmq.sh
/// configures it) the bridge sends one topic's publishes without waiting for each answer,
/// and they still land in publish order: in the first-level topic's queue, read by the
/// plain RocketMQ Java consumer, and in the topic's LMQ, read by an MQTT subscriber. With
/// `rocketmq.pipeline_sends = "always"` against a broker with more send threads, this test
/// is the one that finds them reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_topic_publishes_are_pipelined_and_stay_in_order() {
    const N: usize = 2000;
    let first = unique("pipe");
    let topic = format!("{first}/one");
    let (server, _) = start_bridge(&with_metrics(&config_text(&first, &[], ""))).await;
    let addr = server.local_addr("mqtt").unwrap();
    let id = unique("s");
    let mut sub = harness::subscriber::rumqttc_subscribe(
        addr,
        Proto::V5,
        &id,
        &password(&id),
        true,
        &[(topic.as_str(), 1)],
    )
    .await;
    let sent: Vec<Msg> = (0..N)
        .map(|n| msg(topic.clone(), 1, &n.to_string()))
        .collect();
    let id = unique("p");
    rumqttc_publish(addr, Proto::V311, None, &id, &password(&id), &sent).await;

    let got = sub.collect(N, Duration::from_secs(60)).await;
    assert_eq!(got.len(), N, "every publish reaches the subscriber");
    for (i, g) in got.iter().enumerate() {
        assert_eq!(
            String::from_utf8_lossy(&g.payload),
            i.to_string(),
            "message {i} of the LMQ is out of order"
        );
    }
    let mut stored: Vec<(i64, i64, String)> = consume(&first, N)
        .iter()
        .map(|m| {
            (
                m["queueId"].as_i64().unwrap(),
                m["queueOffset"].as_i64().unwrap(),
                m["body_utf8"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(stored.len(), N);
    stored.sort();
    assert!(
        stored.iter().all(|(q, _, _)| *q == stored[0].0),
        "one topic, one queue"
    );
    for (i, (_, _, body)) in stored.iter().enumerate() {
        assert_eq!(
            body,
            &i.to_string(),
            "queue offset {i} holds another message"
        );
    }
    let metrics = server.metrics_addr().expect("metrics endpoint");
    let (_, text) = test_support::metrics::get(metrics, "/metrics", Duration::from_secs(10)).await;
    let pipelined = value(
        &samples(&text),
        "cloud_bridge_rocketmq_sends_pipelined_total",
    );
    assert!(
        pipelined >= (N / 2) as f64,
        "sends were pipelined: {pipelined} of {N}"
    );
    server.stop(Duration::from_secs(5)).await;
}
