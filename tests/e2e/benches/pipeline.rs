//! Pipeline benchmarks (they print figures; nothing is asserted):
//! 1. Backlog drain: N messages of 100 bytes (default 1,000,000; `BENCH_MESSAGES`) wait in
//!    the agent's journal while the bridge is down; then the bridge starts and the drain
//!    rate (messages/s until the journal is empty) is measured, next to a direct RocketMQ
//!    producer's rate in the same run (`rocketmq.sh tool bench-produce`, 10 threads, LMQ
//!    dispatch like the bridge's writes), and with 1 thread (one send at a time, how a
//!    RocketMQ ordered producer keeps one topic's order). `BENCH_TOPICS` spreads the backlog over that many
//!    topics (default 1); `BENCH_PIPELINE` sets the bridge's `publish_pipeline`.
//! 2. Agent RSS while holding the backlog, and its peak (VmHWM) through the drain.
//! 3. End-to-end latency at 1k msg/s: a device (`mosquitto_pub -l`, QoS 1) publishes its
//!    send time, after one second of warm-up (connect, first route lookup) that is not
//!    counted; latency = RocketMQ's store timestamp - send time (ms resolution; the
//!    plain consumer then reads it with its own long-poll delay, not counted).
//!
//! Run: `cargo build --release -p edge-agent -p cloud-bridge && cargo bench -p e2e --bench pipeline`
//! (RocketMQ running: `tests/rocketmq/rocketmq.sh start`).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{Agent, Bridge, plain_uplink, repo_root, unique};
use edge_agent::journal::{Journal, JournalConfig, NewEntry, Qos};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn fill(path: &std::path::Path, n: usize, topics: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = JournalConfig {
            max_bytes: 1 << 30,
            ..JournalConfig::default()
        };
        let journal = Journal::open(path, &config).await.unwrap();
        let payload = bytes::Bytes::from(vec![b'x'; 100]);
        let mut pending = Vec::with_capacity(10_000);
        let names: Vec<String> = (0..topics).map(|t| format!("line/bench/{t}")).collect();
        for i in 0..n {
            let e = NewEntry::new(&names[i % topics], payload.clone(), Qos::AtLeastOnce);
            pending.push(journal.submit(e).await.unwrap());
            if pending.len() == 10_000 {
                for p in pending.drain(..) {
                    p.committed().await.unwrap();
                }
            }
        }
        for p in pending {
            p.committed().await.unwrap();
        }
        journal.close().await.unwrap();
    });
}

/// The bridge's `publish_pipeline` as its config file sets it, or its default (16).
fn cloud_bridge_pipeline(config: &std::path::Path) -> String {
    std::fs::read_to_string(config)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("publish_pipeline = ").map(str::to_owned))
        .unwrap_or_else(|| "16 (default)".to_owned())
}

