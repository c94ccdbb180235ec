//! Graceful stop loses nothing: the real `edge-agent` binary, run as systemd would run it
//! (`$NOTIFY_SOCKET` and `$WATCHDOG_USEC` set, the notify socket is this test's datagram
//! socket), gets SIGTERM while a 3.1.1 client (rumqttc) streams QoS 1 publishes (20 in flight) and
//! while a persistent subscriber session, offline, has messages queued.
//!
//! Checked: READY=1 (whose STATUS names the bound listener), WATCHDOG=1 pings, STOPPING=1
//! after SIGTERM; exit code 0; every PUBACKed message is in the journal
//! (`edge-agent journal export`); after a restart the persistent session is still there
//! and gets every PUBACKed message.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use test_support::v4;

const TOPIC: &str = "graceful/q";
/// Publishes offered at most; SIGTERM comes after `KILL_AFTER` of them are acknowledged.
const STREAM: u64 = 20_000;
const KILL_AFTER: usize = 1_000;

/// systemd's side of the notify protocol: every datagram the agent sends, in order.
struct Notify {
    lines: Arc<Mutex<Vec<String>>>,
    path: std::path::PathBuf,
}

impl Notify {
    fn bind(dir: &Path, name: &str) -> Notify {
        let path = dir.join(name);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Bounded: the test is over long before 10 minutes.
            let end = Instant::now() + Duration::from_secs(600);
            while Instant::now() < end {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.lock().unwrap().extend(text.lines().map(str::to_owned));
                }
            }
        });
        Notify { lines, path }
    }

    fn seen(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l == line)
    }

    fn count(&self, line: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| *l == line)
            .count()
    }

    /// Waits for READY=1 and returns the listener address its STATUS names.
    fn wait_ready(&self, agent: &mut Child) -> SocketAddr {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if self.seen("READY=1") {
                let lines = self.lines.lock().unwrap();
                let status = lines
                    .iter()
                    .find(|l| l.starts_with("STATUS=") && l.contains("tcp "))
                    .expect("READY comes with a STATUS naming the listeners");
                let addr = status.split("tcp ").nth(1).unwrap();
                let addr = addr.split([',', ' ', ';']).next().unwrap();
                return addr.parse().expect("listener address in STATUS");
            }
            assert!(
                agent.try_wait().unwrap().is_none(),
                "edge-agent exited before READY=1"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no READY=1 within 30 s");
    }
}

fn spawn(dir: &Path, notify: &Notify) -> Child {
    let config = dir.join("agent.toml");
    let text = support::process::default_config().replace(
        "max_queued_messages = 1000 ",
        "max_queued_messages = 100000 ",
    );
    std::fs::write(&config, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "warn")
        .env("NOTIFY_SOCKET", &notify.path)
        // Pings every 100 ms.
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn edge-agent")
}

/// Waits (bounded) for the process to exit; its exit code.
fn wait_exit(agent: &mut Child, within: Duration) -> Option<i32> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Some(status) = agent.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = agent.kill();
    panic!("edge-agent did not exit within {within:?} of SIGTERM");
}

