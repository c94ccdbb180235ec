//! QoS 1 publishes per second through the bridge into the real broker, next to what the
//! same broker takes from a direct RocketMQ producer (the official Java client) in the
//! same run. Prints figures; asserts nothing.
//!
//! Needs the test broker (`tests/rocketmq/rocketmq.sh start`). Run with
//! `cargo bench -p cloud-bridge --bench publish_rate`. Environment: `BENCH_SECONDS`
//! (default 10), `BENCH_PUBLISHERS` (10), `BENCH_PIPELINE` (the bridge's
//! `publish_pipeline`, default 16 as in the bridge).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
    let publishers = env("BENCH_PUBLISHERS", 10);
    let pipeline = env("BENCH_PIPELINE", 16);
    let first = test_support::unique("bench");
    let text = harness::config_text(&first, &[&format!("{first}/+")], "").replace(
        "connect_timeout_secs = 2",
        &format!("connect_timeout_secs = 2\npublish_pipeline = {pipeline}"),
    );
    let (server, _) = harness::start_bridge(&text).await;
    let addr = server.local_addr("mqtt").unwrap();
    let acks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..publishers {
        let acks = acks.clone();
        let stop = stop.clone();
        let topic = format!("{first}/p{i}");
        tasks.push(tokio::spawn(async move {
            let id = format!("bench-{i}");
            let mut o = MqttOptions::new(&id, "127.0.0.1", addr.port());
            o.set_credentials("demo", harness::password(&id));
            o.set_keep_alive(Duration::from_secs(30));
            o.set_outgoing_inflight_upper_limit(100);
            let (client, mut ev) = AsyncClient::new(o, 200);
            let payload = vec![b'x'; 100];
            let feeder = {
                let client = client.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if client
                            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                })
            };
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(5), ev.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("publisher {i}: {e}"),
                    Err(_) => panic!("publisher {i}: no progress for 5 s"),
                }
            }
            feeder.abort();
        }));
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start_acks = acks.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let bridge_rate =
        (acks.load(Ordering::Relaxed) - start_acks) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    server.stop(Duration::from_secs(5)).await;

    let direct = test_support::rocketmq::tool(&[
        "bench-produce",
        "--topic",
        &first,
        "--threads",
        &publishers.to_string(),
        "--size",
        "100",
        "--seconds",
        &seconds.to_string(),
        "--lmq",
    ])
    .expect("direct producer bench");
    let direct_rate = direct
        .iter()
        .find_map(|v| v["rate"].as_f64())
        .expect("rate in the tool's output");
    println!(
        "publishers: {publishers}, payload: 100 B, QoS 1, {seconds} s, bridge publish_pipeline: {pipeline}"
    );
    println!("bridge (MQTT QoS 1 acks/s):        {bridge_rate:>10.0}");
    println!("direct Java producer (sends/s):    {direct_rate:>10.0}");
    println!(
        "ratio bridge / direct:             {:>10.2}",
        bridge_rate / direct_rate
    );
}
