//! Scripted MQTT sessions run by Python paho-mqtt 2.x (a third-party client): each session
//! connects (with its own options), runs its operations one after another and reports
//! every reason code as one JSON line. Sessions run `workers` at a time.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

const SCRIPT: &str = r#"
import sys, json, time, hmac, hashlib, base64, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from concurrent.futures import ThreadPoolExecutor
port, workers, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
sessions = json.loads(sys.stdin.read())
def pw(cid):
    return base64.b64encode(hmac.new(secret, cid.encode(), hashlib.sha1).digest()).decode()
def run(s):
    out = {"client_id": s["client_id"][:64], "connack": None, "present": None, "ops": [], "disconnect": None}
    v5 = s.get("proto", 5) == 5
    ev = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s["client_id"],
                    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                    clean_session=None if v5 else s.get("clean", True))
    c.username_pw_set("demo", pw(s["client_id"]))
    if s.get("will_bytes"):
        c.will_set(s.get("will_topic", "w"), b"w" * s["will_bytes"], qos=1)
    def on_connect(c, u, f, rc, p=None):
        out["connack"], out["present"] = rc.value, bool(f.session_present)
        ev.set()
    def on_subscribe(c, u, mid, codes, p=None):
        out["ops"].append(codes[0].value); ev.set()
    def on_publish(c, u, mid, rc, p=None):
        out["ops"].append(rc.value); ev.set()
    def on_unsubscribe(c, u, mid, codes, p=None):
        out["ops"].append(codes[0].value if codes else 0); ev.set()
    def on_disconnect(c, u, f, rc, p=None):
        out["disconnect"] = rc.value; ev.set()
    c.on_connect, c.on_subscribe, c.on_publish, c.on_disconnect = on_connect, on_subscribe, on_publish, on_disconnect
    c.on_unsubscribe = on_unsubscribe
    props = None
    if v5:
        props = Properties(PacketTypes.CONNECT)
        if s.get("expiry"):
            props.SessionExpiryInterval = s["expiry"]
    try:
        if v5:
            c.connect("127.0.0.1", port, keepalive=30, clean_start=s.get("clean", True), properties=props)
        else:
            c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        ev.wait(10)
        if out["connack"] == 0:
            for op in s.get("ops", []):
                ev.clear()
                if op["op"] == "publish":
                    c.publish(op["topic"], op.get("payload", "x").encode(), qos=op.get("qos", 1), retain=op.get("retain", False))
                elif op["op"] == "unsubscribe":
                    c.unsubscribe(op["filter"])
                else:
                    c.subscribe(op["filter"], qos=op.get("qos", 1))
                if not ev.wait(10) or out["disconnect"] is not None:
                    break
        c.disconnect()
        c.loop_stop()
    except Exception as e:
        out["error"] = str(e)
    return json.dumps(out)
with ThreadPoolExecutor(max_workers=workers) as pool:
    for line in pool.map(run, sessions):
        print(line, flush=True)
"#;

/// Runs `sessions` (JSON objects: `client_id`, `proto` 5|3, `clean`, `expiry`,
/// `will_bytes`, `will_topic`, `ops`: `{op: publish, topic, qos, retain, payload}` or
/// `{op: subscribe, filter, qos}` or `{op: unsubscribe, filter}`) against `addr`, `workers` at a time; one result each,
/// in order: `connack`, `present`, `ops` (reason codes), `disconnect`.
pub fn run(
    addr: SocketAddr,
    workers: usize,
    sessions: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            &addr.port().to_string(),
            &workers.to_string(),
            "test-secret",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with paho-mqtt 2.x (pip package paho-mqtt)");
    let input = serde_json::Value::Array(sessions.to_vec()).to_string();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("sessions written");
    let out = child.wait_with_output().expect("paho sessions");
    assert!(
        out.status.success(),
        "paho sessions failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}
