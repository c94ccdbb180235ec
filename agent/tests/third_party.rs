//! Interoperability with third-party clients: Debian's mosquitto_pub/mosquitto_sub
//! (3.1.1 and 5: QoS 0/1/2, retained, persistent session) and Python paho-mqtt 2.x
//! (3.1.1 and 5: keepalive 0, QoS downgrade, retained, will).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{config, start, stop};

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect(
        "mosquitto-clients and python3 with paho-mqtt are needed (tests/setup.sh installs them)",
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mosquitto(tool: &str, port: u16, version: &str, args: &[&str]) -> Command {
    let mut c = Command::new(tool);
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
        .args(args);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_311_and_5() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let port = addr.port();
    tokio::task::spawn_blocking(move || {
        for v in ["mqttv311", "mqttv5"] {
            let sub = mosquitto(
                "mosquitto_sub",
                port,
                v,
                &[
                    "-t",
                    "tp/#",
                    "-q",
                    "2",
                    "-C",
                    "3",
                    "-W",
                    "15",
                    "-v",
                    "-i",
                    &format!("sub-{v}"),
                ],
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            for q in ["0", "1", "2"] {
                let out = run(&mut mosquitto(
                    "mosquitto_pub",
                    port,
                    v,
                    &["-t", &format!("tp/q{q}"), "-q", q, "-m", &format!("m{q}")],
                ));
                assert!(out.status.success(), "{v} pub q{q}: {}", text(&out.stderr));
            }
            let out = sub.wait_with_output().unwrap();
            assert!(out.status.success(), "{v} sub: {}", text(&out.stderr));
            assert_eq!(text(&out.stdout), "tp/q0 m0\ntp/q1 m1\ntp/q2 m2\n", "{v}");

            // Retained.
            let topic = format!("tr/{v}");
            let out = run(&mut mosquitto(
                "mosquitto_pub",
                port,
                v,
                &["-t", &topic, "-q", "1", "-r", "-m", "kept"],
            ));
            assert!(out.status.success());
            let out = run(&mut mosquitto(
                "mosquitto_sub",
                port,
                v,
                &["-t", "tr/#", "-C", "1", "-W", "10", "-v", "-F", "%r %t %p"],
            ));
            let got = text(&out.stdout);
            assert!(got.starts_with("1 tr/"), "{v} retained: {got:?}");

            // Persistent session: subscribe, go away, messages wait, come back.
            let id = format!("ps-{v}");
            let mut args = vec![
                "-t", "tps/#", "-q", "1", "-c", "-i", &id, "-C", "1", "-W", "1",
            ];
            if v == "mqttv5" {
                args.extend(["-x", "600"]);
            }
            let _ = run(&mut mosquitto("mosquitto_sub", port, v, &args));
            for m in ["a", "b"] {
                let out = run(&mut mosquitto(
                    "mosquitto_pub",
                    port,
                    v,
                    &["-t", "tps/x", "-q", "1", "-m", m],
                ));
                assert!(out.status.success());
            }
            let mut args = vec![
                "-t", "tps/#", "-q", "1", "-c", "-i", &id, "-C", "2", "-W", "10",
            ];
            if v == "mqttv5" {
                args.extend(["-x", "600"]);
            }
            let out = run(&mut mosquitto("mosquitto_sub", port, v, &args));
            assert_eq!(
                text(&out.stdout),
                "a\nb\n",
                "{v} queued: {}",
                text(&out.stderr)
            );
        }
    })
    .await
    .unwrap();
    stop(agent).await;
}

const PAHO: &str = r#"
import sys, time, threading, paho.mqtt.client as mqtt
port, proto = int(sys.argv[1]), sys.argv[2]
version = mqtt.MQTTv5 if proto == "5" else mqtt.MQTTv311
got, cond = [], threading.Condition()
def on_message(c, u, m):
    with cond:
        got.append((m.topic, m.payload.decode(), m.qos, m.retain))
        cond.notify_all()
def wait_for(n):
    with cond:
        assert cond.wait_for(lambda: len(got) >= n, timeout=10), got
def client(cid, **kw):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=version)
    return c
sub = client("paho-sub-" + proto)
sub.on_message = on_message
sub.connect("127.0.0.1", port, keepalive=0)  # keepalive 0: no timeout
sub.loop_start()
sub.subscribe("pp/#", qos=1)[0]
time.sleep(0.3)
pub = client("paho-pub-" + proto)
pub.connect("127.0.0.1", port, keepalive=0)
pub.loop_start()
pub.publish("pp/two", b"downgraded", qos=2).wait_for_publish(10)
wait_for(1)
assert got[0] == ("pp/two", "downgraded", 1, False), got
pub.publish("pp/ret", b"kept", qos=1, retain=True).wait_for_publish(10)
wait_for(2)
late = client("paho-late-" + proto)
late.on_message = on_message
late.connect("127.0.0.1", port, keepalive=0)
late.loop_start()
late.subscribe("pp/ret", qos=1)
wait_for(3)
assert ("pp/ret", "kept", 1, True) in got, got
dying = client("paho-dying-" + proto)
dying.will_set("pp/will", b"gone", qos=1)
dying.connect("127.0.0.1", port, keepalive=0)
dying.loop(1)
dying.socket().close()  # no DISCONNECT: the will fires
wait_for(4)
assert ("pp/will", "gone", 1, False) in got, got
pub.publish("pp/ret", b"", qos=1, retain=True).wait_for_publish(10)
print("OK", len(got))
for c in (sub, pub, late):
    c.disconnect()
    c.loop_stop()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_mqtt_311_and_5() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), dir.path()).await;
    let port = addr.port();
    tokio::task::spawn_blocking(move || {
        for proto in ["3", "5"] {
            let out = run(Command::new("timeout").args([
                "60",
                "python3",
                "-c",
                PAHO,
                &port.to_string(),
                proto,
            ]));
            assert!(
                out.status.success() && text(&out.stdout).starts_with("OK"),
                "paho {proto}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    })
    .await
    .unwrap();
    stop(agent).await;
}

const PAHO_WS: &str = r#"
import sys, threading, paho.mqtt.client as mqtt
port = int(sys.argv[1])
got = threading.Event()
def on_message(c, u, m):
    if m.payload == b"over-ws":
        got.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ws-client", protocol=mqtt.MQTTv5, transport="websockets")
c.ws_set_options(path="/mqtt")
c.on_message = on_message
c.connect("127.0.0.1", port, keepalive=30)
c.loop_start()
c.subscribe("ws/#", qos=1)
import time; time.sleep(0.3)
c.publish("ws/t", b"over-ws", qos=1).wait_for_publish(10)
assert got.wait(10), "no message over WebSocket"
c.disconnect()
c.loop_stop()
print("OK")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_over_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.listeners.push(edge_agent::config::ListenerConfig {
        name: "ws".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        websocket: true,
    });
    let (agent, _) = start(c, dir.path()).await;
    let port = agent.local_addr("ws").expect("ws listener").port();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("timeout").args(["60", "python3", "-c", PAHO_WS, &port.to_string()]))
    })
    .await
    .unwrap();
    assert!(
        out.status.success() && text(&out.stdout).starts_with("OK"),
        "paho ws: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    stop(agent).await;
}
