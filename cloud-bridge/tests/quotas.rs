#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The state clients make the bridge keep (retained messages, sessions, wills, wildcard
//! registrations) is bounded: a write over a `[quotas]` bound is refused with 0x97 and
//! counted in `/metrics`; and it lives in the broker's compaction topics, not in the name
//! server's kvconfig: 10,000 retained topics and 10,000 persistent sessions leave the name
//! server's heap and `kvConfig.json` as they were. Clients: Python paho-mqtt (MQTT 5 and
//! 3.1.1); RocketMQ is the real broker.

mod harness;

use std::time::Duration;

use futures_util::StreamExt;
use harness::{config_text, paho_sessions, password, start_bridge};
use serde_json::json;
use test_support::{repo_root, unique};

/// Opens a persistent 3.1.1 session with rumqttc, subscribes to `filter`, disconnects;
/// whether the CONNACK and SUBACK were successes.
async fn persistent_session(addr: std::net::SocketAddr, id: String, filter: String) -> bool {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
    let mut o = MqttOptions::new(id.clone(), "127.0.0.1", addr.port());
    o.set_credentials("demo", password(&id));
    o.set_clean_session(false);
    let (client, mut ev) = AsyncClient::new(o, 8);
    let run = async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    if a.code != rumqttc::ConnectReturnCode::Success {
                        return false;
                    }
                    let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    let _ = client.disconnect().await;
                    let granted =
                        s.return_codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)];
                    // Until the DISCONNECT is written and the connection closes.
                    while ev.poll().await.is_ok() {}
                    return granted;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or(false)
}

