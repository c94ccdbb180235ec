#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! Names RocketMQ would misread (`mqtt::cloud_topic`), tried by an authenticated client at
//! every entry point against the real broker, with Python paho-mqtt as the client:
//!
//! - a `,` in a topic split one LMQ name into two in `INNER_MULTI_DISPATCH`, so a gateway
//!   allowed only `{first}/gw-1/#` reached gw-2's command queue and its p2p queue;
//! - a topic over 249 bytes made an LMQ name over 255 bytes, a directory name the broker
//!   cannot create: it then stopped dispatching every LMQ ("File name too long");
//! - `%` collides in LMQ names, U+0001/U+0002 separate message properties.
//!
//! Each attempt must be refused with the MQTT reason code (nothing is stored: no retained
//! record, no wildcard registration), and afterwards the broker still
//! dispatches other clients' messages, and nothing reached a queue outside the attacker's
//! ACL.

mod harness;

use std::process::{Command, Stdio};
use std::time::Duration;

use harness::clients::Proto;
use harness::subscriber::External;
use harness::{config_text, max_offset, password, start_bridge, tool, unique};

/// Runs attempts with paho-mqtt; one JSON result line per attempt.
const ATTEMPTS: &str = r#"
import sys, json, time, hmac, hashlib, base64, threading
import paho.mqtt.client as mqtt
port, cases = int(sys.argv[1]), json.loads(sys.stdin.read())
def pw(cid):
    return base64.b64encode(hmac.new(b"test-secret", cid.encode(), hashlib.sha1).digest()).decode()
from concurrent.futures import ThreadPoolExecutor
def run(case):
    ev = {"connack": None, "suback": None, "puback": None, "disconnect": None}
    done = threading.Event()
    v5 = case["proto"] == 5
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=case["client_id"],
                    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    c.username_pw_set("demo", pw(case["client_id"]))
    if case["kind"] == "will":
        c.will_set(case["topic"], b"gone", qos=1)
    def on_connect(c, u, f, rc, p=None):
        ev["connack"] = rc.value
        if rc.value != 0:
            done.set()
        elif case["kind"] == "subscribe":
            c.subscribe(case["topic"], qos=1)
        elif case["kind"] == "publish":
            c.publish(case["topic"], b"attack", qos=1, retain=case.get("retain", False))
        else:
            done.set()
    def on_subscribe(c, u, mid, codes, p=None):
        ev["suback"] = codes[0].value
        done.set()
    def on_publish(c, u, mid, rc, p=None):
        ev["puback"] = rc.value
        done.set()
    def on_disconnect(c, u, f, rc, p=None):
        ev["disconnect"] = rc.value
        done.set()
    c.on_connect, c.on_subscribe, c.on_publish, c.on_disconnect = on_connect, on_subscribe, on_publish, on_disconnect
    try:
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        done.wait(10)
        time.sleep(0.1)
        c.disconnect()
        c.loop_stop()
    except Exception as e:
        ev["error"] = str(e)
    return json.dumps({"case": case, **ev})
with ThreadPoolExecutor(max_workers=16) as pool:
    for line in pool.map(run, cases):
        print(line, flush=True)
"#;

