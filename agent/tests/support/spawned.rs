//! `edge-agent` as a child process for tests and benchmarks that measure it from outside:
//! its resident memory (`/proc/PID/status`), its `broker.db` on disk, its `/metrics`
//! series and its log. Shared by `tests/abuse.rs` and `benches/abuse.rs`.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{Connect, ConnectProperties, LastWill, Login, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The configuration keys issue #20 added (left out for an older binary).
const ADDED_KEYS: [&str; 13] = [
    "max_concurrent_checks",
    "check_wait_ms",
    "max_connections_per_address",
    "accept_rate_per_address",
    "max_subscriptions",
    "max_filter_length",
    "max_filter_depth",
    "max_retained_bytes",
    "max_queued_bytes",
    "max_sessions",
    "max_db_bytes",
    "max_pending_wills",
    "max_pending_will_bytes",
];

/// The shipped per-address bounds, and the same lines turned off.
pub const PER_ADDRESS: (&str, &str) = (
    "max_connections_per_address = 64 ",
    "accept_rate_per_address = 20 ",
);
pub const NO_PER_ADDRESS: (&str, &str) = (
    "max_connections_per_address = 0 ",
    "accept_rate_per_address = 0 ",
);

/// An `edge-agent` child process on 127.0.0.1:0, its log kept.
pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    pub state: PathBuf,
}

impl Agent {
    /// Starts the agent on the shipped defaults changed by `edit` (applied to the TOML).
    /// The per-address bounds are off (the floods of these tests come from one address):
    /// `PER_ADDRESS` turns them back on.
    pub fn start(dir: &Path, edit: impl FnOnce(String) -> String) -> Agent {
        let text = edit(
            edge_agent::config::DEFAULT_CONFIG
                .replace("127.0.0.1:1883", "127.0.0.1:0")
                .replace("127.0.0.1:9181", "127.0.0.1:0")
                .replace("topics = [\"#\"]", "topics = [\"up/#\"]")
                .replace(PER_ADDRESS.0, NO_PER_ADDRESS.0)
                .replace(PER_ADDRESS.1, NO_PER_ADDRESS.1),
        );

        // EDGE_AGENT_BIN runs another build (one from before issue #20, to see these
        // tests fail there): the keys it does not know are left out of its config.
        let bin = std::env::var_os("EDGE_AGENT_BIN");
        let text = match &bin {
            None => text,
            Some(_) => text
                .lines()
                .filter(|l| {
                    let key = l.split('=').next().unwrap_or_default().trim();
                    !ADDED_KEYS.contains(&key)
                })
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let config = dir.join("agent.toml");
        std::fs::write(&config, text).unwrap();
        let state = dir.join("state");
        let program = bin.unwrap_or_else(|| env!("CARGO_BIN_EXE_edge-agent").into());
        let mut child = Command::new(program)
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edge-agent");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                for (key, what) in [
                    ("listening listener", "mqtt"),
                    ("metrics endpoint", "metrics"),
                ] {
                    if line.contains(key)
                        && let Some(a) = line.split("addr=").nth(1)
                    {
                        let a = a.split_whitespace().next().unwrap_or_default();
                        let a = a.trim_start_matches("Some(").trim_end_matches(')');
                        let _ = tx.send((what, a.to_owned()));
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut metrics) = (None, None);
        while addr.is_none() || metrics.is_none() {
            let (what, a) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("edge-agent reports its addresses");
            let a: SocketAddr = a.parse().expect("address");
            match what {
                "mqtt" => addr = Some(a),
                _ => metrics = Some(a),
            }
        }
        Agent {
            child,
            addr: addr.unwrap(),
            metrics: metrics.unwrap(),
            log,
            state,
        }
    }

    pub fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap()
    }

    /// Peak resident memory so far, MiB.
    pub fn peak_mib(&self) -> u64 {
        self.status_kib("VmHWM:") / 1024
    }

    /// Resident memory now, MiB.
    pub fn rss_mib(&self) -> u64 {
        self.status_kib("VmRSS:") / 1024
    }

    /// `broker.db` with its WAL, bytes.
    pub fn db_bytes(&self) -> u64 {
        ["broker.db", "broker.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.state.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The value of the `/metrics` series `series` (name with labels), 0 if absent.
    pub fn metric(&self, series: &str) -> u64 {
        let mut s = std::net::TcpStream::connect(self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    pub fn log_lines(&self, containing: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(containing))
            .count()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn encode(p: Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    p.write(&mut b, None).expect("encode");
    b.to_vec()
}

pub fn connect5(
    id: &str,
    props: ConnectProperties,
    will: Option<LastWill>,
    login: Option<Login>,
) -> Vec<u8> {
    encode(Packet::Connect(
        Connect {
            keep_alive: 0,
            client_id: id.to_owned(),
            clean_start: true,
            properties: Some(props),
        },
        will,
        login,
    ))
}

/// Sends `bytes` on a new connection; the first packet back (its bytes), empty if the
/// server closed first.
pub async fn first_reply(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 256];
    match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        _ => Vec::new(),
    }
}

/// A client that keeps being served: connects (MQTT 3.1.1), subscribes to `t`, and
/// publishes to it; `true` if its message came back.
pub async fn served(addr: SocketAddr, id: &str, login: Option<(&str, &str)>) -> bool {
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (client, mut ev) = rumqttc::AsyncClient::new(o, 16);
    let topic = format!("served/{id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut subscribed = false;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), ev.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) if !subscribed => {
                subscribed = true;
                client
                    .subscribe(&topic, rumqttc::QoS::AtLeastOnce)
                    .await
                    .unwrap();
            }
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                client
                    .publish(&topic, rumqttc::QoS::AtLeastOnce, false, "alive")
                    .await
                    .unwrap();
            }
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                return p.topic == topic;
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return false,
        }
    }
    false
}
