//! Pipeline benchmarks (they print figures; nothing is asserted), in one run:
//! 1. The broker's own intake: a direct RocketMQ Java producer, async with 256 sends in
//!    flight, one LMQ per message (`rocketmq.sh tool bench-produce --inflight`), before
//!    and after the drains; the drains are reported as a ratio to the mean of the two.
//! 2. Backlog drains: N messages of 100 bytes (default 200,000; `BENCH_MESSAGES`) wait in
//!    the agent's journal while the bridge is down; then the bridge starts and the drain
//!    rate (messages/s until the journal is empty) is measured, with the agent's RSS while
//!    holding the backlog and its peak (VmHWM) through the drain. Backlogs:
//!    - one topic (the worst case: every message behind the one before it);
//!    - ten devices: 10 topics in runs of 500 (each device's bursts, as a journal filled
//!      by concurrent devices holds them);
//!    - 64 topics, round robin.
//!
//!    `BENCH_BACKLOGS=one,ten,64` picks some of them.
//! 3. Live latency during a one-topic drain of 5 N messages with `drain = "live-first"`: a
//!    device (`mosquitto_pub -l`, QoS 1) publishes its send time 100 times a second on
//!    another topic for 20 s; latency = RocketMQ's store timestamp - send time, read by
//!    the plain Java consumer (`consume --origin`).
//! 4. End-to-end latency at 1k msg/s with no backlog: latency = RocketMQ's store
//!    timestamp - send time (ms resolution).
//!
//! Run: `cargo build --release -p edge-agent -p cloud-bridge && cargo bench -p e2e --bench pipeline`
//! (RocketMQ running: `tests/rocketmq/rocketmq.sh start`). `BENCH_PIPELINE_SENDS=never` sets the
//! bridge's `rocketmq.pipeline_sends` (one send at a time per topic, as before issue #17).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{Agent, Bridge, plain_uplink};
use edge_agent::journal::{Journal, JournalConfig, NewEntry, Qos};
use test_support::{repo_root, unique};

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

fn fill(path: &std::path::Path, n: usize, topics: usize, run: usize) {
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
            let e = NewEntry::new(
                &names[(i / run) % topics],
                payload.clone(),
                Qos::AtLeastOnce,
            );
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

/// The direct Java producer's rate (msg/s) with `inflight` async sends in flight, over
/// `seconds`.
fn direct_producer_rate(topic: &str, inflight: usize, seconds: u32) -> f64 {
    let out = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"))
        .args(["tool", "bench-produce", "--topic", topic])
        .args(["--inflight", &inflight.to_string()])
        .args(["--seconds", &seconds.to_string(), "--size", "100", "--lmq"])
        .output()
        .expect("bench-produce");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    println!("  direct producer: {line}");
    serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v["rate"].as_f64())
        .unwrap_or(0.0)
}

/// Entries waiting in the agent's journal, from its `/metrics` (not by reading the file:
/// a reader's snapshot of a large WAL database would hold back the agent's checkpoints
/// and add its own load to the latency measured).
fn depth(agent: &Agent) -> u64 {
    use std::io::Read;
    for _ in 0..100 {
        let mut text = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", agent.metrics_port)) {
            let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let _ = s.read_to_string(&mut text);
        }
        if let Some(v) = text
            .lines()
            .find_map(|l| l.strip_prefix("edge_agent_journal_entries "))
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            return v as u64;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the agent's /metrics has no edge_agent_journal_entries");
}

/// The uplink's stages as the agent measured them: mean journal read per batch, PUBLISH
/// written to PUBACK, PUBACK to the journal's answer to the confirm.
fn stages(agent: &Agent) -> String {
    let mean_ms = |name: &str| {
        let count = agent.metric(&format!("edge_agent_uplink_{name}_seconds_count"));
        let sum = agent.metric(&format!("edge_agent_uplink_{name}_seconds_sum"));
        if count > 0.0 {
            format!("{:.2} ms x {count}", sum * 1e3 / count)
        } else {
            "none".to_owned()
        }
    };
    format!(
        "journal read {} batches, {:.0} entries; PUBLISH->PUBACK {}; PUBACK->confirmed {}",
        mean_ms("journal_read"),
        agent.metric("edge_agent_uplink_journal_read_entries_total"),
        mean_ms("puback"),
        mean_ms("confirm")
    )
}

/// One backlog's drain figures.
struct Drain {
    name: &'static str,
    rate: f64,
    hold_rss_mib: f64,
    peak_rss_mib: f64,
}

