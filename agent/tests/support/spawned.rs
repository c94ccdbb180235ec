//! `edge-agent` as a child process for tests and benchmarks that measure it from outside:
//! its resident memory (`/proc/PID/status`), its `broker.db` on disk, its `/metrics`
//! series and its log. Shared by `tests/abuse.rs` and `benches/abuse.rs` (with
//! `process.rs` and `floods.rs`).
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use test_support::process::Logged;

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

/// An `edge-agent` child process on 127.0.0.1:0, its log kept; killed when dropped.
pub struct Agent {
    pub process: Logged,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub state: PathBuf,
}

impl Agent {
    /// Starts the agent on the shipped defaults changed by `edit` (applied to the TOML).
    /// The per-address bounds are off (the floods of these tests come from one address):
    /// `PER_ADDRESS` turns them back on.
    pub fn start(dir: &Path, edit: impl FnOnce(String) -> String) -> Agent {
        let text = edit(
            super::process::default_config()
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
        let program = bin.unwrap_or_else(|| env!("CARGO_BIN_EXE_edge-agent").into());
        let mut cmd = super::process::command(&program, dir, &text);
        cmd.env("NO_COLOR", "1");
        let mut process = Logged::spawn("edge-agent", &mut cmd, false);
        let wait = Duration::from_secs(30);
        let addr = process.addr("listening listener", wait);
        let metrics = process.addr("metrics endpoint", wait);
        Agent {
            process,
            addr,
            metrics,
            state: dir.join("state"),
        }
    }

    pub fn status_kib(&self, field: &str) -> u64 {
        let pid = self.process.child.id();
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
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
        self.process.lines_with(containing)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
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
