//! The read path, measured through the real broker. Prints figures; asserts nothing.
//!
//! 1. End-to-end latency, publish -> subscriber, QoS 1 at 1k msg/s (p50/p99).
//! 2. Fan-in: 10 QoS 1 publishers on `{first}/pN`, one QoS 1 subscriber on `{first}/+`:
//!    delivered rate next to the write rate in the same run.
//! 3. Idle connections: `BENCH_CONNECTIONS` (default 10,000) MQTT connections with
//!    keepalive 60 held by one bridge process; its RSS per connection.
//!
//! Needs the test broker (`tests/rocketmq/rocketmq.sh start`) and enough file descriptors
//! (`ulimit -n 30000`). Run: `cargo bench -p cloud-bridge --bench read_path`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::clients::Proto;
use harness::subscriber::rumqttc_subscribe;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn micros_since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

async fn publisher(
    addr: std::net::SocketAddr,
    id: String,
) -> (AsyncClient, tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let mut o = MqttOptions::new(&id, "127.0.0.1", addr.port());
    o.set_credentials("demo", harness::password(&id));
    o.set_keep_alive(Duration::from_secs(30));
    o.set_outgoing_inflight_upper_limit(100);
    let (client, mut ev) = AsyncClient::new(o, 200);
    let acks = Arc::new(AtomicU64::new(0));
    let a = acks.clone();
    let task = tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    a.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (client, task, acks)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

async fn latency(addr: std::net::SocketAddr, first: &str, seconds: u64) {
    let topic = format!("{first}/lat");
    let id = test_support::unique("lat-sub");
    let mut sub = rumqttc_subscribe(
        addr,
        Proto::V5,
        &id,
        &harness::password(&id),
        true,
        &[(&topic, 1)],
    )
    .await;
    let (client, task, _) = publisher(addr, test_support::unique("lat-pub")).await;
    // The first 2 s warm up the broker's JIT and the connections and are not counted.
    let warmup = 2000u64;
    let total = seconds * 1000 + warmup;
    let sender = {
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            for _ in 0..total {
                tick.tick().await;
                let payload = micros_since_epoch().to_string();
                client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
        })
    };
    let mut lat = Vec::with_capacity(total as usize);
    while (lat.len() as u64) < total {
        let Some(m) = sub.next(Duration::from_secs(10)).await else {
            break;
        };
        let sent: u64 = String::from_utf8_lossy(&m.payload).parse().unwrap_or(0);
        lat.push(micros_since_epoch().saturating_sub(sent));
    }
    let lat: Vec<u64> = lat.into_iter().skip(warmup as usize).collect();
    sender.await.unwrap();
    task.abort();
    let mut lat = lat;
    lat.sort_unstable();
    println!(
        "latency QoS 1 at 1k msg/s, {} messages: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.50) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}

async fn fan_in(addr: std::net::SocketAddr, first: &str, seconds: u64) {
    let filter = format!("{first}/+");
    let id = test_support::unique("fan-sub");
    let mut sub = rumqttc_subscribe(
        addr,
        Proto::V5,
        &id,
        &harness::password(&id),
        true,
        &[(&filter, 1)],
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut pubs = Vec::new();
    for i in 0..10 {
        let (client, task, acks) = publisher(addr, format!("fan-pub-{i}")).await;
        let topic = format!("{first}/p{i}");
        let stop = stop.clone();
        let feeder = tokio::spawn(async move {
            let payload = vec![b'x'; 100];
            while !stop.load(Ordering::Relaxed) {
                if client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        pubs.push((feeder, task, acks));
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let d = delivered.clone();
    let counter = tokio::spawn(async move {
        while sub.next(Duration::from_secs(30)).await.is_some() {
            d.fetch_add(1, Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written0: u64 = pubs.iter().map(|(_, _, a)| a.load(Ordering::Relaxed)).sum();
    let delivered0 = delivered.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let secs = start.elapsed().as_secs_f64();
    let written = (pubs
        .iter()
        .map(|(_, _, a)| a.load(Ordering::Relaxed))
        .sum::<u64>()
        - written0) as f64
        / secs;
    let got = (delivered.load(Ordering::Relaxed) - delivered0) as f64 / secs;
    stop.store(true, Ordering::Relaxed);
    for (f, t, _) in pubs {
        f.abort();
        t.abort();
    }
    counter.abort();
    println!(
        "fan-in 10 publishers -> 1 wildcard subscriber, QoS 1, 100 B: written {written:.0} msg/s, delivered {got:.0} msg/s, ratio {:.2}",
        got / written
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn idle_connections(first: &str, count: u64) {
    let port = test_support::free_port();
    let text = harness::config_text(first, &[], "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace("[limits]", "[limits]\nmax_connections = 20000");
    let dir = std::env::temp_dir().join(test_support::unique("idle-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bridge.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cloud-bridge"))
        .args(["--config", path.to_str().unwrap()])
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(child.id());
    let mut conns = Vec::with_capacity(count as usize);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    for i in 0..count {
        let mut raw = test_support::raw::Raw::connect(addr, false).await;
        let id = format!("idle-{i}");
        let mut c = rumqttc::mqttbytes::v4::Connect::new(id.clone());
        c.keep_alive = 60;
        c.set_login("demo", harness::password(&id));
        raw.send4(rumqttc::mqttbytes::v4::Packet::Connect(c)).await;
        if raw.recv(Duration::from_secs(30)).await.is_none() {
            println!("idle connections: CONNACK missing at {i}");
            break;
        }
        conns.push(raw);
    }
    let connect_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(child.id());
    println!(
        "idle connections: {} held (connected in {connect_secs:.1} s), bridge RSS {before} KiB -> {after} KiB, {:.1} KiB per connection",
        conns.len(),
        (after.saturating_sub(before)) as f64 / conns.len().max(1) as f64
    );
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
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
    let first = test_support::unique("readbench");
    let plus = format!("{first}/+");
    let (server, _) = harness::start_bridge(&harness::config_text(&first, &[&plus], "")).await;
    let addr = server.local_addr("mqtt").unwrap();
    latency(addr, &first, seconds).await;
    fan_in(addr, &first, seconds).await;
    server.stop(Duration::from_secs(5)).await;
    idle_connections(&first, env("BENCH_CONNECTIONS", 10_000)).await;
}
