//! Limits and bad input: journal quota under both policies (MQTT 5 PUBACK 0x97, 3.1.1
//! disconnect, counters), malformed and oversized packets, a connection flood past
//! `max_connections`: each ends in a clean refusal, the agent keeps serving, and nothing
//! stored is lost.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use edge_agent::journal::{Counter, WhenFull};
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use support::{config, start, stop};
use test_support::{WAIT, raw, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Publishes `n` QoS 1 messages of 100 bytes to `topic`; returns the PUBACK reasons.
async fn publish_n(c: &mut v5::Client, topic: &str, n: usize) -> Vec<PubAckReason> {
    publish_n_of(c, topic, n, 100).await
}

/// Publishes `n` QoS 1 messages of `size` bytes to `topic`; returns the PUBACK reasons.
async fn publish_n_of(c: &mut v5::Client, topic: &str, n: usize, size: usize) -> Vec<PubAckReason> {
    for i in 0..n {
        c.client
            .publish(
                topic,
                v5::QoS::AtLeastOnce,
                false,
                vec![b'0' + (i % 10) as u8; size],
            )
            .await
            .unwrap();
    }
    let mut reasons = Vec::new();
    while reasons.len() < n {
        match c.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await {
            v5::Packet::PubAck(a) => reasons.push(a.reason),
            _ => unreachable!(),
        }
    }
    reasons
}

#[tokio::test]
async fn reject_new_answers_quota_exceeded_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.journal.max_bytes = 1000; // ~9 messages of 100 + 4 topic bytes
    c.journal.when_full = WhenFull::RejectNew;
    c.limits.publish_pipeline = 1;
    let (agent, addr) = start(c, dir.path()).await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "p")).await;
    let reasons = publish_n(&mut p, "q/a", 15).await;
    let ok = reasons
        .iter()
        .filter(|r| **r == PubAckReason::Success)
        .count();
    let refused = reasons
        .iter()
        .filter(|r| **r == PubAckReason::QuotaExceeded)
        .count();
    assert_eq!((ok, refused), (9, 6), "{reasons:?}");
    assert!(reasons[..9].iter().all(|r| *r == PubAckReason::Success));
    let stats = agent.journal().stats().await.unwrap();
    assert_eq!(stats.entries, 9);
    assert_eq!(stats.counters.get(Counter::RejectedQuota), 6);

    // 3.1.1 has no reason codes: the connection is closed without PUBACK.
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(&raw::connect_v311("old", 30)).await.unwrap();
    let mut connack = [0u8; 4];
    sock.read_exact(&mut connack).await.unwrap();
    sock.write_all(&raw::publish_v311("q/a", 1, 1, &[b'x'; 100]))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, sock.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without PUBACK, got {:?}", &buf[..n]);
    assert_eq!(
        agent.journal().stats().await.unwrap().entries,
        9,
        "nothing lost"
    );
    p.disconnect().await;
    stop(agent).await;
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_and_counts_the_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.journal.max_bytes = 1000;
    c.journal.when_full = WhenFull::DropOldest;
    let (agent, addr) = start(c, dir.path()).await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "p")).await;
    let reasons = publish_n(&mut p, "q/a", 25).await;
    assert!(
        reasons.iter().all(|r| *r == PubAckReason::Success),
        "{reasons:?}"
    );
    let stats = agent.journal().stats().await.unwrap();
    assert_eq!(stats.entries, 9);
    assert_eq!(stats.counters.get(Counter::QuotaDropOldest), 16);
    assert_eq!(stats.counters.get(Counter::Appended), 25);
    let entries = agent.journal().peek(100).await.unwrap();
    let last: Vec<u8> = entries.iter().map(|e| e.payload[0]).collect();
    let expected: Vec<u8> = (16..25).map(|i| b'0' + (i % 10) as u8).collect();
    assert_eq!(last, expected, "the newest 9 remain, in order");
    p.disconnect().await;
    stop(agent).await;
}