/// Fills a new agent's journal with `n` messages over `topics` topics in runs of `run`
/// while the bridge is down, then starts the bridge and measures the drain. Returns the
/// figures and the agent (still running).
fn drain(
    dir: &std::path::Path,
    bridge: &mut Bridge,
    first: &str,
    name: &'static str,
    (n, topics, run): (usize, usize, usize),
    agent_extra: &str,
    during: impl FnOnce(&Agent) + Send,
) -> (Drain, Agent) {
    bridge.process.stop();
    let gateway = unique("gw");
    let uplink = format!("{}\n{agent_extra}", plain_uplink(bridge, &gateway));
    let state = dir.join(format!("agent-{gateway}"));
    std::fs::create_dir_all(&state).unwrap();
    let t = Instant::now();
    fill(&state.join("journal.db"), n, topics, run);
    println!(
        "{name}: filled the journal with {n} messages of 100 B over {topics} topic(s), runs of {run}, in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let agent = Agent::start(dir, &gateway, first, &uplink, "");
    let pid = agent.process.pid().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let hold_rss_mib = proc_kib(pid, "VmRSS:") as f64 / 1024.0;
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
    // The drain is timed from its first confirmed message: before it, the agent waits
    // out its reconnect backoff (printed apart).
    let up = Instant::now();
    while depth(&agent) as usize >= n {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            up.elapsed() < Duration::from_secs(300),
            "the agent did not reconnect within 5 min"
        );
    }
    println!(
        "  the agent's first message confirmed {:.1} s after the bridge was listening",
        up.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let watcher = std::thread::scope(|scope| {
        let live = scope.spawn(|| during(&agent));
        let mut last = (Instant::now(), depth(&agent));
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let depth = depth(&agent);
            if depth == 0 {
                break;
            }
            if last.0.elapsed() > Duration::from_secs(10) {
                println!(
                    "  ... {depth} left ({:.0} msg/s over the last 10 s)",
                    last.1.saturating_sub(depth) as f64 / last.0.elapsed().as_secs_f64()
                );
                last = (Instant::now(), depth);
            }
            assert!(
                t.elapsed() < Duration::from_secs(3600),
                "drain did not finish within an hour"
            );
        }
        let secs = t.elapsed().as_secs_f64();
        live.join().unwrap();
        secs
    });
    let rate = n as f64 / watcher;
    let peak_rss_mib = proc_kib(pid, "VmHWM:") as f64 / 1024.0;
    let after = flushes(&agent);
    let (commits, count, secs) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    println!(
        "{name}: drained {n} in {watcher:.1} s = {rate:.0} msg/s; agent RSS {hold_rss_mib:.1} MiB holding it, peak {peak_rss_mib:.1} MiB; journal: {commits} transactions, {count} WAL flushes, {:.2} ms per flush",
        if count > 0.0 { secs * 1e3 / count } else { 0.0 }
    );
    println!("  stages (agent /metrics): {}", stages(&agent));
    (
        Drain {
            name,
            rate,
            hold_rss_mib,
            peak_rss_mib,
        },
        agent,
    )
}

/// Publishes the send time 100 times a second for `secs` on the agent's `line/live`,
/// and returns each message's latency (ms) to RocketMQ: its store timestamp, read by the
/// plain Java consumer (it skips the backlog's messages), minus its send time.
fn live_latency(agent: &Agent, first: &str, secs: u64) -> Vec<i64> {
    let cloud = format!("{first}/{}/line/live", agent.gateway);
    let consumer = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"))
        .args([
            "tool",
            "consume",
            "--topic",
            first,
            "--from-end",
            "--origin",
            &cloud,
        ])
        .args(["--count", &(secs * 100).to_string()])
        .args(["--timeout-ms", &((secs + 120) * 1000).to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("rocketmq.sh tool consume");
    std::thread::sleep(Duration::from_secs(3));
    publish_send_times(
        agent,
        "live-dev",
        "line/live",
        secs * 100,
        Duration::from_millis(10),
        0,
    );
    store_latencies(consumer)
}

/// A device on the agent (`mosquitto_pub -l`, MQTT 5, QoS 1) publishes its send time (ms
/// since the epoch) `count` times, one every `every`; the first `warmup` are tagged `w`
/// so that they are not counted.
fn publish_send_times(
    agent: &Agent,
    client_id: &str,
    topic: &str,
    count: u64,
    every: Duration,
    warmup: u64,
) {
    let mut publisher = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &agent.port.to_string(),
            "-V",
            "mqttv5",
        ])
        .args(["-i", client_id, "-t", topic, "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = publisher.stdin.take().unwrap();
        let start = Instant::now();
        for i in 0..count {
            let due = start + every * u32::try_from(i).unwrap();
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let tag = if i < warmup { "w" } else { "" };
            writeln!(stdin, "{tag}{}", unix_ms()).unwrap();
        }
    }
    publisher.wait().unwrap();
}

/// Each counted message's latency (ms) from the consumer's output: RocketMQ's store
/// timestamp minus the send time in its body.
fn store_latencies(consumer: std::process::Child) -> Vec<i64> {
    let out = consumer.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| {
            let sent: i64 = m["body_utf8"].as_str()?.trim().parse().ok()?;
            Some(m["storeTimestamp"].as_i64()? - sent)
        })
        .collect()
}

