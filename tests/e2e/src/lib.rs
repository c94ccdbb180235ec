//! The end-to-end harness: real processes (`edge-agent` and `cloud-bridge` binaries from
//! this workspace's target directory), the real Apache RocketMQ that
//! `tests/rocketmq/rocketmq.sh` runs on loopback, third-party device clients
//! (`mosquitto_pub`/`mosquitto_sub`) and the plain Java RocketMQ client (`rocketmq.sh
//! tool`) as the cloud application. Everything listens on 127.0.0.1 only.
//!
//! The binaries must be built first (`tests/run.sh` runs `cargo test --workspace
//! --all-targets`, which builds them); a missing binary is a clear panic, never a skip.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod certs;
pub mod proxy;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A workspace binary next to the running test (target/<profile>/<name>).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace`; \
         tests/run.sh does it)",
        path.display()
    );
    path
}

/// `KEY` from the environment, else from tests/rocketmq/run/env (panics when RocketMQ
/// is not running: tests never silently skip).
pub fn rocketmq_env(key: &str) -> String {
    if let Ok(v) = std::env::var(key) {
        return v;
    }
    let file = repo_root().join("tests/rocketmq/run/env");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|_| {
        panic!(
            "RocketMQ is not running ({} missing): run `tests/rocketmq/rocketmq.sh start`",
            file.display()
        )
    });
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{key} missing in {}", file.display()))
}

/// A unique name (first-level topics, gateway ids) so tests do not see each other.
pub fn unique(prefix: &str) -> String {
    let n: u32 = rand::random();
    format!("{prefix}{n:08x}")
}

/// A free loopback port (bound and released: a tiny race other tests never hit, as
/// every test picks its own).
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until `addr` accepts TCP connections (panics with the log if `process` exits).
pub fn wait_listening(addr: SocketAddr, within: Duration, process: &mut Process) {
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            process.running(),
            "{} exited before listening on {addr}:\n{}",
            process.name,
            tail(&process.log_text(), 30)
        );
        assert!(
            Instant::now() < deadline,
            "{} does not listen on {addr}:\n{}",
            process.name,
            tail(&process.log_text(), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A spawned binary with its log file; killed on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `target/<profile>/name args`, logging to `log`.
    pub fn spawn(name: &str, args: Vec<String>, log: PathBuf) -> Self {
        let mut p = Process {
            name: name.to_owned(),
            args,
            log,
            child: None,
        };
        p.start();
        p
    }

    /// Starts it (again).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(bin(&self.name))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL, and wait.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (panics on a non-zero exit).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = c.try_wait().expect("wait") {
                    assert!(
                        status.success(),
                        "{} exited with {status}; log:\n{}",
                        self.name,
                        self.log_text()
                    );
                    return;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("{} did not stop within 30 s after SIGTERM", self.name);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits (up to 30 s) until it listens on 127.0.0.1:`port`.
    pub fn wait_port(&mut self, port: u16) {
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(30),
            self,
        );
    }

    /// Its process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cloud-bridge process on its own first-level topic.
#[derive(Debug)]
pub struct Bridge {
    pub first: String,
    pub port: u16,
    pub config: PathBuf,
    pub process: Process,
}

/// The bridge's secret in these tests.
pub const SECRET: &str = "e2e-secret";

impl Bridge {
    /// Writes a config (`extra` appended), runs `cloud-bridge init`, starts it, and waits
    /// for its listener: plain TCP, or TLS with client certificates required when `pki`
    /// is given.
    pub fn start(dir: &Path, first: &str, pki: Option<&certs::Pki>, extra: &str) -> Bridge {
        let namesrv = rocketmq_env("ROCKETMQ_NAMESRV");
        let cluster = rocketmq_env("ROCKETMQ_CLUSTER");
        Bridge::start_on(dir, first, pki, extra, &namesrv, &cluster)
    }

    /// [`Bridge::start`] on the RocketMQ name servers `namesrv` (`host:port`, several
    /// separated by `;` as `rocketmq.sh cluster env` lists them) of `cluster`.
    pub fn start_on(
        dir: &Path,
        first: &str,
        pki: Option<&certs::Pki>,
        extra: &str,
        namesrv: &str,
        cluster: &str,
    ) -> Bridge {
        let port = free_port();
        let tls = pki.map_or(String::new(), |p| {
            format!(
                "tls = {{ cert = {:?}, key = {:?}, client_ca = {:?}, require_client_cert = true }}",
                p.server_cert, p.server_key, p.ca
            )
        });
        let config = dir.join(format!("bridge-{port}.toml"));
        let text = format!(
            r#"
[rocketmq]
namesrv = [{ns}]
cluster = "{cluster}"
meta_refresh_secs = 1

[topics]
first_level = ["{first}"]
wildcards = ["{first}/#"]
event_notify_retry_topic = "eventNotifyRetryTopic"
client_retry_topic = "clientRetryTopic"
client_p2p_topic = "clientP2pTopic"
queues = 2

[auth]
username = "demo"
secret_key = "{SECRET}"

[limits]
connect_timeout_secs = 5

[metrics]
bind = ""

[[listener]]
name = "mqtt"
bind = "127.0.0.1:{port}"
{tls}
{extra}
"#,
            ns = namesrv
                .split(';')
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        std::fs::write(&config, text).expect("bridge config");
        let init = Command::new(bin("cloud-bridge"))
            .args(["init", "--config"])
            .arg(&config)
            .output()
            .expect("cloud-bridge init");
        assert!(
            init.status.success(),
            "cloud-bridge init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let process = Process::spawn(
            "cloud-bridge",
            vec![
                "run".into(),
                "--config".into(),
                config.display().to_string(),
            ],
            dir.join(format!("bridge-{port}.log")),
        );
        let mut b = Bridge {
            first: first.to_owned(),
            port,
            config,
            process,
        };
        b.wait();
        b
    }

    /// Waits for the listener.
    pub fn wait(&mut self) {
        self.process.wait_port(self.port);
    }

    /// The MQTT password of `client_id` (`cloud-bridge password`).
    pub fn password(&self, client_id: &str) -> String {
        let out = Command::new(bin("cloud-bridge"))
            .args(["password", "--config"])
            .arg(&self.config)
            .arg(client_id)
            .output()
            .expect("cloud-bridge password");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// An edge-agent process with its state directory.
#[derive(Debug)]
pub struct Agent {
    pub gateway: String,
    pub port: u16,
    pub metrics_port: u16,
    pub state: PathBuf,
    pub config: PathBuf,
    pub process: Process,
}

impl Agent {
    /// An agent whose uplink goes to `bridge_addr` (`host:port`), with `uplink_extra`
    /// added to `[uplink]` and `extra` appended to the file.
    pub fn start(dir: &Path, gateway: &str, first: &str, uplink: &str, extra: &str) -> Agent {
        let port = free_port();
        let metrics_port = free_port();
        let state = dir.join(format!("agent-{gateway}"));
        std::fs::create_dir_all(&state).expect("state dir");
        let config = dir.join(format!("agent-{gateway}.toml"));
        let text = format!(
            r##"
[[listener]]
name = "tcp"
bind = "127.0.0.1:{port}"

[metrics]
bind = "127.0.0.1:{metrics_port}"

[uplink]
topics = ["#"]
gateway_id = "{gateway}"
first_level = "{first}"
backoff_min_ms = 100
backoff_max_ms = 1000
{uplink}
{extra}
"##
        );
        std::fs::write(&config, text).expect("agent config");
        let process = Process::spawn(
            "edge-agent",
            vec![
                "run".into(),
                "--config".into(),
                config.display().to_string(),
                "--state-dir".into(),
                state.display().to_string(),
            ],
            dir.join(format!("agent-{gateway}.log")),
        );
        let mut a = Agent {
            gateway: gateway.to_owned(),
            port,
            metrics_port,
            state,
            config,
            process,
        };
        a.wait();
        a
    }

    /// Waits for the device listener.
    pub fn wait(&mut self) {
        self.process.wait_port(self.port);
    }

    /// What `edge-agent status` prints for this agent (and whether it exited 0).
    pub fn status(&self) -> (bool, String) {
        let out = Command::new(bin("edge-agent"))
            .args(["status", "--config"])
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .output()
            .expect("edge-agent status");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// A counter or gauge of the agent's `/metrics` (0 when absent or unreachable).
    pub fn metric(&self, name: &str) -> f64 {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return 0.0;
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Entries waiting in the journal (read from the file, read-only).
    pub fn journal_depth(&self) -> u64 {
        let db = self.state.join("journal.db");
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open journal");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn.query_row("SELECT COUNT(*) FROM entries", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .expect("count entries")
    }

    /// Waits until the journal is empty (everything acknowledged by the bridge).
    pub fn wait_drained(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let depth = self.journal_depth();
            if depth == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "journal still holds {depth} entries after {within:?}; agent log:\n{}",
                tail(&self.process.log_text(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Publishes `lines` (one message per line) from a device with Debian's
/// `mosquitto_pub -l` at `qos`, MQTT 5; panics if it fails.
pub fn device_publish(port: u16, client_id: &str, topic: &str, qos: u8, lines: &[String]) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5"])
        .args(["-i", client_id, "-t", topic, "-q", &qos.to_string(), "-l"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian package mosquitto-clients) is needed");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for l in lines {
            writeln!(stdin, "{l}").expect("write to mosquitto_pub");
        }
    }
    let out = child.wait_with_output().expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads `count` messages of RocketMQ topic `topic` from the start with the plain Java
/// consumer; returns one JSON object per message (topic, queueId, keys, body_utf8,
/// properties, ...).
pub fn consume(topic: &str, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
    let (ok, lines, stderr) = run_consume(topic, count, timeout);
    assert!(
        ok,
        "consume {topic}: got {} of {count}: {stderr}",
        lines.len()
    );
    lines
}

/// Runs the Java consumer from the start of `topic` for up to `count` messages; returns
/// whether it got them all, the messages it printed, and its stderr.
fn run_consume(
    topic: &str,
    count: usize,
    timeout: Duration,
) -> (bool, Vec<serde_json::Value>, String) {
    let out = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"))
        .args(["tool", "consume", "--topic", topic, "--from-start"])
        .args(["--count", &count.to_string()])
        .args(["--timeout-ms", &timeout.as_millis().to_string()])
        .output()
        .expect("rocketmq.sh tool consume");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends one message with the plain Java producer (`--prop K=V` pairs).
pub fn produce(topic: &str, body: &str, props: &[(&str, &str)]) {
    let mut cmd = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"));
    cmd.args(["tool", "produce", "--topic", topic, "--body", body]);
    for (k, v) in props {
        cmd.args(["--prop", &format!("{k}={v}")]);
    }
    let out = cmd.output().expect("rocketmq.sh tool produce");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("SEND_OK"),
        "produce to {topic}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A device subscriber (`mosquitto_sub`, MQTT 5, persistent session `client_id`) that
/// exits after `count` messages; read its lines with [`Subscriber::wait`].
#[derive(Debug)]
pub struct Subscriber {
    child: Child,
}

impl Subscriber {
    /// Subscribes to `filter` at QoS 1 and waits until the subscription is in place
    /// (the retained-free way: `mosquitto_sub` prints nothing until messages come, so
    /// the caller gives it a moment; see `settle`).
    pub fn start(port: u16, client_id: &str, filter: &str, count: usize) -> Subscriber {
        let child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5"])
            .args(["-i", client_id, "-c", "-x", "600", "-q", "1", "-t", filter])
            .args(["-C", &count.to_string(), "-F", "%t %p"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients) is needed");
        std::thread::sleep(Duration::from_millis(500));
        Subscriber { child }
    }

    /// Waits (bounded) for it to receive its messages; returns "topic payload" lines.
    pub fn wait(mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            if self.child.try_wait().expect("wait").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = self.child.wait_with_output().expect("mosquitto_sub output");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The LMQ rocketmq-mqtt (and cloud-bridge) stores an MQTT topic or filter in:
/// `%LMQ%` + the name with `/` as `%` (and a trailing `%` when it has levels).
pub fn lmq_name(topic: &str) -> String {
    let queue = if topic.contains('/') {
        format!("{topic}/")
    } else {
        topic.to_owned()
    };
    format!("%LMQ%{}", queue.replace('/', "%"))
}

/// Waits until `process`'s log contains `needle`.
pub fn wait_log(process: &Process, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !process.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in the log after {within:?}:\n{}",
            tail(&process.log_text(), 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Publishes one message to the bridge as a cloud application (`mosquitto_pub`,
/// MQTT 5, with the bridge's HmacSHA1 password).
pub fn cloud_publish(bridge: &Bridge, client_id: &str, topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &bridge.port.to_string(),
            "-V",
            "mqttv5",
        ])
        .args([
            "-i",
            client_id,
            "-u",
            "demo",
            "-P",
            &bridge.password(client_id),
        ])
        .args(["-t", topic, "-q", "1", "-m", payload])
        .output()
        .expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "cloud publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `[uplink]` lines of an agent talking plain TCP to `bridge` (loopback).
pub fn plain_uplink(bridge: &Bridge, gateway: &str) -> String {
    format!(
        "bridge = \"127.0.0.1:{}\"\nusername = \"demo\"\npassword = {:?}",
        bridge.port,
        bridge.password(gateway)
    )
}

/// Every message of `topic` the Java consumer finds within `timeout` (at least
/// `at_least`, or the call panics): for runs where duplicates make the total unknown.
pub fn consume_all(topic: &str, at_least: usize, timeout: Duration) -> Vec<serde_json::Value> {
    let (_, lines, stderr) = run_consume(topic, at_least * 10 + 1000, timeout);
    assert!(
        lines.len() >= at_least,
        "consume {topic}: got {} of at least {at_least}: {stderr}",
        lines.len()
    );
    lines
}

/// `n` numbered payloads: `m0000000`, `m0000001`, ...
pub fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i:07}")).collect()
}

/// Checks that `got` (consumer output, in queue order) holds every payload of `sent`,
/// that the first copies come in `sent` order, and that every duplicate carries the
/// key of its first copy. Returns the number of duplicates.
pub fn check_delivery(got: &[serde_json::Value], sent: &[String]) -> usize {
    let mut first_key: std::collections::HashMap<&str, &str> = Default::default();
    let mut order = Vec::new();
    let mut dups = 0;
    for m in got {
        let body = m["body_utf8"].as_str().expect("body");
        let key = m["keys"].as_str().expect("KEYS");
        match first_key.get(body) {
            Some(k) => {
                assert_eq!(*k, key, "a duplicate of {body} carries another key");
                dups += 1;
            }
            None => {
                first_key.insert(body, key);
                order.push(body);
            }
        }
    }
    let missing: Vec<&String> = sent
        .iter()
        .filter(|s| !first_key.contains_key(s.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} messages lost, first: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(order.len(), sent.len(), "unexpected messages");
    let sent: Vec<&str> = sent.iter().map(String::as_str).collect();
    assert!(order == sent, "first copies out of order");
    dups
}