/// A bridge on its own first-level topic and its own state topics, with `quotas`.
fn config(first: &str, quotas: &str) -> String {
    let state = format!(
        "queues = 2\nretained_topic = \"{first}R\"\nsession_topic = \"{first}S\"\nwill_topic = \"{first}W\"\n"
    );
    config_text(first, &[], &format!("[quotas]\n{quotas}\n"))
        .replace("queues = 2\n", &state)
        .replace("bind = \"\"", "bind = \"127.0.0.1:0\"")
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    mqtt::metrics::fetch::get(addr, "/metrics", Duration::from_secs(5))
        .await
        .expect("GET /metrics")
        .1
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quota_refuses_with_0x97_and_is_counted() {
    let first = unique("quota");
    let quotas = "retained_messages = 5\nretained_messages_per_client = 3\nsessions = 2\n\
                  will_record_bytes = 300\nwildcards_per_first_level = 2\nsession_record_bytes = 1100\n";
    let (server, _) = start_bridge(&config(&first, quotas)).await;
    let addr = server.local_addr("mqtt").unwrap();
    let retain = |topic: String| json!({"op": "publish", "topic": topic, "qos": 1, "retain": true});

    // Retained: 3 per client, 5 in all. One after another, so the order is known.
    let a = unique("a");
    let b = unique("b");
    let r = paho_sessions::run(
        addr,
        1,
        &[
            json!({"client_id": a, "ops": (1..=4).map(|i| retain(format!("{first}/a/{i}"))).collect::<Vec<_>>()}),
            json!({"client_id": b, "ops": (1..=3).map(|i| retain(format!("{first}/b/{i}"))).collect::<Vec<_>>()}),
            // Replacing one's own retained message and clearing one always fit.
            json!({"client_id": a, "ops": [retain(format!("{first}/a/1")),
                json!({"op": "publish", "topic": format!("{first}/a/2"), "payload": "", "retain": true}),
                retain(format!("{first}/b/3"))]}),
        ],
    );
    assert_eq!(r[0]["ops"], json!([0, 0, 0, 0x97]), "per client: {}", r[0]);
    assert_eq!(r[1]["ops"], json!([0, 0, 0x97]), "in all: {}", r[1]);
    // a/2 cleared: room for one more, but a has 2 of its 3 and in all 4 of 5, so b/3 fits.
    assert_eq!(
        r[2]["ops"],
        json!([0, 0, 0]),
        "replace, clear, then fit: {}",
        r[2]
    );

    // Wills over will_record_bytes: CONNACK 0x97; a small one is kept.
    let r = paho_sessions::run(
        addr,
        2,
        &[
            json!({"client_id": unique("w"), "will_bytes": 400, "will_topic": format!("{first}/w")}),
            json!({"client_id": unique("w"), "will_bytes": 10, "will_topic": format!("{first}/w")}),
        ],
    );
    assert_eq!(r[0]["connack"], 0x97, "{}", r[0]);
    assert_eq!(r[1]["connack"], 0, "{}", r[1]);

    // Sessions: two persistent ones fit, a third is refused (MQTT 5: 0x97; 3.1.1: a refusal),
    // a clean one is not a stored session.
    let s1 = unique("s");
    let long =
        |i: u32| json!({"op": "subscribe", "filter": format!("{first}/{i}{}", "x".repeat(230))});
    let r = paho_sessions::run(
        addr,
        1,
        &[
            // Its record grows with each filter: the fourth 240-byte filter would pass 1100.
            json!({"client_id": s1, "clean": false, "expiry": 3600, "ops": (1..=4).map(long).collect::<Vec<_>>()}),
            json!({"client_id": unique("s"), "clean": false, "expiry": 3600}),
            json!({"client_id": unique("s"), "clean": false, "expiry": 3600}),
            json!({"client_id": unique("s"), "proto": 3, "clean": false}),
            json!({"client_id": unique("s")}),
            // Resuming a stored session is not a new one.
            json!({"client_id": s1, "clean": false, "expiry": 3600}),
        ],
    );
    assert_eq!(r[0]["connack"], 0);
    assert_eq!(
        r[0]["ops"],
        json!([1, 1, 1, 0x97]),
        "record bytes: {}",
        r[0]
    );
    assert_eq!(r[1]["connack"], 0);
    assert_eq!(r[2]["connack"], 0x97, "{}", r[2]);
    assert_ne!(r[3]["connack"], 0, "3.1.1: {}", r[3]);
    assert_eq!(r[4]["connack"], 0, "{}", r[4]);
    assert_eq!(
        (r[5]["connack"].clone(), r[5]["present"].clone()),
        (json!(0), json!(true))
    );

    // Wildcard registrations: two per first-level topic.
    let r = paho_sessions::run(
        addr,
        1,
        &[json!({"client_id": unique("wc"), "ops": [
            {"op": "subscribe", "filter": format!("{first}/+/x")},
            {"op": "subscribe", "filter": format!("{first}/+/y")},
            {"op": "subscribe", "filter": format!("{first}/+/z")},
            {"op": "subscribe", "filter": format!("{first}/+/x")}]})],
    );
    assert_eq!(r[0]["ops"], json!([1, 1, 0x97, 1]), "{}", r[0]);

    let text = metrics(server.metrics_addr().unwrap()).await;
    let refused = |table: &str, quota: &str| {
        metric(
            &text,
            &format!("cloud_bridge_quota_refused_total{{table=\"{table}\",quota=\"{quota}\"}}"),
        )
    };
    assert_eq!(refused("retained", "entries_per_client"), 1, "{text}");
    assert_eq!(refused("retained", "entries"), 1);
    assert_eq!(refused("wills", "entry_bytes"), 1);
    assert_eq!(refused("sessions", "entries"), 2);
    assert_eq!(refused("sessions", "entry_bytes"), 1);
    assert_eq!(refused("wildcards", "entries"), 1);
    assert_eq!(
        metric(&text, "cloud_bridge_state_entries{table=\"retained\"}"),
        5
    );
    server.stop(Duration::from_secs(2)).await;
}

/// Session records are written only when they change: no-op UNSUBSCRIBEs and repeated
/// identical SUBSCRIBEs of a persistent session add no record to the session table (each
/// wrote one before, 501 name-server writes for 500 no-op UNSUBSCRIBEs when sessions lived
/// in kvconfig).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_sessions_are_not_written_again() {
    let first = unique("nochg");
    let (server, _) = start_bridge(&config(&first, "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let id = unique("s");
    let filter = format!("{first}/a/+");
    let session = |ops: Vec<serde_json::Value>| json!({"client_id": id, "clean": false, "expiry": 3600, "ops": ops});
    let r = paho_sessions::run(
        addr,
        1,
        &[session(vec![json!({"op": "subscribe", "filter": filter})])],
    );
    assert_eq!(r[0]["ops"], json!([1]), "{}", r[0]);
    let session_topic = format!("{first}S");
    let before = test_support::rocketmq::max_offset(&session_topic);
    let mut ops = Vec::new();
    for i in 0..100 {
        ops.push(json!({"op": "unsubscribe", "filter": format!("{first}/none/{i}")}));
        ops.push(json!({"op": "subscribe", "filter": filter}));
    }
    let r = paho_sessions::run(addr, 1, &[session(ops)]);
    assert_eq!(r[0]["present"], true, "{}", r[0]);
    let codes = r[0]["ops"].as_array().unwrap();
    assert_eq!(codes.len(), 200);
    assert!(
        codes.iter().step_by(2).all(|c| *c == 0x11),
        "no subscription existed: {}",
        r[0]
    );
    let after = test_support::rocketmq::max_offset(&session_topic);
    // The connection's own open and close rewrite the record (owner, then the end mark):
    // at most those two, not one per packet.
    assert!(
        after - before <= 2,
        "{} session records for 200 no-op packets",
        after - before
    );
    server.stop(Duration::from_secs(2)).await;
}

/// The name server's heap in use after a full GC, bytes (`jcmd`, JDK 17).
fn namesrv_heap_used() -> u64 {
    let pid = std::fs::read_to_string(repo_root().join("tests/rocketmq/run/namesrv.pid"))
        .expect("namesrv.pid (the test RocketMQ of tests/rocketmq/rocketmq.sh)");
    let jcmd = |what: &str| {
        let out = std::process::Command::new("jcmd")
            .args([pid.trim(), what])
            .output()
            .expect("jcmd (JDK)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    jcmd("GC.run");
    let info = jcmd("GC.heap_info");
    // " garbage-first heap   total 67584K, used 19269K [..."
    info.split("used ")
        .nth(1)
        .and_then(|s| s.split('K').next())
        .and_then(|k| k.trim().parse::<u64>().ok())
        .map(|k| k * 1024)
        .unwrap_or_else(|| panic!("no heap figure in {info}"))
}

/// The test broker's limit of open files (`None` when it is not the local one).
fn broker_open_files_limit() -> Option<usize> {
    let pid = std::fs::read_to_string(repo_root().join("tests/rocketmq/run/broker.pid")).ok()?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pid.trim())).ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

fn kv_config_bytes() -> u64 {
    std::fs::metadata(repo_root().join("tests/rocketmq/run/namesrv/kvConfig.json"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_retained_topics_and_sessions_stay_off_the_name_server() {
    // Each retained topic is an LMQ holding one open file on the broker: with fewer than
    // n + 5,000 files allowed, 10,000 topics would wedge the broker for every later test.
    let limit = broker_open_files_limit();
    let n = match limit {
        Some(l) if l < 10_000 + 5_000 => (l.saturating_sub(5_000) / 1_000).max(1) * 1_000,
        _ => 10_000,
    };
    if n < 10_000 {
        println!("the broker may open {limit:?} files: {n} topics and sessions instead of 10,000");
    }
    let first = unique("big");
    let (server, _) = start_bridge(&config(&first, "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    let heap_before = namesrv_heap_used();
    let kv_before = kv_config_bytes();

    // 10 clients x 1,000 retained topics (the default per-client quota), 100 B each.
    let payload = "r".repeat(100);
    let publishers: Vec<_> = (0..10)
        .map(|c| {
            let ops: Vec<_> = (0..n / 10)
                .map(|i| {
                    json!({"op": "publish", "topic": format!("{first}/{c}/{i}"), "qos": 1,
                    "retain": true, "payload": payload})
                })
                .collect();
            json!({"client_id": unique("rp"), "ops": ops})
        })
        .collect();
    let started = std::time::Instant::now();
    let r = paho_sessions::run(addr, 10, &publishers);
    let stored: usize = r
        .iter()
        .map(|s| {
            s["ops"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| **c == 0)
                .count()
        })
        .sum();
    assert_eq!(stored, n, "retained publishes acknowledged");
    println!("{n} retained publishes in {:.1?}", started.elapsed());

    // 10,000 persistent sessions, each with one subscription, opened by rumqttc (3.1.1,
    // clean session off), 32 at a time.
    let started = std::time::Instant::now();
    let opened: Vec<bool> = futures_util::stream::iter(0..n)
        .map(|i| {
            persistent_session(
                addr,
                format!("{first}-s{i}"),
                format!("{first}/{}/+", i % 10),
            )
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let ok = opened.iter().filter(|o| **o).count();
    assert_eq!(ok, n, "persistent sessions opened and subscribed");
    println!("{n} persistent sessions in {:.1?}", started.elapsed());

    let heap_after = namesrv_heap_used();
    let kv_after = kv_config_bytes();
    println!(
        "name server heap after GC: {heap_before} -> {heap_after} bytes; kvConfig.json: {kv_before} -> {kv_after} bytes"
    );
    // The only kvconfig writes are this test's first-level topic and a heartbeat.
    assert!(
        kv_after < kv_before + 4096,
        "kvConfig.json grew {kv_before} -> {kv_after}"
    );
    assert!(
        heap_after < heap_before + (8 << 20),
        "name server heap grew {heap_before} -> {heap_after}"
    );

    // Everything is there: a new subscriber gets all 10,000 retained messages, and a
    // session resumes on a second bridge.
    let second = cloud_bridge::server::Server::start(
        cloud_bridge::config::Config::parse(&config(&first, ""), "second").unwrap(),
    )
    .await
    .unwrap();
    let addr2 = second.local_addr("mqtt").unwrap();
    let id = unique("all");
    let sub = harness::subscriber::External::paho(
        addr2,
        harness::clients::Proto::V311,
        &id,
        &harness::password(&id),
        &format!("{first}/#"),
        0,
        n,
    );
    let lines = sub.lines();
    assert_eq!(lines.len(), n);
    let r = paho_sessions::run(
        addr2,
        1,
        &[json!({"client_id": format!("{first}-s{}", n - 1), "clean": false, "expiry": 86400})],
    );
    assert_eq!(
        (r[0]["connack"].clone(), r[0]["present"].clone()),
        (json!(0), json!(true))
    );
    let text = metrics(second.metrics_addr().unwrap()).await;
    println!(
        "second bridge holds: {} retained ({} B), {} sessions ({} B)",
        metric(&text, "cloud_bridge_state_entries{table=\"retained\"}"),
        metric(&text, "cloud_bridge_state_bytes{table=\"retained\"}"),
        metric(&text, "cloud_bridge_state_entries{table=\"sessions\"}"),
        metric(&text, "cloud_bridge_state_bytes{table=\"sessions\"}"),
    );
    second.stop(Duration::from_secs(2)).await;
    server.stop(Duration::from_secs(2)).await;

    // Each of the 10,000 topics is an LMQ holding one open file on the broker, whose
    // limit here is 20,000: delete them, or the next run of the suite exhausts it.
    let client = cloud_bridge::rocketmq::Client::new(Default::default());
    let broker = test_support::rocketmq::env("ROCKETMQ_BROKER");
    let names: Vec<String> = (0..10)
        .flat_map(|c| (0..n / 10).map(move |i| format!("{c}/{i}")))
        .map(|rest| cloud_bridge::lmq::lmq_name(&format!("{first}/{rest}")))
        .collect();
    let deleted: Vec<bool> = futures_util::stream::iter(names.iter())
        .map(|name| {
            let client = &client;
            let broker = &broker;
            async move { client.broker(broker).delete_topic(name).await.is_ok() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    println!(
        "deleted {} of {n} LMQs",
        deleted.iter().filter(|d| **d).count()
    );
    client.close().await;
}
