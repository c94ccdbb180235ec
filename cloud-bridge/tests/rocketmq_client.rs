//! The RocketMQ client against the real Java name server and broker.
//!
//! Start them with `tests/rocketmq/rocketmq.sh start`; the addresses come from the
//! environment or `tests/rocketmq/run/env` (see `test_support::rocketmq`). Every test uses
//! its own topic names, so the tests share one broker and may run in parallel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloud_bridge::Error;
use cloud_bridge::rocketmq::message::property;
use cloud_bridge::rocketmq::namesrv::parse_addrs;
use cloud_bridge::rocketmq::{
    Client, ClientConfig, KvMerge, NameServer, Producer, ProducerConfig, PullRequest, PullResult,
    TopicConfig, TopicRoute, Written,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

struct Env {
    client: Client,
    namesrv: Arc<NameServer>,
}

fn env() -> Fallible<Env> {
    let addrs = parse_addrs(&test_support::rocketmq::namesrv_addr()?);
    let client = Client::new(ClientConfig::default());
    let namesrv = Arc::new(NameServer::new(client.clone(), addrs)?);
    Ok(Env { client, namesrv })
}

/// Creates `topic` on every master of the test cluster (found through the cluster info)
/// and waits until the name server routes it.
async fn create_topic(env: &Env, topic: &str) -> Fallible<TopicRoute> {
    let cluster = test_support::rocketmq::cluster_name();
    let info = env.namesrv.cluster_info().await?;
    let masters = info.master_addrs(&cluster);
    if masters.is_empty() {
        return Err(format!("no broker in cluster {cluster}: {info:?}").into());
    }
    for addr in masters {
        env.client
            .broker(addr)
            .create_topic(&TopicConfig::new(topic))
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match env.namesrv.topic_route(topic).await {
            Ok(route) => return Ok(route),
            Err(Error::RouteNotFound(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The master address of the route's first broker.
fn master(route: &TopicRoute) -> Fallible<String> {
    let (_, addr) = route
        .readable_masters()
        .first()
        .copied()
        .ok_or("route has no readable master")?;
    Ok(addr.to_owned())
}

/// Waits until the max offset of `lmq` reaches `expected` (LMQ dispatch is asynchronous).
async fn wait_max_offset(env: &Env, addr: &str, lmq: &str, expected: i64) -> Fallible<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let offset = env.client.broker(addr).max_offset(lmq, 0).await?;
        if offset >= expected || Instant::now() > deadline {
            return Ok(offset);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn creates_a_topic_and_finds_its_route() -> TestResult {
    let env = env()?;
    let topic = test_support::unique("cbroute");
    let route = create_topic(&env, &topic).await?;
    let queues = route.queues.first().ok_or("no queue data")?;
    assert_eq!((queues.read_queue_nums, queues.write_queue_nums), (8, 8));
    assert!(queues.is_readable() && queues.is_writable());
    let broker = route.broker(&queues.broker_name).ok_or("no broker data")?;
    assert!(broker.master_addr().is_some(), "{route:?}");
    assert!(matches!(
        env.namesrv
            .topic_route(&test_support::unique("cbnone"))
            .await,
        Err(Error::RouteNotFound(_))
    ));
    env.client.close().await;
    Ok(())
}

#[tokio::test]
async fn kvconfig_put_get_list_delete() -> TestResult {
    let env = env()?;
    let namespace = test_support::unique("cbns");
    let ns = &env.namesrv;
    assert_eq!(
        ns.get_kv_config(&namespace, "t1", KvMerge::Lists).await?,
        None
    );
    assert!(ns.kv_list(&namespace, KvMerge::Lists).await?.is_empty());
    assert_eq!(
        ns.put_kv_config(&namespace, "t1", "t1/+,t1/a/#").await?,
        Written::Everywhere
    );
    let _ = ns
        .put_kv_config(&namespace, "ALL_FIRST_TOPICS", "t1")
        .await?;
    assert_eq!(
        ns.get_kv_config(&namespace, "t1", KvMerge::Lists)
            .await?
            .as_deref(),
        Some("t1/+,t1/a/#")
    );
    let all = ns.kv_list(&namespace, KvMerge::Lists).await?;
    let expected: HashMap<String, String> = [
        ("t1".to_owned(), "t1/+,t1/a/#".to_owned()),
        ("ALL_FIRST_TOPICS".to_owned(), "t1".to_owned()),
    ]
    .into();
    assert_eq!(all, expected);
    let _ = ns.delete_kv_config(&namespace, "t1").await?;
    let _ = ns.delete_kv_config(&namespace, "never-there").await?;
    assert_eq!(
        ns.get_kv_config(&namespace, "t1", KvMerge::Lists).await?,
        None
    );
    assert_eq!(ns.kv_list(&namespace, KvMerge::Lists).await?.len(), 1);
    let _ = ns.delete_kv_config(&namespace, "ALL_FIRST_TOPICS").await?;
    env.client.close().await;
    Ok(())
}

#[tokio::test]
async fn send_dispatches_to_the_listed_lmqs_and_pull_reads_it_back() -> TestResult {
    let env = env()?;
    let topic = test_support::unique("cblmq");
    let route = create_topic(&env, &topic).await?;
    let addr = master(&route)?;
    let lmq_a = format!("%LMQ%{topic}%a%");
    let lmq_plus = format!("%LMQ%{topic}%+%");
    let lmq_b = format!("%LMQ%{topic}%b%");
    let broker = env.client.broker(&addr);
    let before_a = broker.max_offset(&lmq_a, 0).await?;
    let before_plus = broker.max_offset(&lmq_plus, 0).await?;
    let before_b = broker.max_offset(&lmq_b, 0).await?;

    let producer = Producer::new(env.namesrv.clone(), ProducerConfig::default());
    let dispatch = format!("{lmq_a},{lmq_plus}");
    let mqtt_topic = format!("{topic}/a");
    let properties = [
        (property::INNER_MULTI_DISPATCH, dispatch.as_str()),
        (property::TAGS, "MQTT_COMMON"),
        ("originMqttTopic", mqtt_topic.as_str()),
        ("qosLevel", "1"),
    ];
    let body = Bytes::from_static(b"payload \x00\x01\x02 binary");
    let sent = producer
        .send(&topic, &properties, body.clone(), &mqtt_topic)
        .await?;
    assert_eq!(sent.msg_id.len(), 32);
    assert!(!sent.offset_msg_id.is_empty());

    assert_eq!(
        wait_max_offset(&env, &addr, &lmq_a, before_a + 1).await?,
        before_a + 1
    );
    assert_eq!(
        wait_max_offset(&env, &addr, &lmq_plus, before_plus + 1).await?,
        before_plus + 1
    );
    assert_eq!(broker.max_offset(&lmq_b, 0).await?, before_b);
    // By store time: the message is found from a moment before it, and nothing after it.
    let before_send = std::time::SystemTime::now() - Duration::from_secs(60);
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    };
    assert_eq!(
        broker.offset_at_time(&lmq_a, 0, ms(before_send)).await?,
        before_a
    );
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    assert_eq!(
        broker.offset_at_time(&lmq_a, 0, ms(later)).await?,
        before_a + 1
    );

    let pulled = broker
        .pull(&PullRequest::lmq(&lmq_a, before_a, 32).long_poll(Duration::from_secs(2)))
        .await?;
    let PullResult::Found {
        messages,
        next_offset,
        ..
    } = pulled
    else {
        return Err(format!("expected a message, got {pulled:?}").into());
    };
    assert_eq!(next_offset, before_a + 1);
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.msg_id(), Some(sent.msg_id.as_str()));
    assert_eq!(message.body, body);
    assert_eq!(message.topic, topic);
    assert_eq!(message.queue_id, sent.queue_id);
    assert_eq!(message.queue_offset, sent.queue_offset);
    assert_eq!(
        message.property("originMqttTopic"),
        Some(mqtt_topic.as_str())
    );
    assert_eq!(message.property(property::TAGS), Some("MQTT_COMMON"));
    assert_eq!(message.lmq_offset(&lmq_a), Some(before_a));
    assert_eq!(message.lmq_offset(&lmq_plus), Some(before_plus));
    assert_eq!(message.offset_msg_id(), sent.offset_msg_id);
    env.client.close().await;
    Ok(())
}

#[tokio::test]
async fn name_server_requests_move_on_from_an_unreachable_server() -> TestResult {
    let refused = format!("127.0.0.1:{}", test_support::free_port());
    let mut addrs = vec![refused];
    addrs.extend(parse_addrs(&test_support::rocketmq::namesrv_addr()?));
    let client = Client::new(ClientConfig::default());
    let namesrv = NameServer::new(client.clone(), addrs)?;
    let info = namesrv.cluster_info().await?;
    assert!(
        !info
            .master_addrs(&test_support::rocketmq::cluster_name())
            .is_empty()
    );
    // Writes go to every server that can be reached (issue #16: one name server down must
    // not stop the bridges); the result says one was missed. Reads merge the others.
    let namespace = test_support::unique("cbns");
    assert_eq!(
        namesrv.put_kv_config(&namespace, "k", "v").await?,
        Written::Partly
    );
    assert_eq!(
        namesrv
            .get_kv_config(&namespace, "k", KvMerge::Lists)
            .await?
            .as_deref(),
        Some("v")
    );
    // Only unreachable servers: the write fails.
    let none = NameServer::new(client.clone(), vec![namesrv.addrs()[0].clone()])?;
    assert!(matches!(
        none.put_kv_config(&namespace, "k", "v").await,
        Err(Error::Connect { .. })
    ));
    let _ = env()?.namesrv.delete_kv_config(&namespace, "k").await?;
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn a_long_poll_returns_when_a_message_arrives() -> TestResult {
    let env = env()?;
    let topic = test_support::unique("cbpoll");
    let route = create_topic(&env, &topic).await?;
    let addr = master(&route)?;
    let lmq = format!("%LMQ%{topic}%poll%");
    let poll = {
        let client = env.client.clone();
        let (addr, lmq) = (addr.clone(), lmq.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let request = PullRequest::lmq(&lmq, 0, 32).long_poll(Duration::from_secs(10));
            let result = client.broker(&addr).pull(&request).await;
            (started.elapsed(), result)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let producer = Producer::new(env.namesrv.clone(), ProducerConfig::default());
    let properties = [(property::INNER_MULTI_DISPATCH, lmq.as_str())];
    producer
        .send(&topic, &properties, Bytes::from_static(b"wake up"), &lmq)
        .await?;
    let (waited, result) = poll.await?;
    let result = result?;
    assert!(
        matches!(&result, PullResult::Found { messages, .. } if messages.len() == 1),
        "{result:?}"
    );
    assert!(waited < Duration::from_secs(5), "woke up after {waited:?}");
    env.client.close().await;
    Ok(())
}

#[tokio::test]
async fn pulling_an_lmq_that_never_had_a_message_is_empty() -> TestResult {
    let env = env()?;
    let topic = test_support::unique("cbempty");
    let route = create_topic(&env, &topic).await?;
    let addr = master(&route)?;
    let lmq = format!("%LMQ%{topic}%never%");
    let broker = env.client.broker(&addr);
    let started = Instant::now();
    let pulled = broker
        .pull(&PullRequest::lmq(&lmq, 0, 32).long_poll(Duration::from_millis(300)))
        .await?;
    assert!(
        matches!(
            pulled,
            PullResult::TopicNotExist | PullResult::NoNewMsg { .. }
        ),
        "{pulled:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(broker.max_offset(&lmq, 0).await?, 0);
    assert_eq!(broker.min_offset(&lmq, 0).await?, 0);
    // A resumed reader without a committed offset searches by time: an empty LMQ is 0.
    assert_eq!(broker.offset_at_time(&lmq, 0, 1).await?, 0);
    env.client.close().await;
    Ok(())
}

#[tokio::test]
async fn consumer_offsets_of_a_persistent_session() -> TestResult {
    let env = env()?;
    let topic = test_support::unique("cboffset");
    let route = create_topic(&env, &topic).await?;
    let addr = master(&route)?;
    let group = format!("%LMQ%{}", test_support::unique("client"));
    let lmq = format!("%LMQ%{topic}%x%");
    let broker = env.client.broker(&addr);
    assert_eq!(broker.query_consumer_offset(&group, &lmq, 0).await?, None);
    broker.update_consumer_offset(&group, &lmq, 0, 5).await?;
    assert_eq!(
        broker.query_consumer_offset(&group, &lmq, 0).await?,
        Some(5)
    );
    broker.update_consumer_offset(&group, &lmq, 0, 7).await?;
    assert_eq!(
        broker.query_consumer_offset(&group, &lmq, 0).await?,
        Some(7)
    );
    env.client.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipelined_sends_over_one_connection() -> TestResult {
    const SENDS: usize = 1000;
    const KEYS: usize = 10;
    let env = env()?;
    let topic = test_support::unique("cbpipe");
    create_topic(&env, &topic).await?;
    let producer = Arc::new(Producer::new(
        env.namesrv.clone(),
        ProducerConfig {
            send_timeout: Duration::from_secs(20),
            ..ProducerConfig::default()
        },
    ));
    let lmq = format!("%LMQ%{topic}%bench%");
    // Warm up: route lookup and connection.
    producer
        .send(&topic, &[], Bytes::from_static(b"warm-up"), "warm-up")
        .await?;

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SENDS {
        let producer = producer.clone();
        let topic = topic.clone();
        let lmq = lmq.clone();
        tasks.spawn(async move {
            let key = format!("{topic}/k{}", i % KEYS);
            let properties = [(property::INNER_MULTI_DISPATCH, lmq.as_str())];
            let body = Bytes::from(vec![b'x'; 100]);
            let result = producer.send(&topic, &properties, body, &key).await;
            (key, result)
        });
    }
    let mut queue_of_key: HashMap<String, i32> = HashMap::new();
    let mut ids = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (key, result) = joined?;
        let sent = result?;
        assert!(ids.insert(sent.msg_id));
        let queue = *queue_of_key.entry(key).or_insert(sent.queue_id);
        assert_eq!(queue, sent.queue_id, "one order key, one queue");
    }
    let elapsed = started.elapsed();
    println!(
        "{SENDS} pipelined sends over one connection: {elapsed:?} ({:.0} msg/s)",
        SENDS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(ids.len(), SENDS);
    let addr = master(&env.namesrv.topic_route(&topic).await?)?;
    assert_eq!(
        wait_max_offset(&env, &addr, &lmq, SENDS as i64).await?,
        SENDS as i64
    );
    env.client.close().await;
    Ok(())
}