/// Streams QoS 1 publishes of "0", "1", ... (20 in flight) until the connection ends or
/// `STREAM` are offered; returns the acknowledged numbers. Calls `on_acked(count)` after
/// every PUBACK.
async fn stream(addr: SocketAddr, on_acked: impl Fn(usize)) -> Vec<u64> {
    let mut o = MqttOptions::new("streamer", "127.0.0.1", addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(20);
    let (client, mut ev) = AsyncClient::new(o, 64);
    let producer = tokio::spawn(async move {
        for n in 0..STREAM {
            if client
                .publish(TOPIC, QoS::AtLeastOnce, false, n.to_string())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    // Requests go out in order, so the k-th outgoing PUBLISH carries number k.
    let mut next = 0u64;
    let mut in_flight: VecDeque<(u16, u64)> = VecDeque::new();
    let mut acked = Vec::new();
    loop {
        let polled = tokio::time::timeout(Duration::from_secs(30), ev.poll()).await;
        match polled {
            Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                in_flight.push_back((pkid, next));
                next += 1;
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                let i = in_flight
                    .iter()
                    .position(|(p, _)| *p == ack.pkid)
                    .expect("PUBACK for a publish in flight");
                let (_, n) = in_flight.remove(i).unwrap();
                acked.push(n);
                on_acked(acked.len());
                if acked.len() as u64 == STREAM {
                    break;
                }
            }
            Ok(Ok(_)) => {}
            // Connection closed by the stopping agent (or nothing for 30 s).
            Ok(Err(_)) | Err(_) => break,
        }
    }
    producer.abort();
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let notify = Notify::bind(dir.path(), "notify-1.sock");
    let mut agent = spawn(dir.path(), &notify);
    let addr = notify.wait_ready(&mut agent);

    // A persistent session subscribed to the topic, then offline: its queue fills.
    let mut o = v4::options(addr, "keeper");
    o.set_clean_session(false);
    let (mut keeper, _) = v4::Client::connect(o).await;
    keeper.subscribe(TOPIC, QoS::AtLeastOnce).await;
    keeper.disconnect().await;

    // Stream, and SIGTERM the agent once KILL_AFTER publishes are acknowledged.
    let pid = agent.id();
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let k = killed.clone();
    let acked = stream(addr, move |n| {
        if n >= KILL_AFTER && !k.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
    })
    .await;
    assert!(
        killed.load(std::sync::atomic::Ordering::SeqCst),
        "the stream ended before SIGTERM ({} acknowledged)",
        acked.len()
    );
    assert!(
        (acked.len() as u64) < STREAM,
        "SIGTERM did not stop the stream: all {STREAM} publishes acknowledged"
    );
    let code = tokio::task::block_in_place(|| wait_exit(&mut agent, Duration::from_secs(30)));
    assert_eq!(code, Some(0), "exit code after SIGTERM");

    // systemd saw the whole life cycle.
    assert!(notify.seen("READY=1"));
    assert!(
        notify.count("WATCHDOG=1") >= 1,
        "no watchdog ping: {:?}",
        notify.lines.lock().unwrap()
    );
    assert!(notify.seen("STOPPING=1"), "no STOPPING=1");

    // Every acknowledged message is in the journal.
    let export = support::process::journal(dir.path(), &["export"]);
    assert!(
        export.status.success(),
        "journal export: {}",
        String::from_utf8_lossy(&export.stderr)
    );
    let journaled: HashSet<u64> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["payload_utf8"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !journaled.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages are not in the journal, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );

    // Restart: the persistent session is back with every acknowledged message queued.
    let notify2 = Notify::bind(dir.path(), "notify-2.sock");
    let mut agent = spawn(dir.path(), &notify2);
    let addr = notify2.wait_ready(&mut agent);
    let mut o = v4::options(addr, "keeper");
    o.set_clean_session(false);
    let (mut keeper, connack) = v4::Client::connect(o).await;
    match connack {
        Packet::ConnAck(c) => assert!(c.session_present, "the persistent session was lost"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let want: HashSet<u64> = acked.iter().copied().collect();
    let mut got = HashSet::new();
    while !want.is_subset(&got) {
        let Some(p) = keeper.publish(Duration::from_secs(10)).await else {
            break;
        };
        got.insert(String::from_utf8_lossy(&p.payload).parse::<u64>().unwrap());
    }
    let undelivered = want.difference(&got).count();
    assert_eq!(
        undelivered,
        0,
        "{undelivered} of {} acknowledged messages were not delivered to the persistent session after the restart",
        want.len()
    );
    keeper.disconnect().await;
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let code = tokio::task::block_in_place(|| wait_exit(&mut agent, Duration::from_secs(30)));
    assert_eq!(code, Some(0));
    eprintln!(
        "graceful stop: {} acknowledged before SIGTERM, {} journaled, {} delivered after restart",
        acked.len(),
        journaled.len(),
        got.len()
    );
}
