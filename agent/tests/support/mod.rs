//! Shared test support: an in-process agent on 127.0.0.1:0 in a temporary state
//! directory, rumqttc clients (3.1.1 and 5) that hand every incoming packet to a channel,
//! and raw sockets for bad input.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use edge_agent::config::Config;
use edge_agent::server::Agent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub mod spawned;

pub const WAIT: Duration = Duration::from_secs(10);

/// The shipped defaults with the TCP listener on an ephemeral port.
pub fn config() -> Config {
    let mut c = Config::load(None).expect("defaults");
    c.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
    c.metrics.bind = Some("127.0.0.1:0".into());
    c.journal.quick_check_on_open = false;
    c
}

/// The random source of a test that kills processes at random points: seeded from
/// `CRASH_SEED` when set (to replay a failure), else at random. The seed is printed, so a
/// failing run's output says how to replay it.
pub fn crash_rng(test: &str) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{test}: kill points from seed {seed} (replay: CRASH_SEED={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}

pub async fn start(config: Config, dir: &Path) -> (Agent, SocketAddr) {
    let agent = Agent::start(config, dir).await.expect("agent starts");
    let addr = agent.local_addr("tcp").expect("tcp listener");
    (agent, addr)
}

pub async fn stop(agent: Agent) {
    agent.stop(Duration::from_secs(10)).await.expect("stop");
}

pub mod v5 {
    use super::*;
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    pub struct Client {
        pub client: AsyncClient,
        pub rx: mpsc::Receiver<Option<Packet>>,
        task: JoinHandle<()>,
    }

    pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    fn pump(mut ev: EventLoop, tx: mpsc::Sender<Option<Packet>>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Some(p)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(_) => {
                        let _ = tx.send(None).await;
                        return;
                    }
                }
            }
        })
    }

    impl Client {
        /// Connects; returns the client and its CONNACK.
        pub async fn connect(o: MqttOptions) -> (Client, Packet) {
            let (client, ev) = AsyncClient::new(o, 256);
            let (tx, mut rx) = mpsc::channel(4096);
            let task = pump(ev, tx);
            let connack = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("CONNACK in time")
                .flatten()
                .expect("CONNACK");
            (Client { client, rx, task }, connack)
        }

        /// The next packet, `None` when the connection ended or nothing came in `wait`.
        pub async fn next(&mut self, wait: Duration) -> Option<Packet> {
            tokio::time::timeout(wait, self.rx.recv())
                .await
                .ok()
                .flatten()
                .flatten()
        }

        /// The next PUBLISH (other packets are skipped).
        pub async fn publish(&mut self, wait: Duration) -> Option<Publish> {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.next(left).await? {
                    Packet::Publish(p) => return Some(p),
                    _ => continue,
                }
            }
        }

        /// Subscribes and waits for the SUBACK.
        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client.subscribe(filter, qos).await.expect("subscribe");
            self.wait_for(|p| matches!(p, Packet::SubAck(_))).await;
        }

        /// Waits for a packet matching `f`; panics if none comes.
        pub async fn wait_for(&mut self, f: impl Fn(&Packet) -> bool) -> Packet {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let p = self.next(left).await.expect("expected packet");
                if f(&p) {
                    return p;
                }
            }
        }

        /// Drops the connection without DISCONNECT (abnormal end: the will fires).
        pub fn kill(self) {
            self.task.abort();
        }

        pub async fn disconnect(mut self) {
            let _ = self.client.disconnect().await;
            let _ = self.next(Duration::from_millis(300)).await;
            self.task.abort();
        }
    }
}

pub mod v4 {
    use super::*;
    use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions};
    pub use rumqttc::{Packet, Publish, QoS};

    pub struct Client {
        pub client: AsyncClient,
        pub rx: mpsc::Receiver<Option<Packet>>,
        task: JoinHandle<()>,
    }

    pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    fn pump(mut ev: EventLoop, tx: mpsc::Sender<Option<Packet>>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Some(p)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(_) => {
                        let _ = tx.send(None).await;
                        return;
                    }
                }
            }
        })
    }

    impl Client {
        pub async fn connect(o: MqttOptions) -> (Client, Packet) {
            let (client, ev) = AsyncClient::new(o, 256);
            let (tx, mut rx) = mpsc::channel(4096);
            let task = pump(ev, tx);
            let connack = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("CONNACK in time")
                .flatten()
                .expect("CONNACK");
            (Client { client, rx, task }, connack)
        }

        pub async fn next(&mut self, wait: Duration) -> Option<Packet> {
            tokio::time::timeout(wait, self.rx.recv())
                .await
                .ok()
                .flatten()
                .flatten()
        }

        pub async fn publish(&mut self, wait: Duration) -> Option<Publish> {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.next(left).await? {
                    Packet::Publish(p) => return Some(p),
                    _ => continue,
                }
            }
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client.subscribe(filter, qos).await.expect("subscribe");
            self.wait_for(|p| matches!(p, Packet::SubAck(_))).await;
        }

        pub async fn wait_for(&mut self, f: impl Fn(&Packet) -> bool) -> Packet {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let p = self.next(left).await.expect("expected packet");
                if f(&p) {
                    return p;
                }
            }
        }

        pub fn kill(self) {
            self.task.abort();
        }

        pub async fn disconnect(mut self) {
            let _ = self.client.disconnect().await;
            let _ = self.next(Duration::from_millis(300)).await;
            self.task.abort();
        }
    }
}

