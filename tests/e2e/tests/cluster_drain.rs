//! The edge-agent's backlog drained through a bridge on a two-broker RocketMQ cluster
//! (`tests/rocketmq/rocketmq.sh cluster`, started here when it is not running), with
//! broker-a killed (-9) mid-drain and started again (issue #16): nothing journaled is
//! lost, and each topic's messages keep their journal order, a message sent again after
//! the failure counting where its last copy is (duplicates stay within the window).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use e2e::{Agent, Bridge, device_publish, plain_uplink, wait_log};
use test_support::rocketmq::{self, Instance, cluster};
use test_support::unique;

/// Every message of first-level topic `first` on the cluster, read by the plain Java
/// consumer from the start of every queue of both brokers (for 30 s: the number of
/// duplicates is not known in advance).
fn consume_cluster(first: &str, at_least: usize) -> Vec<serde_json::Value> {
    let (_, got, stderr) = rocketmq::try_consume(
        Instance::Cluster,
        first,
        at_least * 2,
        Duration::from_secs(30),
    );
    assert!(
        got.len() >= at_least,
        "plain consumer read {} of at least {at_least}: {stderr}",
        got.len()
    );
    got
}

/// One stored message: store timestamp, broker, queue, queue offset, body.
type Stored = (i64, String, i64, i64, String);

#[test]
fn a_backlog_drained_through_a_broker_kill_loses_nothing_and_keeps_topic_order() {
    cluster(&["start"]);
    let env: HashMap<String, String> = cluster(&["env"])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let first = unique("e2ecl");
    let gateway = unique("gw");
    let mut bridge = Bridge::start_on(
        dir.path(),
        &first,
        None,
        "",
        &env["ROCKETMQ_NAMESRV"],
        &env["ROCKETMQ_CLUSTER"],
    );
    let agent = Agent::start(
        dir.path(),
        &gateway,
        &first,
        &plain_uplink(&bridge, &gateway),
        "",
    );
    wait_log(&agent.process, "uplink connected", Duration::from_secs(30));

    // The backlog: 4 devices x 5,000 QoS 1 messages on 4 topics, while the bridge is down.
    bridge.process.stop();
    const DEVICES: usize = 4;
    const PER_DEVICE: usize = 5_000;
    let threads: Vec<_> = (0..DEVICES)
        .map(|d| {
            let port = agent.port;
            std::thread::spawn(move || {
                let lines: Vec<String> = (0..PER_DEVICE).map(|i| format!("d{d}-{i:06}")).collect();
                device_publish(port, &format!("dev-{d}"), &format!("line/d{d}"), 1, &lines);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total = DEVICES * PER_DEVICE;
    assert_eq!(agent.journal_depth() as usize, total, "all journaled");

    // Drain; kill broker-a once a quarter is through, start it again a few seconds later.
    bridge.process.start();
    bridge.wait();
    let deadline = Instant::now() + Duration::from_secs(300);
    while agent.journal_depth() as usize > total * 3 / 4 {
        assert!(Instant::now() < deadline, "the drain did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster(&["stop", "broker-a", "--kill"]);
    let killed_at = agent.journal_depth();
    std::thread::sleep(Duration::from_secs(5));
    cluster(&["start", "broker-a"]);
    agent.wait_drained(Duration::from_secs(300));
    println!("broker-a killed with {killed_at} of {total} entries left; drained after its return");

    // Nothing lost; per topic, the last copies in store order follow the journal.
    let got = consume_cluster(&first, total);
    let mut per_topic: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for m in &got {
        let topic = m["properties"]["originMqttTopic"]
            .as_str()
            .unwrap()
            .to_owned();
        per_topic.entry(topic).or_default().push((
            m["storeTimestamp"].as_i64().unwrap(),
            m["brokerName"].as_str().unwrap_or_default().to_owned(),
            m["queueId"].as_i64().unwrap(),
            m["queueOffset"].as_i64().unwrap(),
            m["body_utf8"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(per_topic.len(), DEVICES, "one MQTT topic per device");
    let mut duplicates = 0;
    for (topic, mut stored) in per_topic {
        stored.sort();
        let mut last_at: HashMap<&str, usize> = HashMap::new();
        for (i, m) in stored.iter().enumerate() {
            if last_at.insert(m.4.as_str(), i).is_some() {
                duplicates += 1;
            }
        }
        let mut last_copies: Vec<(usize, &str)> =
            last_at.iter().map(|(body, i)| (*i, *body)).collect();
        last_copies.sort();
        let order: Vec<&str> = last_copies.iter().map(|(_, b)| *b).collect();
        assert_eq!(order.len(), PER_DEVICE, "{topic}: every message stored");
        let mut expected = order.clone();
        expected.sort();
        let first_wrong = order.iter().zip(&expected).position(|(a, b)| a != b);
        assert!(
            first_wrong.is_none(),
            "{topic}: out of journal order from position {first_wrong:?}: {:?}",
            first_wrong.map(|p| &order[p.saturating_sub(2)..(p + 3).min(order.len())])
        );
    }
    println!(
        "{} messages stored for {total} journaled: {duplicates} duplicates",
        got.len()
    );
    // The kill and the return each make at most one window (256) of sends uncertain;
    // room for two more reconnects of the agent.
    assert!(
        duplicates <= 256 * 4,
        "{duplicates} duplicates: more than the uplink window allows"
    );
    drop(agent);
}
