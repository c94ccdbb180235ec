//! The real Apache rocketmq-mqtt beside the test RocketMQ (`tests/peers/rocketmq-mqtt.sh`),
//! and a paho-mqtt 2.x client driver that talks to either server.
//!
//! [`peer`] starts rocketmq-mqtt once per test process (a no-op when it runs already; the
//! first start builds it, 2-4 minutes). Only when Maven Central is unreachable (the build
//! cannot fetch its dependencies) does it return `None`, and the test says it is skipped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use test_support::repo_root;

/// Exit status of `rocketmq-mqtt.sh start|install` when Maven Central is unreachable.
const CENTRAL_UNREACHABLE: i32 = 4;

/// The MQTT address of the running rocketmq-mqtt, or `None` (with a message on stderr)
/// when it cannot be built because Maven Central is unreachable. Any other failure panics.
pub fn peer() -> Option<SocketAddr> {
    static PEER: OnceLock<Option<SocketAddr>> = OnceLock::new();
    *PEER.get_or_init(|| {
        let script = repo_root().join("tests/peers/rocketmq-mqtt.sh");
        let out = Command::new(&script)
            .arg("start")
            .output()
            .expect("tests/peers/rocketmq-mqtt.sh runs");
        if out.status.code() == Some(CENTRAL_UNREACHABLE) {
            eprintln!(
                "SKIPPED: rocketmq-mqtt cannot be built, Maven Central is unreachable: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        assert!(
            out.status.success(),
            "rocketmq-mqtt.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = Command::new(&script)
            .arg("env")
            .output()
            .expect("rocketmq-mqtt.sh env");
        let text = String::from_utf8_lossy(&env.stdout).into_owned();
        let addr = text
            .lines()
            .find_map(|l| l.strip_prefix("ROCKETMQ_MQTT_ADDR="))
            .expect("ROCKETMQ_MQTT_ADDR in rocketmq-mqtt.sh env");
        Some(addr.trim().parse().expect("a socket address"))
    })
}

/// The paho-mqtt driver: one client, described by a JSON spec (see [`Client::spawn`]).
const SCRIPT: &str = r#"
import sys, json, time, hmac, hashlib, base64, threading, os
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
s = json.loads(sys.argv[1])
printing = threading.Lock()
def out(o):
    # Callbacks (network thread) and the main thread print: one whole line at a time.
    with printing:
        sys.stdout.write(json.dumps(o) + "\n")
        sys.stdout.flush()
cid = s["client_id"]
pw = base64.b64encode(hmac.new(s.get("secret", "test-secret").encode(), cid.encode(), hashlib.sha1).digest()).decode()
v5 = s.get("proto", 3) == 5
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                clean_session=None if v5 else s.get("clean", True))
c.username_pw_set(s.get("username", "demo"), pw)
if s.get("will"):
    w = s["will"]
    c.will_set(w["topic"], w.get("payload", "").encode(), qos=w.get("qos", 1))
ev = threading.Event()
state = {"acks": 0}
got = []
def on_connect(c, u, f, rc, p=None):
    out({"connack": rc.value, "present": bool(f.session_present)}); ev.set()
def on_subscribe(c, u, mid, codes, p=None):
    state["codes"] = [x.value for x in codes]; ev.set()
def on_publish(c, u, mid, rc, p=None):
    state["acks"] += 1; ev.set()
def on_message(c, u, m):
    props = []
    if v5 and m.properties is not None and hasattr(m.properties, "UserProperty"):
        props = [list(x) for x in m.properties.UserProperty]
    got.append(1)
    out({"topic": m.topic, "payload": m.payload.decode("utf-8", "replace"), "qos": m.qos,
         "retain": bool(m.retain), "props": props})
c.on_connect, c.on_subscribe, c.on_publish, c.on_message = on_connect, on_subscribe, on_publish, on_message
if v5:
    props = Properties(PacketTypes.CONNECT)
    if s.get("expiry"):
        props.SessionExpiryInterval = s["expiry"]
    c.connect("127.0.0.1", s["port"], keepalive=30, clean_start=s.get("clean", True), properties=props)
else:
    c.connect("127.0.0.1", s["port"], keepalive=30)
c.loop_start()
if not ev.wait(20):
    out({"error": "no CONNACK"}); os._exit(1)
for f, q in s.get("subs", []):
    ev.clear(); t0 = time.time()
    c.subscribe(f, qos=q)
    if not ev.wait(60):
        out({"error": "no SUBACK for " + f}); os._exit(1)
    out({"suback": state["codes"], "filter": f, "ms": int((time.time() - t0) * 1000)})
out({"ready": True})
for p in s.get("pubs", []):
    props = None
    if v5 and p.get("props"):
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [tuple(x) for x in p["props"]]
    before = state["acks"]
    info = c.publish(p["topic"], p.get("payload", "").encode(), qos=p.get("qos", 1),
                     retain=p.get("retain", False), properties=props)
    if p.get("qos", 1) > 0:
        deadline = time.time() + 20
        while state["acks"] == before and time.time() < deadline:
            time.sleep(0.01)
    else:
        info.wait_for_publish(5)
    if p.get("sleep"):
        time.sleep(p["sleep"])
deadline = time.time() + s.get("wait", 0)
while len(got) < s.get("count", 0) and time.time() < deadline:
    time.sleep(0.05)
time.sleep(s.get("linger", 0))
if s.get("crash"):
    # No DISCONNECT: the server publishes the will.
    os._exit(0)
c.disconnect()
c.loop_stop()
out({"done": True})
"#;

/// One running client.
pub struct Client {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Client {
    /// Starts a client. Spec keys: `port`, `client_id`, `proto` (3 or 5), `clean`,
    /// `expiry` (MQTT 5), `will` {topic, payload, qos}, `subs` [[filter, qos]], `pubs`
    /// [{topic, payload, qos, retain, props: [[k, v]], sleep}], then it waits up to `wait`
    /// seconds for `count` messages, lingers `linger` seconds, and disconnects (or, with
    /// `crash`, exits without DISCONNECT). Output: JSON lines (`connack`, `suback`,
    /// `ready`, one per message: `topic`, `payload`, `qos`, `retain`, `props`; `done`).
    pub fn spawn(spec: serde_json::Value) -> Client {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(spec.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with paho-mqtt 2.x");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Client {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits until the client has its SUBACKs (the `ready` line); returns the lines so far.
    pub fn ready(&mut self) -> Vec<serde_json::Value> {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(90)) {
                Ok(v) => {
                    let done = v.get("ready").is_some();
                    assert!(v.get("error").is_none(), "client failed: {v}");
                    self.seen.push(v);
                    if done {
                        return self.seen.clone();
                    }
                }
                Err(e) => panic!("client not ready ({e}); so far: {:?}", self.seen),
            }
        }
    }

    /// Waits for the client to end; returns all its lines.
    pub fn finish(mut self) -> Vec<serde_json::Value> {
        let _ = self.child.wait();
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(v);
        }
        self.seen
    }
}

/// The message lines of a client's output.
pub fn messages(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines.iter().filter(|l| l.get("topic").is_some()).collect()
}

/// Runs a client to its end.
pub fn run(spec: serde_json::Value) -> Vec<serde_json::Value> {
    Client::spawn(spec).finish()
}