/// Raw MQTT bytes.
pub mod raw {
    /// A 3.1.1 CONNECT with `keep_alive`, clean session, no credentials.
    pub fn connect_v311(client_id: &str, keep_alive: u16) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
        body.extend_from_slice(&keep_alive.to_be_bytes());
        body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        body.extend_from_slice(client_id.as_bytes());
        let mut p = vec![0x10];
        p.extend(remaining_length(body.len()));
        p.extend(body);
        p
    }

    /// A 3.1.1 CONNECT with a user name and password.
    pub fn connect_v311_auth(client_id: &str, user: &str, password: &str) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 30];
        for s in [client_id, user, password] {
            body.extend_from_slice(&(s.len() as u16).to_be_bytes());
            body.extend_from_slice(s.as_bytes());
        }
        let mut p = vec![0x10];
        p.extend(remaining_length(body.len()));
        p.extend(body);
        p
    }

    /// Sends `connect` on a new connection; returns the CONNACK return code.
    pub async fn connack_code(addr: std::net::SocketAddr, connect: &[u8]) -> u8 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(connect).await.unwrap();
        let mut connack = [0u8; 4];
        tokio::time::timeout(super::WAIT, sock.read_exact(&mut connack))
            .await
            .expect("CONNACK in time")
            .unwrap();
        assert_eq!(connack[0], 0x20);
        connack[3]
    }

    /// A 3.1.1 PUBLISH.
    pub fn publish_v311(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&pkid.to_be_bytes());
        }
        body.extend_from_slice(payload);
        let mut p = vec![0x30 | (qos << 1)];
        p.extend(remaining_length(body.len()));
        p.extend(body);
        p
    }

    pub fn remaining_length(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return out;
            }
        }
    }
}

/// The `edge-agent` binary as a child process.
pub mod process {
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    /// Starts `edge-agent` with `extra` appended to a config whose TCP listener binds
    /// 127.0.0.1:0; returns the child and the bound address (read from its log).
    pub fn spawn(dir: &Path, extra: &str) -> (Child, SocketAddr) {
        let config = dir.join("agent.toml");
        let text = edge_agent::config::DEFAULT_CONFIG
            .replace("127.0.0.1:1883", "127.0.0.1:0")
            .replace("127.0.0.1:9181", "127.0.0.1:0")
            .replace("\n[journal]\n", &format!("\n{extra}\n[journal]\n"));
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("RUST_LOG", "info")
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edge-agent");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !line.contains(" INFO ") {
                    eprintln!("edge-agent: {line}");
                }
                if !sent
                    && line.contains("listening")
                    && let Some(addr) = line.split("addr=").nth(1)
                {
                    let addr = addr
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("edge-agent reports its address")
            .parse()
            .expect("address");
        (child, addr)
    }

    /// Runs `edge-agent journal ...` on the state directory.
    pub fn journal(dir: &Path, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .arg("journal")
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(args)
            .env_remove("STATE_DIRECTORY")
            .output()
            .expect("run edge-agent journal")
    }
}

/// Runs a Python paho-mqtt 2.x script (after `support/paho.py`) against `port`;
/// panics with its output unless it exits 0 and prints `OK`.
pub fn paho(script: &str, port: u16) {
    let program = format!("{}\n{script}\nprint(\"OK\")\n", include_str!("paho.py"));
    let out = std::process::Command::new("timeout")
        .args(["90", "python3", "-c", &program, &port.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 with paho-mqtt 2.x is needed (tests/setup.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "paho script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`paho`] on the blocking pool (the agent runs on this runtime).
pub async fn paho_async(script: &'static str, port: u16) {
    tokio::task::spawn_blocking(move || paho(script, port))
        .await
        .expect("paho script task");
}
