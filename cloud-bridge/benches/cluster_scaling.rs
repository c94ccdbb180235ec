//! One broker vs two (issue #16): QoS 1 publish throughput through one bridge and
//! end-to-end latency (publish → a wildcard subscriber on the same bridge) on the single
//! test broker and on the two-broker cluster, in the same run, with how busy the machine's
//! CPUs were during each phase (the four JVMs of the cluster share its cores with the
//! bridge and the clients). Prints figures; asserts nothing.
//!
//! Needs both the test broker (`tests/rocketmq/rocketmq.sh start`) and the cluster
//! (`tests/rocketmq/rocketmq.sh cluster start`). Run with
//! `cargo bench -p cloud-bridge --bench cluster_scaling`. Environment: `BENCH_SECONDS`
//! (throughput phase, default 10), `BENCH_PUBLISHERS` (16), `BENCH_RATE` (latency phase,
//! messages per second, default 500).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Busy and total jiffies of all CPUs (`/proc/stat`).
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn busy_since(start: (u64, u64)) -> f64 {
    let now = cpu_jiffies();
    let (busy, total) = (now.0 - start.0, now.1 - start.1);
    if total == 0 {
        0.0
    } else {
        100.0 * busy as f64 / total as f64
    }
}

/// The cluster's env (`rocketmq.sh cluster env`).
fn cluster_env() -> HashMap<String, String> {
    let out = Command::new(harness::repo_root().join("tests/rocketmq/rocketmq.sh"))
        .args(["cluster", "env"])
        .output()
        .expect("rocketmq.sh cluster env");
    assert!(
        out.status.success(),
        "the cluster is not running: tests/rocketmq/rocketmq.sh cluster start"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// A bridge config for `first` on the name servers `namesrv` (`a;b`) of `cluster`.
fn config_text(first: &str, namesrv: &str, cluster: &str) -> String {
    let single = harness::rocketmq_env("ROCKETMQ_NAMESRV");
    let ns: Vec<String> = namesrv.split(';').map(|a| format!("{a:?}")).collect();
    harness::config_text(first, &[&format!("{first}/#")], "")
        .replace(
            &format!("namesrv = [\"{single}\"]"),
            &format!("namesrv = [{}]", ns.join(", ")),
        )
        .replace(
            &format!(
                "cluster = \"{}\"",
                harness::rocketmq_env("ROCKETMQ_CLUSTER")
            ),
            &format!("cluster = \"{cluster}\""),
        )
}

struct Figures {
    rate: f64,
    rate_cpu: f64,
    p50_ms: f64,
    p99_ms: f64,
    latency_cpu: f64,
}

async fn client(addr: std::net::SocketAddr, id: &str) -> (AsyncClient, rumqttc::v5::EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", addr.port());
    o.set_credentials("demo", harness::password(id));
    o.set_keep_alive(Duration::from_secs(30));
    o.set_outgoing_inflight_upper_limit(100);
    AsyncClient::new(o, 200)
}

/// `publishers` QoS 1 publishers for `seconds`, each on its own topic: acknowledged
/// publishes per second.
async fn throughput(addr: std::net::SocketAddr, first: &str, publishers: u64, seconds: u64) -> f64 {
    let acks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..publishers {
        let (acks, stop) = (acks.clone(), stop.clone());
        let topic = format!("{first}/p{i}");
        let id = harness::unique("tp");
        tasks.push(tokio::spawn(async move {
            let (c, mut ev) = client(addr, &id).await;
            let feeder = {
                let (c, stop) = (c.clone(), stop.clone());
                tokio::spawn(async move {
                    let payload = vec![b'x'; 100];
                    while !stop.load(Ordering::Relaxed) {
                        if c.publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                })
            };
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(10), ev.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("publisher {i}: {e}"),
                    Err(_) => panic!("publisher {i}: no progress for 10 s"),
                }
            }
            feeder.abort();
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start_acks = acks.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rate = (acks.load(Ordering::Relaxed) - start_acks) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    rate
}

/// One publisher at `rate` per second for 10 s over 10 topics, a wildcard subscriber on
/// the same bridge: each message's latency (ms) from its publish to its delivery, the
/// first second not counted.
async fn latency(addr: std::net::SocketAddr, first: &str, rate: u64) -> Vec<f64> {
    let sub_id = harness::unique("lsub");
    let (sub, mut sub_ev) = client(addr, &sub_id).await;
    sub.subscribe(format!("{first}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_ev.poll().await.unwrap() {
            break;
        }
    }
    let count = rate * 10;
    let warmup = rate;
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (lat.len() as u64) < count - warmup && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(10), sub_ev.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let text = String::from_utf8_lossy(&p.payload);
                    if let Some(sent) = text.strip_prefix('c').and_then(|t| t.parse::<u64>().ok()) {
                        lat.push((unix_micros().saturating_sub(sent)) as f64 / 1000.0);
                    }
                }
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        lat
    });
    let pub_id = harness::unique("lpub");
    let (p, mut pub_ev) = client(addr, &pub_id).await;
    let driver = tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });
    let start = Instant::now();
    for i in 0..count {
        let due = start + Duration::from_micros(i * 1_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let tag = if i < warmup { 'w' } else { 'c' };
        p.publish(
            format!("{first}/l{}", i % 10),
            QoS::AtLeastOnce,
            false,
            format!("{tag}{}", unix_micros()).into_bytes(),
        )
        .await
        .unwrap();
    }
    let lat = receiver.await.unwrap();
    driver.abort();
    lat
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

async fn measure(name: &str, text: String, publishers: u64, seconds: u64, rate: u64) -> Figures {
    let (server, config) = harness::start_bridge(&text).await;
    let first = config.topics.first_level[0].clone();
    let addr = server.local_addr("mqtt").unwrap();
    let cpu = cpu_jiffies();
    let throughput = throughput(addr, &first, publishers, seconds).await;
    let rate_cpu = busy_since(cpu);
    let cpu = cpu_jiffies();
    let mut lat = latency(addr, &first, rate).await;
    let latency_cpu = busy_since(cpu);
    lat.sort_by(f64::total_cmp);
    println!(
        "{name}: {throughput:.0} QoS 1 publishes/s (CPU {rate_cpu:.0} % busy); latency at {rate}/s: {} msgs, p50 {:.1} ms, p99 {:.1} ms (CPU {latency_cpu:.0} % busy)",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    server.stop(Duration::from_secs(5)).await;
    Figures {
        rate: throughput,
        rate_cpu,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        latency_cpu,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs bench binaries too, without `--bench`: measure only
    // under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "{} measures only under `cargo bench`",
            env!("CARGO_CRATE_NAME")
        );
        return;
    }
    let seconds = env("BENCH_SECONDS", 10);
    let publishers = env("BENCH_PUBLISHERS", 16);
    let rate = env("BENCH_RATE", 500);
    let cluster = cluster_env();
    println!(
        "{publishers} publishers, 100 B, QoS 1, {seconds} s; latency: 1 publisher at {rate}/s, wildcard subscriber; {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let one = measure(
        "1 broker ",
        config_text(
            &harness::unique("one"),
            &harness::rocketmq_env("ROCKETMQ_NAMESRV"),
            &harness::rocketmq_env("ROCKETMQ_CLUSTER"),
        ),
        publishers,
        seconds,
        rate,
    )
    .await;
    let two = measure(
        "2 brokers",
        config_text(
            &harness::unique("two"),
            &cluster["ROCKETMQ_NAMESRV"],
            &cluster["ROCKETMQ_CLUSTER"],
        ),
        publishers,
        seconds,
        rate,
    )
    .await;
    println!(
        "2 brokers / 1 broker: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x (CPU busy {:.0} % vs {:.0} % while publishing, {:.0} % vs {:.0} % at {rate}/s)",
        two.rate / one.rate,
        two.p50_ms / one.p50_ms,
        two.p99_ms / one.p99_ms,
        two.rate_cpu,
        one.rate_cpu,
        two.latency_cpu,
        one.latency_cpu
    );
}
