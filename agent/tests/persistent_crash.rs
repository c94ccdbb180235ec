//! Kill -9 with a connected persistent subscriber: the `edge-agent` binary is killed with
//! SIGKILL while a persistent QoS 1 subscriber (Python paho-mqtt, 3.1.1, clean session
//! false) is connected and a publisher streams QoS 1 messages to its topic; 5 rounds on
//! one state directory, the subscriber resuming its session each time. At the end the
//! subscriber resumes once more and drains. Every message whose publish was acknowledged
//! reached the subscriber; a message received twice carries DUP on its later copies.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::Rng;
use support::process;

const ROUNDS: u64 = 5;

/// The paho QoS 1 streamer (arguments: port, start, topic, client id).
const STREAMER: &str = include_str!("support/streamer.py");

/// The persistent subscriber: prints "ready" once subscribed (or resumed), then
/// "<number> <dup>" per message; with a second argument "drain" it leaves after 3 s
/// without messages, else when the connection drops.
const SUBSCRIBER: &str = r#"
import sys, time, threading, paho.mqtt.client as mqtt
port, mode = int(sys.argv[1]), sys.argv[2]
done = threading.Event()
last = [time.time()]
def on_connect(c, userdata, flags, rc, props):
    if flags.session_present:
        print("ready", flush=True)
    else:
        c.subscribe("pc/t", qos=1)
def on_subscribe(c, userdata, mid, rcs, props):
    print("ready", flush=True)
def on_message(c, userdata, m):
    last[0] = time.time()
    print(m.payload.decode(), int(m.dup), flush=True)
def on_disconnect(c, userdata, flags, rc, props):
    done.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pc-sub", clean_session=False,
                protocol=mqtt.MQTTv311)
c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.on_message = on_message
c.on_disconnect = on_disconnect
c.connect("127.0.0.1", port, keepalive=30)
c.loop_start()
for _ in range(600):
    if done.wait(0.1):
        break
    if mode == "drain" and time.time() - last[0] > 3:
        break
c.disconnect()
c.loop_stop()
"#;

fn python(script: &str, args: &[String]) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with paho-mqtt (tests/setup.sh installs it)")
}

/// Reads the child's lines on a thread; the first line is also signalled on `first`.
fn lines(child: &mut Child, first: mpsc::Sender<()>) -> std::thread::JoinHandle<Vec<String>> {
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if got.is_empty() {
                let _ = first.send(());
            }
            got.push(l);
        }
        got
    })
}

/// Starts the subscriber and waits until it is subscribed.
fn subscriber(port: u16, mode: &str) -> (Child, std::thread::JoinHandle<Vec<String>>) {
    let mut sub = python(SUBSCRIBER, &[port.to_string(), mode.to_owned()]);
    let (tx, rx) = mpsc::channel();
    let reader = lines(&mut sub, tx);
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the subscriber is ready");
    (sub, reader)
}

/// (number, dup) of every message line.
fn received(lines: Vec<String>) -> Vec<(u64, bool)> {
    lines
        .iter()
        .filter_map(|l| {
            let (n, dup) = l.split_once(' ')?;
            Some((n.parse().ok()?, dup == "1"))
        })
        .collect()
}

#[test]
fn kill_9_loses_no_acknowledged_message_for_a_connected_persistent_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    let mut got: Vec<(u64, bool)> = Vec::new();
    let mut rng = test_support::crash_rng(
        "kill_9_loses_no_acknowledged_message_for_a_connected_persistent_subscriber",
    );
    for round in 0..ROUNDS {
        let (mut agent, addr) = process::spawn(dir.path(), "");
        let (mut sub, sub_reader) = subscriber(addr.port(), "live");
        let mut streamer = python(
            STREAMER,
            &[
                addr.port().to_string(),
                (round * 1_000_000).to_string(),
                "pc/t".to_owned(),
                "pc-pub".to_owned(),
            ],
        );
        let (tx, first) = mpsc::channel();
        let pub_reader = lines(&mut streamer, tx);
        first
            .recv_timeout(Duration::from_secs(30))
            .expect("the streamer got its first PUBACK");
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1000)));
        agent.kill().unwrap(); // SIGKILL
        agent.wait().unwrap();
        // Both clients see the connection drop and exit (bounded by their own loops).
        assert!(
            streamer.wait().unwrap().success(),
            "streamer, round {round}"
        );
        assert!(sub.wait().unwrap().success(), "subscriber, round {round}");
        acked.extend(
            pub_reader
                .join()
                .unwrap()
                .iter()
                .filter_map(|l| l.trim().parse::<u64>().ok()),
        );
        got.extend(received(sub_reader.join().unwrap()));
    }
    // Resume once more and take whatever is still stored.
    let (mut agent, addr) = process::spawn(dir.path(), "");
    let (mut sub, reader) = subscriber(addr.port(), "drain");
    assert!(sub.wait().unwrap().success(), "draining subscriber");
    got.extend(received(reader.join().unwrap()));
    agent.kill().unwrap();
    agent.wait().unwrap();

    assert!(acked.len() > 100, "only {} acknowledged", acked.len());
    let mut copies: HashMap<u64, Vec<bool>> = HashMap::new();
    for (n, dup) in &got {
        copies.entry(*n).or_default().push(*dup);
    }
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !copies.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages never reached the persistent subscriber, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let bad_dups: Vec<u64> = copies
        .iter()
        .filter(|(_, c)| c.len() > 1 && c[1..].iter().any(|d| !d))
        .map(|(n, _)| *n)
        .collect();
    assert!(
        bad_dups.is_empty(),
        "received again without DUP: {:?}",
        &bad_dups[..bad_dups.len().min(5)]
    );
    let redelivered = copies.values().filter(|c| c.len() > 1).count();
    eprintln!(
        "{ROUNDS} rounds: {} acknowledged, {} received ({} distinct, {} redelivered with DUP)",
        acked.len(),
        got.len(),
        copies.len(),
        redelivered
    );
}
