//! Broker benchmark (prints figures; not a test): durable QoS 1 ingest with 1 and 10
//! publishers (100-byte payloads, rumqttc 3.1.1 load generator, 100 in flight each) and
//! unloaded QoS 1 publish -> subscribe latency at 1k msg/s, side by side in the same run:
//!
//! - edge-agent (this crate's binary, release build, its own process): every message is
//!   committed to the journal and its WAL flushed (`synchronous = full`) before its
//!   PUBACK. For each ingest phase the bench also prints the journal's work, read from
//!   the agent's /metrics: transactions (messages and µs each) and WAL flushes (messages
//!   and µs each);
//! - rumqttd 0.20 (crates.io), run in a child process of this bench: in memory;
//! - Debian's mosquitto, if `/usr/sbin/mosquitto` exists (else reported as skipped):
//!   in memory.
//!
//! The brokers take turns, round after round (`BROKER_BENCH_ROUNDS`, default 3), each
//! started afresh; the summary gives medians and ranges over the rounds, and the agent's
//! ratio to rumqttd within each round (this VM's neighbours move every broker's figures
//! by ±30% from one minute to the next). Peak RSS is each broker process's VmHWM after
//! its run. Run with `cargo bench -p edge-agent --bench broker_ingest`.
//!
//! For experiments: `BROKER_BENCH_AGENT_ONLY=1` skips rumqttd and mosquitto,
//! `BROKER_BENCH_CONFIG="old=>new|old=>new"` edits the agent's config text (for example
//! `synchronous = "full"=>synchronous = "off"`), and `BROKER_BENCH_SCALE=n` publishes n
//! times as many messages (long enough to profile). The figures of record use none.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use test_support::free_port;

const PAYLOAD: usize = 100;
const RUMQTTD_ENV: &str = "BROKER_BENCH_RUMQTTD_PORT";

fn main() {
    if let Ok(port) = std::env::var(RUMQTTD_ENV) {
        run_rumqttd(port.parse().expect("port"));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench binaries
    // without it: then this is not a benchmark run, and nothing is measured.
    if !std::env::args().any(|a| a == "--bench") {
        println!("broker_ingest: run it with `cargo bench -p edge-agent --bench broker_ingest`");
        return;
    }
    let env_num = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env_num("BROKER_BENCH_ROUNDS", 3).max(1);
    let scale = env_num("BROKER_BENCH_SCALE", 1).max(1);
    let agent_only = std::env::var_os("BROKER_BENCH_AGENT_ONLY").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut all: Vec<(&str, Vec<Figures>)> = vec![("edge-agent", Vec::new())];
        if !agent_only {
            all.push(("rumqttd", Vec::new()));
            all.push(("mosquitto", Vec::new()));
        }
        for round in 1..=rounds {
            println!("round {round} of {rounds}");
            for (name, figures) in &mut all {
                let f = match *name {
                    "edge-agent" => run_agent(scale).await,
                    "rumqttd" => run_rumqttd_child(scale).await,
                    _ => run_mosquitto(scale).await,
                };
                if let Some(f) = f {
                    figures.push(f);
                }
            }
        }
        summary(&all);
    });
}

/// One broker's figures in one round.
#[derive(Debug, Clone, Copy)]
struct Figures {
    one: f64,
    ten: f64,
    /// p50, p99 in µs (None: messages were lost).
    latency: Option<(f64, f64)>,
    rss_kib: u64,
}

async fn run_agent(scale: usize) -> Option<Figures> {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr, metrics) = spawn_agent(dir.path());
    let f = measure(
        "edge-agent (durable, journal fsync before PUBACK)",
        addr,
        scale,
        Some(metrics),
    )
    .await;
    let lat_local = latency(addr, "local/lat").await;
    println!(
        "  edge-agent latency, local-only topic: {}",
        show(lat_local)
    );
    let rss_kib = report_rss("edge-agent", agent.id());
    stop(agent);
    Some(Figures { rss_kib, ..f })
}

