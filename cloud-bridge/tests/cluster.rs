#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The bridge on a real RocketMQ cluster (issue #16): two name servers and two brokers
//! (`tests/rocketmq/rocketmq.sh cluster`, started here when it is not running), two
//! bridges, and brokers and name servers taken down while clients publish. The tests
//! stop and start cluster members, so they run one at a time (`CLUSTER`), and leave the
//! cluster running with every member up.

mod harness;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use cloud_bridge::config::Config;
use cloud_bridge::rocketmq::{Client, ClientConfig, KvMerge, NameServer};
use cloud_bridge::server::Server;
use harness::clients::{Msg, Proto, rumqttc_publish};
use harness::subscriber::rumqttc_subscribe;
use harness::{config_on, password};
use test_support::rocketmq::{self, Instance};
use test_support::unique;

/// One test at a time: they stop and start cluster members.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(60);

fn rmq(args: &[&str]) -> String {
    rocketmq::cluster(args)
}

/// Starts whatever member of the cluster is down; returns its env (ROCKETMQ_NAMESRV, ...).
fn cluster_up() -> HashMap<String, String> {
    rmq(&["start"]);
    rmq(&["env"])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

fn namesrvs(env: &HashMap<String, String>) -> Vec<String> {
    env["ROCKETMQ_NAMESRV"]
        .split(';')
        .map(str::to_owned)
        .collect()
}

/// A bridge config on the cluster, for first-level topic `first`.
fn config(env: &HashMap<String, String>, first: &str) -> Config {
    let wildcard = format!("{first}/#");
    let text = config_on(
        &namesrvs(env),
        &env["ROCKETMQ_CLUSTER"],
        first,
        &[&wildcard],
        "",
    );
    Config::parse(&text, "cluster test").expect("config")
}

async fn bridge(config: &Config) -> Server {
    Server::start(config.clone()).await.expect("bridge")
}

/// The messages of first-level topic `first` a plain Java consumer of the cluster reads:
/// `count` of them, or what it found within `timeout` (at least `at_least`).
fn consume(
    first: &str,
    at_least: usize,
    count: usize,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    let (_, got, stderr) = rocketmq::try_consume(Instance::Cluster, first, count, timeout);
    assert!(
        got.len() >= at_least,
        "plain consumer read {} of at least {at_least}: {stderr}",
        got.len()
    );
    got
}

fn msg(topic: String, payload: String) -> Msg {
    Msg {
        topic,
        qos: 1,
        payload: payload.into_bytes(),
        user: Vec::new(),
    }
}

/// Test 1: 2 brokers, 2 bridges, 20 publishers over 40 topics at QoS 1. Every
/// acknowledged message is read back by a plain consumer and by exact and wildcard MQTT
/// subscribers, each publisher's messages to a topic in order; both brokers hold some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_two_bridges_keep_every_message_and_each_topics_order() {
    let _one = CLUSTER.lock().await;
    let env = cluster_up();
    let first = unique("cl");
    let config = config(&env, &first);
    cloud_bridge::admin::init(&config).await.expect("init");
    let (b1, b2) = (bridge(&config).await, bridge(&config).await);
    let addrs = [
        b1.local_addr("mqtt").unwrap(),
        b2.local_addr("mqtt").unwrap(),
    ];

    let wild = format!("{first}/#");
    let exact = format!("{first}/t7");
    let id = unique("w");
    let mut wsub = rumqttc_subscribe(
        addrs[0],
        Proto::V5,
        &id,
        &password(&id),
        true,
        &[(&wild, 1)],
    )
    .await;
    let id = unique("e");
    let mut esub = rumqttc_subscribe(
        addrs[1],
        Proto::V311,
        &id,
        &password(&id),
        true,
        &[(&exact, 1)],
    )
    .await;
    assert_eq!(
        (wsub.suback.clone(), esub.suback.clone()),
        (vec![1], vec![1])
    );

    const PUBLISHERS: usize = 20;
    const PER_TOPIC: usize = 50;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let addr = addrs[p % 2];
        let msgs: Vec<Msg> = (0..PER_TOPIC)
            .flat_map(|n| {
                [2 * p, 2 * p + 1].map(|t| msg(format!("{first}/t{t}"), format!("p{p}-{n}")))
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let id = unique("p");
            rumqttc_publish(addr, Proto::V5, None, &id, &password(&id), &msgs).await;
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    let total = PUBLISHERS * 2 * PER_TOPIC;

    // Per topic: the publisher's sequence numbers in the order they were read.
    let check = |pairs: &mut dyn Iterator<Item = (String, String)>, who: &str| {
        let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (topic, payload) in pairs {
            let n = payload.rsplit_once('-').unwrap().1.parse().unwrap();
            seen.entry(topic).or_default().push(n);
        }
        for (topic, ns) in &seen {
            assert_eq!(
                ns,
                &(0..PER_TOPIC).collect::<Vec<_>>(),
                "{who}: {topic} in publish order, once each"
            );
        }
        seen.len()
    };
    let got = wsub.collect(total, WAIT).await;
    assert_eq!(got.len(), total, "wildcard subscriber got every message");
    let topics = check(
        &mut got.iter().map(|m| {
            (
                m.topic.clone(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            )
        }),
        "wildcard subscriber",
    );
    assert_eq!(topics, PUBLISHERS * 2);
    let got = esub.collect(PER_TOPIC, WAIT).await;
    check(
        &mut got.iter().map(|m| {
            (
                m.topic.clone(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            )
        }),
        "exact subscriber",
    );

    let stored = consume(&first, total, total, WAIT);
    let mut by_queue: Vec<(String, i64, i64, String, String)> = stored
        .iter()
        .map(|m| {
            let props = &m["properties"];
            (
                m["brokerName"].as_str().unwrap_or_default().to_owned(),
                m["queueId"].as_i64().unwrap(),
                m["queueOffset"].as_i64().unwrap(),
                props["originMqttTopic"].as_str().unwrap().to_owned(),
                m["body_utf8"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_queue.sort();
    assert_eq!(
        by_queue.len(),
        total,
        "the plain consumer read each message once"
    );
    check(
        &mut by_queue
            .iter()
            .map(|(_, _, _, t, b)| (t.clone(), b.clone())),
        "plain consumer",
    );
    // Both brokers hold messages (the topics hash over all four queues).
    let client = Client::new(ClientConfig::default());
    for (name, addr) in env["ROCKETMQ_BROKERS"]
        .split(',')
        .filter_map(|b| b.split_once('='))
    {
        let mut held = 0;
        for q in 0..2 {
            held += client.broker(addr).max_offset(&first, q).await.unwrap();
        }
        assert!(held > 0, "{name} holds none of the messages");
    }
    b1.stop(Duration::from_secs(2)).await;
    b2.stop(Duration::from_secs(2)).await;
}

/// The publisher of test 2: paho-mqtt (MQTT 5) publishes numbered QoS 1 messages at a
/// steady rate over 10 topics, reconnecting when the bridge closes the connection, and
/// prints one line per message: its payload, whether PUBACK said stored, and when.
const STEADY_PUBLISHER: &str = r#"
import sys, json, time
import paho.mqtt.client as mqtt
port, cid, pw, first, count, rate = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
# No lock of ours around publish(): paho calls on_publish holding its own message lock.
acks = {}; sent = []
def on_publish(c, u, mid, rc, p=None):
    acks[mid] = (rc.value < 0x80, time.time())
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
c.username_pw_set("demo", pw)
c.on_publish = on_publish
c.reconnect_delay_set(0.1, 1)
c.connect("127.0.0.1", int(port), keepalive=30)
c.loop_start()
start = time.time()
for i in range(count):
    due = start + i / rate
    time.sleep(max(0.0, due - time.time()))
    payload = "m%06d" % i
    info = c.publish("%s/k%d" % (first, i % 10), payload.encode(), qos=1)
    sent.append((info.mid, payload))
deadline = time.time() + 60
while len(acks) < len(sent) and time.time() < deadline:
    time.sleep(0.1)
c.disconnect(); c.loop_stop()
for mid, payload in sent:
    ok, t = acks.get(mid, (False, None))
    print(json.dumps({"payload": payload, "acked": ok, "t": t}))
"#;

/// Starts [`STEADY_PUBLISHER`]: `count` QoS 1 publishes at `rate` per second to ten
/// topics under `first`, through the bridge at `addr`.
fn steady_publisher(
    addr: std::net::SocketAddr,
    first: &str,
    count: usize,
    rate: f64,
) -> std::process::Child {
    let cid = unique("steady");
    Command::new("python3")
        .args(["-c", STEADY_PUBLISHER])
        .arg(addr.port().to_string())
        .args([
            &cid,
            &password(&cid),
            first,
            &count.to_string(),
            &rate.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with paho-mqtt")
}

/// What the steady publisher reports once done: per publish, its payload, whether it was
/// acknowledged, and when.
async fn publisher_results(publisher: std::process::Child) -> Vec<serde_json::Value> {
    let out = tokio::task::spawn_blocking(move || publisher.wait_with_output())
        .await
        .unwrap()
        .expect("publisher");
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !results.is_empty(),
        "publisher: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

/// Test 2: broker-a is killed (-9) while a client publishes. Publishes go on being
/// acknowledged after a bounded pause (printed); once broker-a is back, every
/// acknowledged message is read by a plain consumer and a wildcard subscriber gets them
/// all. (A persistent session that was away during the failure does not yet: it stalls
/// after resuming; issue #16 is open for it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_stream_loses_no_acknowledged_message() {
    let _one = CLUSTER.lock().await;
    let env = cluster_up();
    let first = unique("ck");
    let config = config(&env, &first);
    cloud_bridge::admin::init(&config).await.expect("init");
    let b1 = bridge(&config).await;
    let addr = b1.local_addr("mqtt").unwrap();
    let wild = format!("{first}/#");
    let id = unique("w");
    let mut wsub =
        rumqttc_subscribe(addr, Proto::V5, &id, &password(&id), true, &[(&wild, 1)]).await;
    const COUNT: usize = 4000;
    const RATE: f64 = 200.0;
    let publisher = steady_publisher(addr, &first, COUNT, RATE);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let killed = std::time::SystemTime::now();
    rmq(&["stop", "broker-a", "--kill"]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let t = Instant::now();
    rmq(&["start", "broker-a"]);
    println!("broker-a back after {:?} of start-up", t.elapsed());
    let results = publisher_results(publisher).await;
    let acked: Vec<&str> = results
        .iter()
        .filter(|r| r["acked"] == true)
        .map(|r| r["payload"].as_str().unwrap())
        .collect();
    // The longest gap between two acknowledgements after the kill.
    let killed_at = killed
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut times: Vec<f64> = results
        .iter()
        .filter(|r| r["acked"] == true)
        .filter_map(|r| r["t"].as_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    let pause = times
        .windows(2)
        .filter(|w| w[1] >= killed_at)
        .map(|w| w[1] - w[0])
        .fold(0.0, f64::max);
    println!(
        "kill -9 of broker-a: {} of {} publishes acknowledged, {} refused; longest pause between acknowledgements after the kill {:.2} s",
        acked.len(),
        results.len(),
        results.len() - acked.len(),
        pause
    );
    assert!(acked.len() >= COUNT * 8 / 10, "most publishes acknowledged");
    assert!(
        times.iter().any(|t| *t > killed_at + 1.0),
        "publishes acknowledged after the kill"
    );

    let stored: HashSet<String> =
        consume(&first, acked.len(), results.len(), Duration::from_secs(30))
            .iter()
            .map(|m| m["body_utf8"].as_str().unwrap().to_owned())
            .collect();
    let lost: Vec<&&str> = acked.iter().filter(|p| !stored.contains(**p)).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");

    let got: HashSet<String> = wsub
        .collect(acked.len(), WAIT)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let missed: Vec<&&str> = acked.iter().filter(|p| !got.contains(**p)).collect();
    assert!(missed.is_empty(), "wildcard subscriber missed {missed:?}");

    b1.stop(Duration::from_secs(2)).await;
}

/// Test 3: with namesrv-1 down, connects, publishes, subscribes (registering a wildcard),
/// `init` and session resume keep working; when it is back, it gets the kvconfig written
/// meanwhile (read repair).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_server_down_stops_nothing() {
    let _one = CLUSTER.lock().await;
    let env = cluster_up();
    let first = unique("cn");
    let config = config(&env, &first);
    cloud_bridge::admin::init(&config).await.expect("init");
    let pid = unique("ps");
    let filter = format!("{first}/a/+");
    {
        let b = bridge(&config).await;
        let addr = b.local_addr("mqtt").unwrap();
        let s = rumqttc_subscribe(
            addr,
            Proto::V311,
            &pid,
            &password(&pid),
            false,
            &[(&filter, 1)],
        )
        .await;
        assert_eq!(s.suback, vec![1]);
        drop(s);
        b.stop(Duration::from_secs(2)).await;
    }

    rmq(&["stop", "namesrv-1"]);
    let result = async {
        cloud_bridge::admin::init(&config)
            .await
            .expect("init with namesrv-1 down");
        let b = bridge(&config).await;
        let addr = b.local_addr("mqtt").unwrap();
        // A wildcard registered now reaches namesrv-2 only.
        let late = format!("{first}/late/+");
        let id = unique("s");
        let mut sub =
            rumqttc_subscribe(addr, Proto::V5, &id, &password(&id), true, &[(&late, 1)]).await;
        assert_eq!(sub.suback, vec![1], "subscribe with namesrv-1 down");
        let id = unique("p");
        let msgs = vec![
            msg(format!("{first}/late/x"), "l1".into()),
            msg(format!("{first}/a/y"), "a1".into()),
        ];
        rumqttc_publish(addr, Proto::V5, None, &id, &password(&id), &msgs).await;
        let got = sub.collect(1, WAIT).await;
        assert_eq!(got.len(), 1, "delivered with namesrv-1 down");
        let mut back =
            rumqttc_subscribe(addr, Proto::V311, &pid, &password(&pid), false, &[]).await;
        let got = back.collect(1, WAIT).await;
        assert_eq!(got.len(), 1, "session resumed with namesrv-1 down: {got:?}");
        assert_eq!(got[0].payload, b"a1");
        drop((sub, back));
        b.stop(Duration::from_secs(2)).await;
        late
    }
    .await;

    cluster_up();
    // namesrv-1 restarted without what was written while it was down, until a merged read
    // repairs it.
    let ns = namesrvs(&env);
    let all = NameServer::new(Client::new(ClientConfig::default()), ns.clone()).unwrap();
    let merged = all
        .get_kv_config("LMQ", &first, KvMerge::Lists)
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(merged.contains(&result), "{merged}");
    let one = NameServer::new(Client::new(ClientConfig::default()), vec![ns[0].clone()]).unwrap();
    let repaired = one
        .get_kv_config("LMQ", &first, KvMerge::Lists)
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        repaired.contains(&result),
        "namesrv-1 repaired after a merged read: {repaired}"
    );
}

/// Test 4: a persistent session (3.1.1, clean session false) that is away while broker-a
/// is killed and comes back gets, once it resumes, every message acknowledged meanwhile:
/// those stored on broker-b during the failure and those on broker-a before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_away_during_a_broker_kill_gets_everything_on_resume() {
    let _one = CLUSTER.lock().await;
    let env = cluster_up();
    let first = unique("cp");
    let config = config(&env, &first);
    cloud_bridge::admin::init(&config).await.expect("init");
    let b1 = bridge(&config).await;
    let addr = b1.local_addr("mqtt").unwrap();
    let wild = format!("{first}/#");
    let pid = unique("away");
    let sub = rumqttc_subscribe(
        addr,
        Proto::V311,
        &pid,
        &password(&pid),
        false,
        &[(&wild, 1)],
    )
    .await;
    assert_eq!(sub.suback, vec![1]);
    drop(sub);
    tokio::time::sleep(Duration::from_secs(1)).await;

    const COUNT: usize = 1500;
    const RATE: f64 = 150.0;
    let publisher = steady_publisher(addr, &first, COUNT, RATE);
    tokio::time::sleep(Duration::from_secs(3)).await;
    rmq(&["stop", "broker-a", "--kill"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    rmq(&["start", "broker-a"]);
    let acked: Vec<String> = publisher_results(publisher)
        .await
        .iter()
        .filter(|r| r["acked"] == true)
        .map(|r| r["payload"].as_str().unwrap().to_owned())
        .collect();
    assert!(acked.len() >= COUNT / 2, "most publishes acknowledged");

    let mut back = rumqttc_subscribe(addr, Proto::V311, &pid, &password(&pid), false, &[]).await;
    // Until every acknowledged message came (duplicates within the in-flight window are
    // allowed at QoS 1, so a count alone would stop early), or nothing more comes.
    let mut got = HashSet::new();
    let mut received = 0;
    let deadline = Instant::now() + WAIT;
    while acked.iter().any(|p| !got.contains(p)) && Instant::now() < deadline {
        let Some(m) = back.next(Duration::from_secs(10)).await else {
            break;
        };
        received += 1;
        got.insert(String::from_utf8_lossy(&m.payload).into_owned());
    }
    let missed: Vec<&String> = acked.iter().filter(|p| !got.contains(*p)).collect();
    println!(
        "persistent session back after a broker kill: {} of {} acknowledged received, {} duplicates",
        acked.len() - missed.len(),
        acked.len(),
        received - got.len()
    );
    assert!(
        missed.is_empty(),
        "{} acknowledged messages missed, e.g. {:?}",
        missed.len(),
        &missed[..missed.len().min(10)]
    );
    drop(back);
    b1.stop(Duration::from_secs(2)).await;
}

/// The brokers the name servers list as readable for `first`.
async fn readable_brokers(env: &HashMap<String, String>, first: &str) -> Vec<String> {
    let ns = NameServer::new(Client::new(ClientConfig::default()), namesrvs(env)).unwrap();
    match ns.topic_route(first).await {
        Ok(route) => route
            .readable_masters()
            .into_iter()
            .map(|(name, _)| name.to_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits (bounded) until `first`'s route lists `want` readable brokers.
async fn wait_route(env: &HashMap<String, String>, first: &str, want: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = readable_brokers(env, first).await;
        if now.len() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "route of {first} still lists {now:?}, not {want} brokers"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Test 5: a broker that joins the cluster while clients are connected (broker-b, stopped
/// gracefully so that it left the route, then started) is written to by new publishes and
/// read by live subscriptions made before it joined, without a reconnect: a wildcard and
/// an exact subscriber and a live persistent session get every acknowledged message, in
/// publish order per topic, and broker-b holds some of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_joins_is_written_and_read_without_a_reconnect() {
    let _one = CLUSTER.lock().await;
    let env = cluster_up();
    let first = unique("cj");
    let mut config = config(&env, &first);
    config.rocketmq.route_refresh_secs = 2;
    cloud_bridge::admin::init(&config).await.expect("init");
    // broker-b leaves the route (a graceful stop unregisters it from the name servers).
    rmq(&["stop", "broker-b"]);
    wait_route(&env, &first, 1).await;

    let b1 = bridge(&config).await;
    let addr = b1.local_addr("mqtt").unwrap();
    let wild = format!("{first}/#");
    let exact = format!("{first}/k3");
    let id = unique("w");
    let mut wsub =
        rumqttc_subscribe(addr, Proto::V5, &id, &password(&id), true, &[(&wild, 1)]).await;
    let id = unique("e");
    let mut esub =
        rumqttc_subscribe(addr, Proto::V311, &id, &password(&id), true, &[(&exact, 1)]).await;
    let id = unique("s");
    let mut psub =
        rumqttc_subscribe(addr, Proto::V311, &id, &password(&id), false, &[(&wild, 1)]).await;
    assert_eq!(
        (
            wsub.suback.clone(),
            esub.suback.clone(),
            psub.suback.clone()
        ),
        (vec![1], vec![1], vec![1])
    );

    // 60 s of publishes: broker-b takes 20-30 s to start and join the route (longer on
    // a loaded machine), and the publishes after that must reach it.
    const COUNT: usize = 6000;
    const RATE: f64 = 100.0;
    let publisher = steady_publisher(addr, &first, COUNT, RATE);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    rmq(&["start", "broker-b"]);
    wait_route(&env, &first, 2).await;
    println!("broker-b in the route {:?} after its start", t.elapsed());
    let acked: Vec<String> = publisher_results(publisher)
        .await
        .iter()
        .filter(|r| r["acked"] == true)
        .map(|r| r["payload"].as_str().unwrap().to_owned())
        .collect();
    assert!(acked.len() >= COUNT * 9 / 10, "most publishes acknowledged");

    // broker-b took some of them: the topics hash over its queues too now.
    let client = Client::new(ClientConfig::default());
    let (_, b_addr) = env["ROCKETMQ_BROKERS"]
        .split(',')
        .filter_map(|b| b.split_once('='))
        .find(|(name, _)| *name == "broker-b")
        .unwrap();
    let mut on_b = 0;
    for q in 0..2 {
        on_b += client.broker(b_addr).max_offset(&first, q).await.unwrap();
    }
    println!(
        "broker-b stored {on_b} of {} acknowledged publishes",
        acked.len()
    );
    assert!(on_b > 0, "new publishes went to broker-b");

    // Each subscriber: every acknowledged message of its filter, in publish order per
    // topic (the payload's number grows with each publish of a topic).
    let k3: Vec<String> = acked
        .iter()
        .filter(|p| p[1..].parse::<usize>().unwrap() % 10 == 3)
        .cloned()
        .collect();
    for (who, sub, want) in [
        ("wildcard subscriber", &mut wsub, &acked),
        ("exact subscriber", &mut esub, &k3),
        ("live persistent session", &mut psub, &acked),
    ] {
        let mut got = HashSet::new();
        let mut last: BTreeMap<String, usize> = BTreeMap::new();
        let deadline = Instant::now() + WAIT;
        while want.iter().any(|p| !got.contains(p)) && Instant::now() < deadline {
            let Some(m) = sub.next(Duration::from_secs(10)).await else {
                break;
            };
            let payload = String::from_utf8_lossy(&m.payload).into_owned();
            let n: usize = payload[1..].parse().unwrap();
            if let Some(before) = last.insert(m.topic.clone(), n) {
                assert!(
                    n > before || got.contains(&payload),
                    "{who}: {} went back from m{before:06} to {payload}",
                    m.topic
                );
            }
            got.insert(payload);
        }
        let missed: Vec<&String> = want.iter().filter(|p| !got.contains(*p)).collect();
        assert!(
            missed.is_empty(),
            "{who} missed {} of {} acknowledged messages, e.g. {:?}",
            missed.len(),
            want.len(),
            &missed[..missed.len().min(10)]
        );
    }
    b1.stop(Duration::from_secs(2)).await;
}