fn percentiles(lat: &mut [i64]) -> String {
    if lat.is_empty() {
        return "no messages read back".to_owned();
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    format!(
        "{} msgs: p50 {} ms, p99 {} ms, max {} ms",
        lat.len(),
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    )
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
        .unwrap_or(200_000);
    let wanted = std::env::var("BENCH_BACKLOGS").unwrap_or_else(|_| "one,ten,64".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let first = unique("bench");
    let mut bridge = Bridge::start(dir.path(), &first, None, "");
    // BENCH_PIPELINE_SENDS=never: the bridge sends one topic's messages one at a time, as
    // before issue #17 (the "before" figures).
    if let Ok(mode) = std::env::var("BENCH_PIPELINE_SENDS") {
        let text = std::fs::read_to_string(&bridge.config).unwrap().replacen(
            "[rocketmq]\n",
            &format!("[rocketmq]\npipeline_sends = {mode:?}\n"),
            1,
        );
        std::fs::write(&bridge.config, text).unwrap();
        bridge.process.stop();
        bridge.process.start();
        bridge.wait();
        println!("bridge rocketmq.pipeline_sends = {mode:?}");
    }
    println!(
        "bridge publish_pipeline = {}",
        cloud_bridge_pipeline(&bridge.config)
    );
    println!("direct RocketMQ producer (async, 256 in flight), warm-up (not counted):");
    direct_producer_rate(&first, 256, 5);
    println!("direct RocketMQ producer (async, 256 in flight), before the drains:");
    let java_before = direct_producer_rate(&first, 256, 10);

    let mut drains = Vec::new();
    for (key, name, shape) in [
        ("one", "one topic", (n, 1, 1)),
        ("ten", "ten devices", (n, 10, 500)),
        ("64", "64 topics", (n, 64, 1)),
    ] {
        if wanted.split(',').any(|w| w == key) {
            let (d, agent) = drain(dir.path(), &mut bridge, &first, name, shape, "", |_| {});
            drop(agent);
            drains.push(d);
        }
    }

    println!("direct RocketMQ producer (async, 256 in flight), after the drains:");
    let java_after = direct_producer_rate(&first, 256, 10);
    let java = (java_before + java_after) / 2.0;
    println!("summary (ratio to the direct producer's mean, {java:.0} msg/s):");
    for d in &drains {
        println!(
            "  {:<12} {:>7.0} msg/s = {:.2}x; agent RSS {:.1} MiB holding, {:.1} MiB peak",
            d.name,
            d.rate,
            if java > 0.0 { d.rate / java } else { 0.0 },
            d.hold_rss_mib,
            d.peak_rss_mib
        );
    }

    // Live traffic next to a one-topic drain, with drain = "live-first".
    let live_secs = 20;
    let lat = std::sync::Mutex::new(Vec::new());
    let (d, agent) = drain(
        dir.path(),
        &mut bridge,
        &first,
        "live-first drain",
        (n * 5, 1, 1),
        &format!(
            "drain = \"live-first\"\n{}",
            std::env::var("BENCH_LIVE_UPLINK").unwrap_or_default()
        ),
        |agent| {
            std::thread::sleep(Duration::from_secs(2));
            *lat.lock().unwrap() = live_latency(agent, &first, live_secs);
        },
    );
    let mut lat = lat.into_inner().unwrap();
    // When the slow ones were sent: the latency of each second of the live publisher.
    let per_second: Vec<String> = lat
        .chunks(100)
        .map(|c| format!("{}", c.iter().max().copied().unwrap_or(0)))
        .collect();
    println!(
        "  live latency, worst of each second (ms): {}",
        per_second.join(" ")
    );
    println!(
        "live QoS 1 latency device -> RocketMQ store during the {} msg/s drain: {}",
        d.rate as u64,
        percentiles(&mut lat)
    );

    // Latency at 1k msg/s with no backlog: the first second (the device's connect, the
    // bridge's first route lookup for the topic) is warm-up and not counted.
    let warmup = 1000usize;
    let count = 6000usize;
    let consumer = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"))
        .args(["tool", "consume", "--topic", &first, "--from-end"])
        .args(["--count", &count.to_string(), "--timeout-ms", "60000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    publish_send_times(
        &agent,
        "lat-dev",
        "line/latency",
        count as u64,
        Duration::from_millis(1),
        warmup as u64,
    );
    let mut lat = store_latencies(consumer);
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
