//! Broker benchmark (prints figures; not a test): durable QoS 1 ingest with 1 and 10
//! publishers (100-byte payloads, rumqttc 3.1.1 load generator, 100 in flight each) and
//! unloaded QoS 1 publish -> subscribe latency at 1k msg/s, side by side in the same run:
//!
//! - edge-agent (this crate's binary, release build, its own process): every message is
//!   committed to the journal (`synchronous = full`) before its PUBACK;
//! - rumqttd 0.20 (crates.io), run in a child process of this bench: in memory;
//! - Debian's mosquitto, if `/usr/sbin/mosquitto` exists (else reported as skipped):
//!   in memory.
//!
//! Peak RSS is each broker process's VmHWM after the run. Run with
//! `cargo bench -p edge-agent --bench broker_ingest`.
//!
//! For experiments: `BROKER_BENCH_AGENT_ONLY=1` skips rumqttd and mosquitto, and
//! `BROKER_BENCH_CONFIG="old=>new|old=>new"` edits the agent's config text (for example
//! `synchronous = "full"=>synchronous = "off"`). The figures of record use neither.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (agent, addr) = spawn_agent(dir.path());
        measure(
            "edge-agent (durable, journal fsync before PUBACK)",
            addr,
            "up/t",
            agent.id(),
        )
        .await;
        let lat_local = latency(addr, "local/lat").await;
        println!("  edge-agent latency, local-only topic: {lat_local}");
        report_rss("edge-agent", agent.id());
        stop(agent);
        if std::env::var_os("BROKER_BENCH_AGENT_ONLY").is_some() {
            return;
        }

        let port = free_port();
        let rumqttd = Command::new(std::env::current_exe().unwrap())
            .env(RUMQTTD_ENV, port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_port(addr).await;
        measure("rumqttd 0.20 (in memory)", addr, "up/t", rumqttd.id()).await;
        report_rss("rumqttd", rumqttd.id());
        stop(rumqttd);

        let mosquitto = std::path::Path::new("/usr/sbin/mosquitto");
        if mosquitto.exists() {
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
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            wait_port(addr).await;
            measure("mosquitto (Debian, in memory)", addr, "up/t", m.id()).await;
            report_rss("mosquitto", m.id());
            stop(m);
        } else {
            println!(
                "mosquitto: skipped (/usr/sbin/mosquitto not installed; apt-get install mosquitto)"
            );
        }
    });
}

async fn measure(name: &str, addr: SocketAddr, topic: &str, _pid: u32) {
    println!("{name}:");
    for (publishers, per) in [(1usize, 50_000usize), (10, 10_000)] {
        let rate = ingest(addr, topic, publishers, per).await;
        println!("  QoS 1 ingest, {publishers:>2} publisher(s), {PAYLOAD} B: {rate:>9.0} acks/s");
    }
    let lat = latency(addr, "lat/t").await;
    println!("  QoS 1 pub->sub latency at 1k msg/s: {lat}");
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

/// 2000 QoS 1 messages at 1k msg/s to one QoS 1 subscriber; "p50/p99" in µs.
async fn latency(addr: SocketAddr, topic: &str) -> String {
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
        return format!("only {} of {N} received", lat.len());
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    format!("p50 {:.0} µs, p99 {:.0} µs", p(0.50), p(0.99))
}

fn spawn_agent(dir: &std::path::Path) -> (Child, SocketAddr) {
    let config = dir.join("agent.toml");
    let text = edge_agent::config::DEFAULT_CONFIG
        .replace("127.0.0.1:1883", "127.0.0.1:0")
        .replace("127.0.0.1:9181", "127.0.0.1:0")
        .replace("topics = [\"#\"]", "topics = [\"up/#\", \"lat/#\"]")
        .replace("127.0.0.1:9181", "127.0.0.1:0");
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
    (child, addr)
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

fn report_rss(name: &str, pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ? kB")
        .trim_start_matches("VmHWM:")
        .trim()
        .to_owned();
    println!("  {name} peak RSS (VmHWM): {hwm}");
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
