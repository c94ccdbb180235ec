//! Scripted MQTT clients run by Python paho-mqtt 2.x (a third-party client) that report
//! what they receive with every MQTT 5 property: several named clients connect, run
//! steps in order (subscribe with options and identifiers, publish with properties,
//! unsubscribe, sleep, disconnect, connect again), then collect for a while.
//!
//! Spec (JSON): `port`, `secret`, `clients`: {name: {id, proto (5|3), clean, expiry}},
//! `steps`: [{c, op: subscribe, subs: [{filter, qos, no_local, rap, rh}], id} |
//! {c, op: publish, topic, payload, qos, retain, props: {pfi, ct, rt, cd_hex, mei, up:
//! [[k, v]]}} | {c, op: unsubscribe, filter} | {op: sleep, secs} | {c, op: disconnect} |
//! {c, op: connect, expiry, clean} (expiry and clean override the client's)],
//! `collect_secs`.
//! Output (JSON): {suback: {name: [[codes]]}, puback: {name: [codes]}, received: {name:
//! [{topic, payload, qos, retain, pfi, ct, rt, cd_hex, mei, up, sid}]}}.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

const SCRIPT: &str = r#"
import sys, json, time, hmac, hashlib, base64, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions
spec = json.loads(sys.stdin.read())
secret = spec["secret"].encode()
def pw(cid):
    return base64.b64encode(hmac.new(secret, cid.encode(), hashlib.sha1).digest()).decode()
out = {"suback": {}, "puback": {}, "received": {}, "connack": {}}
lock = threading.Lock()
clients = {}
events = {}
def make(name, c):
    v5 = c.get("proto", 5) == 5
    ev = threading.Event(); events[name] = ev
    cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=c["id"],
                     protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                     clean_session=None if v5 else c.get("clean", True))
    cl.username_pw_set("demo", pw(c["id"]))
    out["suback"].setdefault(name, []); out["puback"].setdefault(name, []); out["received"].setdefault(name, [])
    def on_connect(cl, u, f, rc, p=None):
        with lock: out["connack"].setdefault(name, []).append([rc.value, bool(f.session_present)])
        ev.set()
    def on_subscribe(cl, u, mid, codes, p=None):
        with lock: out["suback"][name].append([x.value for x in codes])
        ev.set()
    def on_publish(cl, u, mid, rc, p=None):
        with lock: out["puback"][name].append(rc.value)
        ev.set()
    def on_unsubscribe(cl, u, mid, codes, p=None):
        ev.set()
    def on_message(cl, u, m):
        p = m.properties
        g = lambda a: getattr(p, a, None) if p is not None else None
        cd = g("CorrelationData")
        sid = g("SubscriptionIdentifier")
        rec = {"topic": m.topic, "payload": m.payload.decode("utf-8", "replace"), "qos": m.qos,
               "retain": bool(m.retain), "pfi": g("PayloadFormatIndicator"), "ct": g("ContentType"),
               "rt": g("ResponseTopic"), "cd_hex": cd.hex() if cd is not None else None,
               "mei": g("MessageExpiryInterval"), "up": [list(x) for x in (g("UserProperty") or [])],
               "sid": sorted(sid) if isinstance(sid, list) else ([sid] if sid is not None else [])}
        with lock: out["received"][name].append(rec)
    cl.on_connect, cl.on_subscribe, cl.on_publish = on_connect, on_subscribe, on_publish
    cl.on_unsubscribe, cl.on_message = on_unsubscribe, on_message
    return cl
def connect(name, st={}):
    c = dict(spec["clients"][name]); c.update({k: st[k] for k in ("expiry", "clean") if k in st})
    cl = make(name, c); clients[name] = cl
    ev = events[name]; ev.clear()
    if c.get("proto", 5) == 5:
        props = Properties(PacketTypes.CONNECT)
        if c.get("expiry"):
            props.SessionExpiryInterval = c["expiry"]
        cl.connect("127.0.0.1", spec["port"], keepalive=30, clean_start=c.get("clean", True), properties=props)
    else:
        cl.connect("127.0.0.1", spec["port"], keepalive=30)
    cl.loop_start()
    ev.wait(10)
for name in spec["clients"]:
    if not spec["clients"][name].get("later"):
        connect(name)
for st in spec["steps"]:
    op = st["op"]
    if op == "sleep":
        time.sleep(st["secs"]); continue
    name = st.get("c")
    if op == "connect":
        connect(name, st); continue
    cl, ev = clients[name], events[name]
    v5 = spec["clients"][name].get("proto", 5) == 5
    ev.clear()
    if op == "subscribe":
        subs = []
        for s in st["subs"]:
            if v5:
                o = SubscribeOptions(qos=s.get("qos", 1), noLocal=s.get("no_local", False),
                                     retainAsPublished=s.get("rap", False), retainHandling=s.get("rh", 0))
                subs.append((s["filter"], o))
            else:
                subs.append((s["filter"], s.get("qos", 1)))
        props = None
        if v5 and st.get("id"):
            props = Properties(PacketTypes.SUBSCRIBE); props.SubscriptionIdentifier = st["id"]
        cl.subscribe(subs, properties=props)
        ev.wait(30)
    elif op == "unsubscribe":
        cl.unsubscribe(st["filter"]); ev.wait(10)
    elif op == "disconnect":
        cl.disconnect(); cl.loop_stop()
    elif op == "publish":
        props = None
        pr = st.get("props")
        if v5 and pr:
            props = Properties(PacketTypes.PUBLISH)
            if "pfi" in pr: props.PayloadFormatIndicator = pr["pfi"]
            if "ct" in pr: props.ContentType = pr["ct"]
            if "rt" in pr: props.ResponseTopic = pr["rt"]
            if "cd_hex" in pr: props.CorrelationData = bytes.fromhex(pr["cd_hex"])
            if "mei" in pr: props.MessageExpiryInterval = pr["mei"]
            for k, v in pr.get("up", []): props.UserProperty = (k, v)
        info = cl.publish(st["topic"], st.get("payload", "x").encode(), qos=st.get("qos", 1),
                          retain=st.get("retain", False), properties=props)
        if st.get("qos", 1) > 0:
            ev.wait(10)
        else:
            info.wait_for_publish(5)
time.sleep(spec.get("collect_secs", 3))
for cl in clients.values():
    try:
        cl.disconnect(); cl.loop_stop()
    except Exception:
        pass
print(json.dumps(out), flush=True)
"#;

/// Runs `spec` (see the module docs; `port` and `secret` are filled in) against `addr`.
pub fn run(addr: SocketAddr, secret: &str, mut spec: serde_json::Value) -> serde_json::Value {
    spec["port"] = addr.port().into();
    spec["secret"] = secret.into();
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(spec.to_string().as_bytes())
        .expect("spec written");
    let out = child.wait_with_output().expect("paho script");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "paho script output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The messages `client` received on topics starting with `prefix` (other tests share
/// the broker: a `#` subscriber sees their messages too).
pub fn received<'a>(
    out: &'a serde_json::Value,
    client: &str,
    prefix: &str,
) -> Vec<&'a serde_json::Value> {
    out["received"][client]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| {
                    m["topic"]
                        .as_str()
                        .is_some_and(|t| t.trim_start_matches('/').starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default()
}