fn attempts(port: u16, cases: &serde_json::Value) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", ATTEMPTS, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with paho-mqtt 2.x (pip package paho-mqtt)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(cases.to_string().as_bytes())
        .expect("cases written");
    let out = child.wait_with_output().expect("paho attempts");
    assert!(
        out.status.success(),
        "paho attempts failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn kv(namespace: &str, key: &str) -> serde_json::Value {
    tool(&["get-kv", "--namespace", namespace, "--key", key]).expect("get-kv")[0]["value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separators_and_long_names_are_refused_everywhere_and_dispatch_goes_on() {
    let first = unique("inj");
    let acl = format!(
        "[[acl]]\nclients = [\"app-*\"]\npublish = [\"{first}/#\"]\nsubscribe = [\"{first}/#\"]\n\
         [[acl]]\nclients = [\"gw-*\"]\npublish = [\"{first}/{{client}}/#\"]\nsubscribe = [\"{first}/{{client}}/cmd/#\"]\n"
    );
    let (server, _) = start_bridge(&config_text(&first, &[], &acl)).await;
    let addr = server.local_addr("mqtt").expect("listener");
    let gw1 = format!("gw-1{}", unique(""));
    let gw2 = format!("gw-2{}", unique(""));

    // The topics of the audit, and one per refused character; each attempt from a
    // gateway of its own (the attempts run in parallel), inside its own ACL.
    let victim = format!("{first}/{gw2}/cmd/valve");
    let topics = |gw: &str| {
        let mut t = vec![
            format!("{first}/{gw}/x,/LMQ/{victim}"),
            format!("{first}/{gw}/x,/LMQ//p2p/{gw2}"),
            format!("{first}/{gw}/x,,y"),
            format!("{first}/{gw}/{}", "a".repeat(250)),
        ];
        for c in [",", "%", "\u{1}", "\u{2}", "\n", "\u{7f}"] {
            t.push(format!("{first}/{gw}/a{c}b"));
        }
        t
    };
    let mut cases = Vec::new();
    let mut n = 0;
    let mut gw = || {
        n += 1;
        format!("{gw1}-{n}")
    };
    for proto in [5, 3] {
        for i in 0..topics("").len() {
            for (kind, retain) in [("publish", false), ("publish", true), ("will", false)] {
                let g = gw();
                cases.push(serde_json::json!({"kind": kind, "proto": proto,
                    "topic": topics(&g)[i], "retain": retain, "client_id": g}));
            }
            // The filter form of the same name, and a wildcard one.
            let g = gw();
            let filter = topics(&format!("{g}/cmd"))[i].clone();
            cases.push(serde_json::json!({"kind": "subscribe", "proto": proto,
                "topic": filter, "client_id": g}));
            let g = gw();
            let filter = format!("{}/+", topics(&format!("{g}/cmd"))[i]);
            cases.push(serde_json::json!({"kind": "subscribe", "proto": proto,
                "topic": filter, "client_id": g}));
        }
    }
    let attempted: Vec<String> = cases
        .iter()
        .filter(|c| c["retain"] == true)
        .map(|c| c["topic"].as_str().unwrap_or_default().to_owned())
        .collect();
    let retained_before = max_offset("mqttRetained");
    let tried = cases.len();
    let results = attempts(addr.port(), &serde_json::Value::Array(cases));
    assert_eq!(results.len(), tried);
    for r in &results {
        let case = &r["case"];
        let v5 = case["proto"] == 5;
        match case["kind"].as_str().unwrap() {
            "publish" => {
                assert_eq!(r["connack"], 0, "{r}");
                assert!(
                    r["puback"].is_null(),
                    "a refused publish was acknowledged: {r}"
                );
                if v5 {
                    assert_eq!(r["disconnect"], 0x90, "{r}");
                } else {
                    assert!(!r["disconnect"].is_null(), "3.1.1: closed: {r}");
                }
            }
            "will" if v5 => assert_eq!(r["connack"], 0x90, "{r}"),
            // 3.1.1 has no code for it: any refusal.
            "will" => assert!(r["connack"].as_u64().is_some_and(|c| c != 0), "{r}"),
            "subscribe" => {
                assert_eq!(r["connack"], 0, "{r}");
                // 0x8F under MQTT 5, 0x80 (failure) under 3.1.1.
                let expected = if v5 { 0x8F } else { 0x80 };
                assert_eq!(r["suback"], expected, "{r}");
            }
            other => panic!("{other}"),
        }
    }

    // Client identifiers: separators, wildcards, levels, controls, and 60,000 bytes.
    let mut cases = Vec::new();
    for proto in [5, 3] {
        for id in [
            "gw-a,b".to_owned(),
            "gw-a%b".to_owned(),
            "gw-a/b".to_owned(),
            "gw-+".to_owned(),
            "gw-#".to_owned(),
            "gw-a\u{2}b".to_owned(),
            format!("gw-{}", "c".repeat(60_000)),
            format!("gw-{}", "c".repeat(126)),
        ] {
            cases.push(serde_json::json!({"kind": "connect", "proto": proto, "client_id": id}));
        }
    }
    for r in attempts(addr.port(), &serde_json::Value::Array(cases)) {
        // 0x85 under MQTT 5; 3.1.1 return code 2, which paho shows as 0x85 too.
        assert_eq!(r["connack"], 0x85, "{}", r["case"]["client_id"]);
    }

    // Nothing stored outside RocketMQ's log: no retained entry, no wildcard registered.
    let config = cloud_bridge::config::Config::parse(&config_text(&first, &[], ""), "t").unwrap();
    // The retained table (a compaction topic) got no record, as the Java client sees it.
    assert_eq!(max_offset(&config.topics.retained_topic), retained_before);
    assert!(!attempted.is_empty());
    // The Java client's view of the wildcard list of this first-level topic: none.
    let wildcards = kv("LMQ", &first);
    assert!(wildcards.is_null() || wildcards == "", "{wildcards}");
    for bad in [
        format!("{first}/a,b/+"),
        format!("{first}/a%b/+"),
        format!("{first}/{}/+", "a".repeat(250)),
    ] {
        assert!(
            cloud_bridge::admin::wildcard_add(&config, &bad)
                .await
                .is_err(),
            "wildcard add {bad:?}"
        );
    }

    // The broker still dispatches: gw-2 gets an application's command, and that command
    // is the only message in gw-2's queues.
    let sub = External::paho(
        addr,
        Proto::V5,
        &gw2,
        &password(&gw2),
        &format!("{first}/{gw2}/cmd/#"),
        1,
        1,
    );
    let app = format!("app-{}", unique(""));
    tokio::time::sleep(Duration::from_secs(2)).await;
    harness::clients::paho_publish(
        addr,
        Proto::V311,
        &app,
        &password(&app),
        &harness::clients::Msg {
            topic: victim.clone(),
            qos: 1,
            payload: b"close".to_vec(),
            user: Vec::new(),
        },
    );
    let lines = sub.lines();
    assert_eq!(lines, vec![format!("{victim} close 1")]);
    assert_eq!(max_offset(&cloud_bridge::lmq::lmq_name(&victim)), 1);
    assert_eq!(max_offset(&cloud_bridge::lmq::p2p_lmq(&gw2)), 0);
    server.stop(Duration::from_secs(2)).await;
}