async fn run_rumqttd_child(scale: usize) -> Option<Figures> {
    let port = free_port();
    let rumqttd = Command::new(std::env::current_exe().unwrap())
        .env(RUMQTTD_ENV, port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some(measure_child("rumqttd 0.20 (in memory)", "rumqttd", rumqttd, port, scale).await)
}

async fn run_mosquitto(scale: usize) -> Option<Figures> {
    let mosquitto = std::path::Path::new("/usr/sbin/mosquitto");
    if !mosquitto.exists() {
        println!(
            "mosquitto: skipped (/usr/sbin/mosquitto not installed; apt-get install mosquitto)"
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let m = Command::new(mosquitto)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some(measure_child("mosquitto (Debian, in memory)", "mosquitto", m, port, scale).await)
}

/// Measures the in-memory broker running as `child` on `port`, then reports its peak RSS
/// and stops it.
async fn measure_child(title: &str, name: &str, child: Child, port: u16, scale: usize) -> Figures {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_port(addr).await;
    let f = measure(title, addr, scale, None).await;
    let rss_kib = report_rss(name, child.id());
    stop(child);
    Figures { rss_kib, ..f }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.0}-{hi:.0}")
}

/// Medians over the rounds, and the agent's ratio to rumqttd within each round.
fn summary(all: &[(&str, Vec<Figures>)]) {
    println!("summary over rounds (median, range):");
    for (name, f) in all {
        let one: Vec<f64> = f.iter().map(|f| f.one).collect();
        let ten: Vec<f64> = f.iter().map(|f| f.ten).collect();
        let p50: Vec<f64> = f.iter().filter_map(|f| f.latency.map(|l| l.0)).collect();
        let p99: Vec<f64> = f.iter().filter_map(|f| f.latency.map(|l| l.1)).collect();
        let rss = f.iter().map(|f| f.rss_kib).max().unwrap_or(0);
        println!(
            "  {name:<10} 1 pub {:>7.0} ({}) acks/s | 10 pub {:>7.0} ({}) acks/s | p50 {:.0} µs, p99 {:.0} µs ({}) | peak RSS {rss} kB",
            median(one.clone()),
            range(&one),
            median(ten.clone()),
            range(&ten),
            median(p50),
            median(p99.clone()),
            range(&p99),
        );
    }
    let agent = all.iter().find(|(n, _)| *n == "edge-agent");
    let rumqttd = all.iter().find(|(n, _)| *n == "rumqttd");
    if let (Some((_, a)), Some((_, r))) = (agent, rumqttd) {
        let one: Vec<f64> = a.iter().zip(r).map(|(a, r)| a.one / r.one).collect();
        let ten: Vec<f64> = a.iter().zip(r).map(|(a, r)| a.ten / r.ten).collect();
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  edge-agent / rumqttd in the same round: 1 pub {} (median {:.2}), 10 pub {} (median {:.2})",
            fmt(&one),
            median(one.clone()),
            fmt(&ten),
            median(ten.clone())
        );
    }
}

fn show(l: Option<(f64, f64)>) -> String {
    match l {
        Some((p50, p99)) => format!("p50 {p50:.0} µs, p99 {p99:.0} µs"),
        None => "messages lost".to_owned(),
    }
}

/// Ingest with 1 and 10 publishers, then latency; with `metrics`, also the journal's
/// commits and WAL flushes during each ingest phase (from the agent's /metrics).
async fn measure(
    name: &str,
    addr: SocketAddr,
    scale: usize,
    metrics: Option<SocketAddr>,
) -> Figures {
    println!("{name}:");
    let mut rates = [0.0; 2];
    for (i, (publishers, per)) in [(1usize, 50_000 * scale), (10, 10_000 * scale)]
        .into_iter()
        .enumerate()
    {
        let before = match metrics {
            Some(m) => Some(JournalWork::scrape(m).await),
            None => None,
        };
        rates[i] = ingest(addr, "up/t", publishers, per).await;
        println!(
            "  QoS 1 ingest, {publishers:>2} publisher(s), {PAYLOAD} B: {:>9.0} acks/s",
            rates[i]
        );
        if let (Some(m), Some(before)) = (metrics, before) {
            let after = JournalWork::scrape(m).await;
            println!("    {}", after.since(&before));
        }
    }
    let lat = latency(addr, "lat/t").await;
    println!("  QoS 1 pub->sub latency at 1k msg/s: {}", show(lat));
    Figures {
        one: rates[0],
        ten: rates[1],
        latency: lat,
        rss_kib: 0,
    }
}

/// The journal's group-commit counters, scraped from the agent's /metrics.
#[derive(Debug, Default)]
struct JournalWork {
    appended: f64,
    commits: f64,
    commit_seconds: f64,
    flushes: f64,
    flush_seconds: f64,
}

impl JournalWork {
    async fn scrape(addr: SocketAddr) -> JournalWork {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut text = String::new();
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
            let _ = s.read_to_string(&mut text).await;
        }
        let get = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0.0)
        };
        JournalWork {
            appended: get("edge_agent_journal_appended_total"),
            commits: get("edge_agent_journal_commits_total"),
            commit_seconds: get("edge_agent_journal_commit_seconds_total"),
            flushes: get("edge_agent_journal_wal_flushes_total"),
            flush_seconds: get("edge_agent_journal_wal_flush_seconds_total"),
        }
    }

    fn since(&self, b: &JournalWork) -> String {
        let n = self.appended - b.appended;
        let c = self.commits - b.commits;
        let f = self.flushes - b.flushes;
        let per = |total: f64, count: f64| if count > 0.0 { total / count } else { 0.0 };
        format!(
            "journal: {c:.0} commits ({:.0} msgs, {:.0} µs each), {f:.0} WAL flushes ({:.0} msgs, {:.0} µs each)",
            per(n, c),
            per((self.commit_seconds - b.commit_seconds) * 1e6, c),
            per(n, f),
            per((self.flush_seconds - b.flush_seconds) * 1e6, f),
        )
    }
}

