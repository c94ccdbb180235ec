#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The bridge's metrics endpoint against the real RocketMQ: after known traffic the
//! scraped counters are exactly what was published, refused, stored in RocketMQ and
//! delivered to a subscriber; `/health` is 200 with RocketMQ and 503 without a name
//! server.

mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use harness::clients::{Msg, Proto, rumqttc_publish};
use harness::subscriber::rumqttc_subscribe;
use harness::{config_text, password, start_bridge, with_metrics};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use test_support::metrics::{self, samples, value};
use test_support::unique;

const WAIT: Duration = Duration::from_secs(20);

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    metrics::get(addr, path, WAIT).await
}

/// Publishes `n` QoS 1 messages to `topic` with MQTT 5; returns the PUBACK reasons.
async fn publish_v5(addr: SocketAddr, topic: &str, n: usize) -> Vec<PubAckReason> {
    let id = unique("p");
    let mut o = MqttOptions::new(&id, "127.0.0.1", addr.port());
    o.set_credentials("demo", password(&id));
    let (client, mut ev) = AsyncClient::new(o, 64);
    for _ in 0..n {
        client
            .publish(topic, QoS::AtLeastOnce, false, &b"m"[..])
            .await
            .unwrap();
    }
    let mut reasons = Vec::new();
    while reasons.len() < n {
        match tokio::time::timeout(WAIT, ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => reasons.push(a.reason),
            Ok(Ok(_)) => {}
            other => panic!("publisher: {other:?} after {} acks", reasons.len()),
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), ev.poll()).await;
    reasons
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_counts_exactly_what_was_published_stored_refused_and_delivered() {
    const N: usize = 6; // QoS 1, stored in RocketMQ and delivered
    const N0: usize = 2; // QoS 0, stored and delivered at QoS 0
    const M: usize = 3; // QoS 1 to a topic outside the first level: refused
    let first = unique("met");
    let (server, _) = start_bridge(&with_metrics(&config_text(&first, &[], ""))).await;
    let tcp = server.local_addr("mqtt").unwrap();
    let metrics = server.metrics_addr().expect("metrics endpoint on");
    let topic = format!("{first}/a");

    let sub_id = unique("s");
    let mut sub = rumqttc_subscribe(
        tcp,
        Proto::V5,
        &sub_id,
        &password(&sub_id),
        true,
        &[(&topic, 1)],
    )
    .await;
    let mut msgs: Vec<Msg> = (0..N)
        .map(|i| Msg {
            topic: topic.clone(),
            qos: 1,
            payload: format!("m{i}").into_bytes(),
            user: Vec::new(),
        })
        .collect();
    msgs.extend((0..N0).map(|i| Msg {
        topic: topic.clone(),
        qos: 0,
        payload: format!("z{i}").into_bytes(),
        user: Vec::new(),
    }));
    let pub_id = unique("p");
    rumqttc_publish(tcp, Proto::V5, None, &pub_id, &password(&pub_id), &msgs).await;
    let refused = publish_v5(tcp, &format!("x{first}/a"), M).await;
    assert!(
        refused.iter().all(|r| *r == PubAckReason::TopicNameInvalid),
        "{refused:?}"
    );
    let got = sub.collect(N + N0, WAIT).await;
    assert_eq!(got.len(), N + N0, "delivered");

    let (code, text) = get(metrics, "/metrics").await;
    assert_eq!(code, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");
    let m = samples(&text);
    let q1 = got.iter().filter(|r| r.qos == 1).count() as f64;
    let q0 = got.iter().filter(|r| r.qos == 0).count() as f64;
    assert_eq!((q1, q0), (N as f64, N0 as f64));
    for (key, want) in [
        (
            "cloud_bridge_publish_received_total{qos=\"1\"}",
            (N + M) as f64,
        ),
        ("cloud_bridge_publish_received_total{qos=\"0\"}", N0 as f64),
        ("cloud_bridge_publish_refused_total", M as f64),
        ("cloud_bridge_rocketmq_sent_total", (N + N0) as f64),
        ("cloud_bridge_rocketmq_send_failed_total", 0.0),
        ("cloud_bridge_rocketmq_send_timeouts_total", 0.0),
        ("cloud_bridge_rocketmq_send_seconds_count", (N + N0) as f64),
        (
            "cloud_bridge_rocketmq_send_seconds_bucket{le=\"+Inf\"}",
            (N + N0) as f64,
        ),
        ("cloud_bridge_publish_sent_total{qos=\"1\"}", q1),
        ("cloud_bridge_publish_sent_total{qos=\"0\"}", q0),
        ("cloud_bridge_connections_accepted_total", 3.0),
        ("cloud_bridge_subscribe_requests_total", 1.0),
    ] {
        assert_eq!(value(&m, key), want, "{key} in\n{text}");
    }
    assert!(value(&m, "cloud_bridge_rocketmq_send_seconds_sum") > 0.0);
    // The publishers are gone, the subscriber stays (bounded wait for the closes).
    let mut clients = f64::NAN;
    for _ in 0..100 {
        let m = samples(&get(metrics, "/metrics").await.1);
        clients = value(&m, "cloud_bridge_clients_connected");
        if clients == 1.0 && value(&m, "cloud_bridge_connections") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(clients, 1.0);

    let (code, body) = get(metrics, "/health").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("routes known"), "{body}");
    let (code, body) = get(metrics, "/status").await;
    assert_eq!(code, 200);
    let s: cloud_bridge::metrics::Snapshot = serde_json::from_str(&body).unwrap();
    assert_eq!(s.rocketmq.sent, (N + N0) as u64);
    assert_eq!(s.server.publish_refused, M as u64);
    drop(sub);
    server.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn health_is_503_without_a_name_server() {
    let first = unique("met");
    let ns = test_support::rocketmq::env("ROCKETMQ_NAMESRV");
    // A port nothing listens on any more.
    let dead = format!("127.0.0.1:{}", test_support::free_port());
    let text = with_metrics(&config_text(&first, &[], "")).replace(&ns, &dead);
    let config = cloud_bridge::config::Config::parse(&text, "test").unwrap();
    let server = cloud_bridge::server::Server::start(config).await.unwrap();
    let metrics = server.metrics_addr().unwrap();
    let (code, body) = get(metrics, "/health").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    assert_eq!(get(metrics, "/metrics").await.0, 200);
    server.stop(Duration::from_secs(10)).await;
}