#[tokio::test]
async fn malformed_and_oversized_packets_end_the_connection_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.limits.max_packet_size = 1024;
    c.uplink.topics = vec!["#".into()];
    let (agent, addr) = start(c, dir.path()).await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "keeper")).await;
    publish_n(&mut p, "b/a", 3).await;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage first packet", vec![0xFF; 32]),
        ("bad protocol name", {
            let mut v = raw::connect_v311("x", 30);
            v[4] = b'X';
            v
        }),
        (
            "remaining length overflow",
            vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        ),
        ("oversized CONNECT", {
            let mut v = vec![0x10];
            v.extend(raw::remaining_length(1_000_000));
            v.extend(vec![0u8; 4096]);
            v
        }),
        ("oversized PUBLISH after CONNECT", {
            let mut v = raw::connect_v311("big", 30);
            v.extend(raw::publish_v311("b/x", 1, 1, &[0u8; 4096]));
            v
        }),
        ("PUBLISH with a wildcard topic", {
            let mut v = raw::connect_v311("wild", 30);
            v.extend(raw::publish_v311("b/#", 1, 1, b"x"));
            v
        }),
        ("CONNECT twice", {
            let mut v = raw::connect_v311("twice", 30);
            v.extend(raw::connect_v311("twice", 30));
            v
        }),
    ];
    for (what, bytes) in cases {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = sock.write_all(&bytes).await;
        let mut buf = vec![0u8; 64];
        // Read until the server closes; at most a CONNACK comes back, never a PUBACK.
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, sock.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => panic!("{what}: connection not closed"),
            }
        }
        assert!(!got.contains(&0x40), "{what}: acknowledged: {got:?}");
    }
    // Still serving, nothing lost.
    let reasons = publish_n(&mut p, "b/a", 2).await;
    assert!(reasons.iter().all(|r| *r == PubAckReason::Success));
    assert_eq!(agent.journal().stats().await.unwrap().entries, 5);
    p.disconnect().await;
    stop(agent).await;
}

#[tokio::test]
async fn a_connection_flood_is_limited_by_max_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.limits.max_connections = 4;
    let (agent, addr) = start(c, dir.path()).await;
    let mut held = Vec::new();
    for i in 0..4 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&raw::connect_v311(&format!("c{i}"), 0))
            .await
            .unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
        held.push(s);
    }
    // Bounded flood: 200 more connections, each closed at once.
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&raw::connect_v311("flood", 0)).await;
        let mut buf = [0u8; 4];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "no CONNACK past the limit");
    }
    drop(held);
    // Slots come back once the held connections are gone.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if raw_connack(addr).await == Some(0) {
            ok = true;
            break;
        }
    }
    assert!(ok, "accepting again after the flood");
    stop(agent).await;
}

async fn raw_connack(addr: std::net::SocketAddr) -> Option<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(&raw::connect_v311("again", 0)).await.ok()?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut connack))
        .await
        .ok()?
        .ok()?;
    Some(connack[3])
}

#[tokio::test]
async fn a_subscriber_that_never_acknowledges_is_bounded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.limits.subscriber_queue = 10;
    c.limits.subscriber_wait_ms = 20;
    let (agent, addr) = start(c, dir.path()).await;
    let _sock = stuck_subscriber(addr).await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "fast")).await;
    let start_t = std::time::Instant::now();
    let reasons = publish_n(&mut p, "slow/t", 100).await;
    assert!(
        reasons
            .iter()
            .all(|r| *r == PubAckReason::Success || *r == PubAckReason::NoMatchingSubscribers)
    );
    // At most the in-flight window plus the queue reached the subscriber; the rest were
    // dropped after a bounded wait each, and counted.
    let counters = agent.counters();
    assert!(
        counters.dropped_subscriber_full >= 100 - 32 - 10 - 1,
        "{counters:?}"
    );
    assert!(counters.delivered <= 32 + 10 + 1, "{counters:?}");
    assert!(start_t.elapsed() < Duration::from_secs(20));
    p.disconnect().await;
    stop(agent).await;
}

/// A subscriber's queue is bounded in bytes too (`limits.subscriber_queue_bytes`): with
/// room for 1,000 messages but only 64 KiB, a stuck subscriber of 16 KiB messages holds
/// at most 4 of them queued (plus its in-flight window of 32, already written).
#[tokio::test]
async fn a_subscriber_queue_is_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.limits.subscriber_queue = 1000;
    c.limits.subscriber_queue_bytes = 64 * 1024;
    c.limits.subscriber_wait_ms = 20;
    let (agent, addr) = start(c, dir.path()).await;
    let _sock = stuck_subscriber(addr).await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "fast")).await;
    let reasons = publish_n_of(&mut p, "slow/big", 100, 16 * 1024).await;
    assert_eq!(reasons.len(), 100);
    let counters = agent.counters();
    assert!(counters.delivered <= 32 + 4 + 1, "{counters:?}");
    assert_eq!(
        counters.delivered + counters.dropped_subscriber_full,
        100,
        "{counters:?}"
    );
    p.disconnect().await;
    stop(agent).await;
}