fn direct_producer_rate(topic: &str, threads: usize) -> String {
    let out = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"))
        .args(["tool", "bench-produce", "--topic", topic])
        .args(["--threads", &threads.to_string()])
        .args(["--seconds", "10", "--size", "100", "--lmq"])
        .output()
        .expect("bench-produce");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too, without `--bench`: measure only
    // under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "{} measures only under `cargo bench`",
            env!("CARGO_CRATE_NAME")
        );
        return;
    }
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let first = unique("bench");
    let gateway = unique("gw");
    let mut bridge = Bridge::start(dir.path(), &first, None, "");
    let uplink = plain_uplink(&bridge, &gateway);
    bridge.process.stop();
    // BENCH_PIPELINE=n: the bridge stores n publishes of a connection at once (to
    // different topics; one topic's one after another). Default: the bridge's default.
    if let Ok(pipeline) = std::env::var("BENCH_PIPELINE") {
        let text = std::fs::read_to_string(&bridge.config).unwrap().replace(
            "connect_timeout_secs = 5",
            &format!("connect_timeout_secs = 5\npublish_pipeline = {pipeline}"),
        );
        std::fs::write(&bridge.config, text).unwrap();
    }
    let pipeline = cloud_bridge_pipeline(&bridge.config);
    // BENCH_TOPICS=n: the backlog spans n topics, round robin (default 1: the worst case,
    // one topic's messages are stored strictly one after another).
    let topics: usize = std::env::var("BENCH_TOPICS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    println!("bridge publish_pipeline = {pipeline}; backlog over {topics} topic(s)");

    let state = dir.path().join(format!("agent-{gateway}"));
    std::fs::create_dir_all(&state).unwrap();
    let t = Instant::now();
    fill(&state.join("journal.db"), n, topics);
    println!(
        "filled the journal with {n} messages of 100 B in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let agent = Agent::start(dir.path(), &gateway, &first, &uplink, "");
    let pid = agent.process.pid().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "agent holding the backlog (bridge down): RSS {:.1} MiB",
        proc_kib(pid, "VmRSS:") as f64 / 1024.0
    );

    let flushes = |a: &Agent| {
        (
            a.metric("edge_agent_journal_commits_total"),
            a.metric("edge_agent_journal_wal_flushes_total"),
            a.metric("edge_agent_journal_wal_flush_seconds_total"),
        )
    };
    let before = flushes(&agent);
    bridge.process.start();
    bridge.wait();
    let t = Instant::now();
    let mut last = (Instant::now(), agent.journal_depth());
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let depth = agent.journal_depth();
        if depth == 0 {
            break;
        }
        if last.0.elapsed() > Duration::from_secs(10) {
            println!(
                "  ... {depth} left ({:.0} msg/s over the last 10 s)",
                (last.1 - depth) as f64 / last.0.elapsed().as_secs_f64()
            );
            last = (Instant::now(), depth);
        }
        assert!(
            t.elapsed() < Duration::from_secs(3600),
            "drain did not finish within an hour"
        );
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "drain: {n} messages in {secs:.1} s = {:.0} msg/s; agent peak RSS (VmHWM) {:.1} MiB",
        n as f64 / secs,
        proc_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    let after = flushes(&agent);
    let (commits, count, secs) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    println!(
        "  journal during the drain: {commits} transactions, {count} WAL flushes, {:.2} ms per flush",
        if count > 0.0 { secs * 1e3 / count } else { 0.0 }
    );
    println!(
        "direct RocketMQ producer, same run: {}",
        direct_producer_rate(&first, 10)
    );
    // RocketMQ's own way to keep one topic's order (an ordered producer) is one send at a
    // time: the yardstick for a single-topic drain, which the bridge stores in order.
    println!(
        "direct RocketMQ producer, one send at a time (ordered), same run: {}",
        direct_producer_rate(&first, 1)
    );

    // Latency at 1k msg/s: the first second (the device's connect, the bridge's first
    // route lookup for the topic) is warm-up and not counted.
    let warmup = 1000usize;
    let count = 6000usize;
    let consumer = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"))
        .args(["tool", "consume", "--topic", &first, "--from-end"])
        .args(["--count", &count.to_string(), "--timeout-ms", "60000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let mut publisher = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &agent.port.to_string(),
            "-V",
            "mqttv5",
        ])
        .args(["-i", "lat-dev", "-t", "line/latency", "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = publisher.stdin.take().unwrap();
        let start = Instant::now();
        for i in 0..count {
            let due = start + Duration::from_millis(i as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let tag = if i < warmup { "w" } else { "" };
            writeln!(stdin, "{tag}{}", unix_ms()).unwrap();
        }
    }
    publisher.wait().unwrap();
    let out = consumer.wait_with_output().unwrap();
    let mut lat: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| {
            let sent: i64 = m["body_utf8"].as_str()?.parse().ok()?;
            Some(m["storeTimestamp"].as_i64()? - sent)
        })
        .collect();
    lat.sort_unstable();
    if lat.is_empty() {
        println!("latency: no messages read back");
    } else {
        let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        println!(
            "latency device -> RocketMQ store at 1k msg/s ({} msgs after 1 s of warm-up): p50 {} ms, p99 {} ms, max {} ms",
            lat.len(),
            p(0.5),
            p(0.99),
            lat[lat.len() - 1]
        );
    }
}
