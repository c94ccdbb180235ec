//! A fast simulated sensor (interval 1 ms) for 2 s: every reading reaches a subscriber in
//! order, without a gap in `seq`. Prints the rate reached and the sampling-to-delivery
//! delay (each reading is committed to the journal first: uplink topics are `#`); the
//! figures are printed, not asserted.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use edge_agent::config::{Config, DEFAULT_CONFIG};
use support::{start, stop};
use test_support::v5;

#[tokio::test]
async fn a_fast_sensor_loses_nothing_and_prints_its_rate_and_delay() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config();
    config.sensors = Config::parse(
        &format!(
            "{DEFAULT_CONFIG}\n[[sensor]]\nid = \"fast\"\ntype = \"simulated\"\n\
             interval_ms = 1\ntopic = \"sensors/fast\"\n"
        ),
        "test",
    )
    .expect("config")
    .sensors;
    let (agent, addr) = start(config, dir.path()).await;
    let (mut sub, _) = v5::Client::connect(v5::options(addr, "reader")).await;
    sub.subscribe("sensors/fast", v5::QoS::AtLeastOnce).await;

    let began = Instant::now();
    let mut delays = Vec::new();
    let mut last_seq = None;
    while began.elapsed() < Duration::from_secs(2) {
        let p = sub
            .publish(Duration::from_secs(10))
            .await
            .expect("a reading");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let r: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
        let seq = r["seq"].as_u64().unwrap();
        if let Some(last) = last_seq {
            assert_eq!(seq, last + 1, "no reading lost or reordered");
        }
        last_seq = Some(seq);
        delays.push(now_ms - r["ts_ms"].as_i64().unwrap());
    }
    let secs = began.elapsed().as_secs_f64();
    delays.sort_unstable();
    let pct = |p: f64| delays[((delays.len() - 1) as f64 * p) as usize];
    println!(
        "sensor rate: {} readings in {secs:.2} s = {:.0}/s; sample->subscriber delay ms: p50 {} p99 {} max {}",
        delays.len(),
        delays.len() as f64 / secs,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    assert!(delays.len() > 10);
    let stats = agent.sensors().stats();
    assert_eq!(stats[0].errors_total(), 0);
    sub.disconnect().await;
    stop(agent).await;
}