/// A raw 3.1.1 subscriber to `slow/#` at QoS 1 that reads nothing and acknowledges
/// nothing (the agent's window of 32 deliveries in flight fills, then its queue).
async fn stuck_subscriber(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(&raw::connect_v311("stuck", 0))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    sock.read_exact(&mut connack).await.unwrap();
    let filter = b"slow/#";
    let mut sub = vec![
        0x82,
        (2 + 2 + filter.len() + 1) as u8,
        0,
        1,
        0,
        filter.len() as u8,
    ];
    sub.extend_from_slice(filter);
    sub.push(1);
    sock.write_all(&sub).await.unwrap();
    let mut suback = [0u8; 5];
    sock.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback[0], 0x90);
    sock
}

/// The store budget (`limits.max_storing_bytes`) is shared by all connections: with room
/// for 3 publishes of 8 KiB, 6 publishers with 128 publishes each in their pipelines are
/// held back (their sockets are not read) instead of buffering; every publish is still
/// stored once, in order per publisher, and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_budget_holds_publishers_back_and_loses_nothing() {
    const PUBLISHERS: usize = 6;
    const EACH: usize = 40;
    const SIZE: usize = 8 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.limits.max_storing_bytes = 3 * (SIZE + 16);
    let (agent, addr) = start(c, dir.path()).await;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        tasks.push(tokio::spawn(async move {
            let (mut c, _) = v5::Client::connect(v5::options(addr, &format!("b{p}"))).await;
            let topic = format!("q/budget/{p}");
            for i in 0..EACH {
                let mut payload = vec![b'x'; SIZE];
                payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
                c.client
                    .publish(&topic, v5::QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
            let mut acked = 0;
            while acked < EACH {
                match c.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await {
                    v5::Packet::PubAck(a) => {
                        assert_eq!(a.reason, PubAckReason::Success);
                        acked += 1;
                    }
                    _ => unreachable!(),
                }
            }
            c.disconnect().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let entries = agent.journal().peek(1000).await.unwrap();
    assert_eq!(entries.len(), PUBLISHERS * EACH);
    for p in 0..PUBLISHERS {
        let topic = format!("q/budget/{p}");
        let order: Vec<u32> = entries
            .iter()
            .filter(|e| e.topic == topic)
            .map(|e| u32::from_be_bytes(e.payload[..4].try_into().unwrap()))
            .collect();
        assert_eq!(order, (0..EACH as u32).collect::<Vec<_>>(), "{topic}");
    }
    let waits = agent.metrics_snapshot().await.server.publish_budget_waits;
    assert!(waits > 0, "no publish waited for the budget");
    println!("{waits} publishes waited for room in the budget");
    stop(agent).await;
}

/// While the agent does not read a publisher's socket (its pipeline waits for a full
/// subscriber queue), the publisher's keepalive does not run out: a raw 3.1.1 publisher
/// with a keepalive of 1 s (1.5 s grace) whose stores are held up to 2.5 s each gets
/// every PUBACK and is never disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_is_not_keepalive_silence() {
    // 32 publishes fill the stuck subscriber's window and 1 its queue; the next 2 wait
    // 2.5 s each for room (then the subscriber misses them, counted).
    const N: u16 = 35;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.limits.subscriber_queue = 1;
    c.limits.subscriber_wait_ms = 2500;
    c.limits.publish_pipeline = 1;
    let (agent, addr) = start(c, dir.path()).await;
    let _sub = stuck_subscriber(addr).await;
    let mut p = tokio::net::TcpStream::connect(addr).await.unwrap();
    p.write_all(&raw::connect_v311("held", 1)).await.unwrap();
    let mut connack = [0u8; 4];
    p.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    for pkid in 1..=N {
        p.write_all(&raw::publish_v311("slow/held", 1, pkid, b"h"))
            .await
            .unwrap();
    }
    for pkid in 1..=N {
        let mut puback = [0u8; 4];
        let read = tokio::time::timeout(WAIT, p.read_exact(&mut puback)).await;
        match read {
            Ok(Ok(_)) => assert_eq!(puback, [0x40, 2, 0, pkid as u8], "PUBACK {pkid}"),
            Ok(Err(e)) => panic!("disconnected before PUBACK {pkid}: {e}"),
            Err(_) => panic!("no PUBACK {pkid} in time"),
        }
    }
    let counters = agent.counters();
    assert!(counters.dropped_subscriber_full >= 2, "{counters:?}");
    stop(agent).await;
}