/// `publishers` clients each publish `per` QoS 1 messages; returns acks per second.
async fn ingest(addr: SocketAddr, topic: &str, publishers: usize, per: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let topic = format!("{topic}/{p}");
        tasks.push(tokio::spawn(async move {
            let mut o = MqttOptions::new(
                format!("bench-{p}-{}", rand::random::<u32>()),
                "127.0.0.1",
                addr.port(),
            );
            o.set_keep_alive(Duration::from_secs(60));
            o.set_inflight(100);
            let (client, mut ev) = AsyncClient::new(o, 1000);
            let feeder = tokio::spawn(async move {
                for _ in 0..per {
                    if client
                        .publish(topic.clone(), QoS::AtLeastOnce, false, vec![b'x'; PAYLOAD])
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                client
            });
            let mut acks = 0;
            while acks < per {
                match tokio::time::timeout(Duration::from_secs(60), ev.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acks += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("load generator: {e}"),
                    Err(_) => panic!("load generator: no progress for 60 s at {acks} acks"),
                }
            }
            let client = feeder.await.unwrap();
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), ev.poll()).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (publishers * per) as f64 / start.elapsed().as_secs_f64()
}

/// 2000 QoS 1 messages at 1k msg/s to one QoS 1 subscriber; p50 and p99 in µs (None if
/// messages were lost).
async fn latency(addr: SocketAddr, topic: &str) -> Option<(f64, f64)> {
    const N: usize = 2000;
    let mut o = MqttOptions::new(
        format!("lat-sub-{}", rand::random::<u32>()),
        "127.0.0.1",
        addr.port(),
    );
    o.set_keep_alive(Duration::from_secs(60));
    let (sub, mut sev) = AsyncClient::new(o, 100);
    sub.subscribe(format!("{topic}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sev.poll().await.unwrap() {
            break;
        }
    }
    let base = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(N);
        while lat.len() < N {
            match tokio::time::timeout(Duration::from_secs(30), sev.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                    let now = base.elapsed().as_nanos() as u64;
                    lat.push(now.saturating_sub(sent));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("latency subscriber: {e}"),
                Err(_) => break,
            }
        }
        lat
    });
    let mut o = MqttOptions::new(
        format!("lat-pub-{}", rand::random::<u32>()),
        "127.0.0.1",
        addr.port(),
    );
    o.set_keep_alive(Duration::from_secs(60));
    let (publisher, mut pev) = AsyncClient::new(o, 100);
    let pump = tokio::spawn(async move {
        while let Ok(e) = pev.poll().await {
            if let Event::Outgoing(Outgoing::Disconnect) = e {
                break;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..N {
        tick.tick().await;
        let mut payload = vec![0u8; PAYLOAD];
        payload[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
        publisher
            .publish(format!("{topic}/x"), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let mut lat = receiver.await.unwrap();
    let _ = publisher.disconnect().await;
    let _ = sub.disconnect().await;
    pump.abort();
    if lat.len() < N {
        println!("  only {} of {N} received", lat.len());
        return None;
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    Some((p(0.50), p(0.99)))
}

/// The agent's process, MQTT address and metrics address.
fn spawn_agent(dir: &std::path::Path) -> (Child, SocketAddr, SocketAddr) {
    let config = dir.join("agent.toml");
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let text = edge_agent::config::DEFAULT_CONFIG
        .replace("127.0.0.1:1883", "127.0.0.1:0")
        .replace("127.0.0.1:9181", &metrics.to_string())
        .replace("topics = [\"#\"]", "topics = [\"up/#\", \"lat/#\"]");
    let text = std::env::var("BROKER_BENCH_CONFIG")
        .unwrap_or_default()
        .split('|')
        .filter_map(|r| r.split_once("=>"))
        .fold(text, |t, (old, new)| t.replace(old, new));
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("addr=").nth(1) {
                let _ = tx.send(a.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .parse()
        .unwrap();
    (child, addr, metrics)
}

fn run_rumqttd(port: u16) {
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20480
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&text).expect("rumqttd config");
    let mut broker = rumqttd::Broker::new(config);
    let _ = broker.start();
}

async fn wait_port(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} does not accept connections");
}

/// Prints and returns the process's peak RSS in kB.
fn report_rss(name: &str, pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ? kB")
        .trim_start_matches("VmHWM:")
        .trim()
        .to_owned();
    println!("  {name} peak RSS (VmHWM): {hwm}");
    hwm.trim_end_matches("kB").trim().parse().unwrap_or(0)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
