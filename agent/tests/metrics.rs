//! The metrics endpoint and `edge-agent status` on a real agent: after known traffic the
//! scraped counters are exactly what was sent, refused by the journal and delivered;
//! `/health` turns 503 when the journal is gone or a WAL flush failed; `status` prints the running agent's
//! figures, and without an agent says so, shows the journal offline and fails.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use edge_agent::journal::{
    FILE_NAME, Journal, JournalConfig, JournalEnv, NewEntry, Qos, WalSync, WhenFull,
};
use edge_agent::server::Agent;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use support::{config, start, stop};
use test_support::metrics::{self, samples, value};
use test_support::{WAIT, v5};

/// `GET path` on the endpoint.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    metrics::get(addr, path, WAIT).await
}

#[tokio::test]
async fn scrape_counts_exactly_what_was_sent_refused_and_delivered() {
    const N1: usize = 15; // QoS 1 to an uplink topic: 9 fit the journal's quota
    const STORED: usize = 9;
    const N2: usize = 4; // QoS 1 to a local-only topic, delivered to the subscriber
    const N0: usize = 3; // QoS 0 to it
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.journal.max_bytes = 1000; // 9 messages of 100 + 4 topic bytes
    c.journal.when_full = WhenFull::RejectNew;
    c.limits.publish_pipeline = 1;
    c.uplink.topics = vec!["q/#".into()];
    let (agent, addr) = start(c, dir.path()).await;
    let metrics = agent.metrics_addr().expect("metrics endpoint on");

    let (mut sub, _) = v5::Client::connect(v5::options(addr, "sub")).await;
    sub.subscribe("local/#", v5::QoS::AtLeastOnce).await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "pub")).await;
    for i in 0..N1 {
        let payload = vec![b'0' + (i % 10) as u8; 100];
        p.client
            .publish("q/a", v5::QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let mut reasons = Vec::new();
    for _ in 0..N1 {
        match p.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await {
            v5::Packet::PubAck(a) => reasons.push(a.reason),
            _ => unreachable!(),
        }
    }
    let ok = reasons
        .iter()
        .filter(|r| **r == PubAckReason::Success)
        .count();
    assert_eq!(ok, STORED, "{reasons:?}");
    for _ in 0..N2 {
        p.client
            .publish("local/t", v5::QoS::AtLeastOnce, false, &b"y"[..])
            .await
            .unwrap();
        p.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await;
    }
    for _ in 0..N0 {
        p.client
            .publish("local/t", v5::QoS::AtMostOnce, false, &b"x"[..])
            .await
            .unwrap();
    }
    for i in 0..N2 + N0 {
        assert!(
            sub.publish(WAIT).await.is_some(),
            "delivery {i} of {}",
            N2 + N0
        );
    }

    let (code, text) = get(metrics, "/metrics").await;
    assert_eq!(code, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");
    let m = samples(&text);
    let refused = (N1 - STORED) as f64;
    for (key, want) in [
        (
            "edge_agent_publish_received_total{qos=\"1\"}",
            (N1 + N2) as f64,
        ),
        ("edge_agent_publish_received_total{qos=\"0\"}", N0 as f64),
        ("edge_agent_publish_received_total{qos=\"2\"}", 0.0),
        ("edge_agent_publish_refused_total", refused),
        (
            "edge_agent_dropped_total{reason=\"rejected_quota\"}",
            refused,
        ),
        (
            "edge_agent_dropped_total{reason=\"quota_drop_oldest\"}",
            0.0,
        ),
        ("edge_agent_dropped_total{reason=\"subscriber_full\"}", 0.0),
        ("edge_agent_journal_appended_total", STORED as f64),
        ("edge_agent_journal_confirmed_total", 0.0),
        ("edge_agent_journal_entries", STORED as f64),
        ("edge_agent_journal_max_bytes", 1000.0),
        ("edge_agent_delivered_total", (N2 + N0) as f64),
        ("edge_agent_publish_sent_total{qos=\"1\"}", N2 as f64),
        ("edge_agent_publish_sent_total{qos=\"0\"}", N0 as f64),
        ("edge_agent_connections", 2.0),
        ("edge_agent_clients_connected", 2.0),
        ("edge_agent_connections_accepted_total", 2.0),
        ("edge_agent_connections_refused_total", 0.0),
        ("edge_agent_subscribe_requests_total", 1.0),
        ("edge_agent_sessions", 2.0),
    ] {
        assert_eq!(value(&m, key), want, "{key} in\n{text}");
    }
    let stats = agent.journal().stats().await.unwrap();
    assert_eq!(value(&m, "edge_agent_journal_bytes"), stats.bytes as f64);
    assert!(value(&m, "edge_agent_journal_oldest_age_seconds") >= 0.0);
    // Stored publishes were committed and their WAL flushed (`synchronous = full`); a
    // flush covers one or more transactions. (The scrape's own read is one more.)
    let commits = value(&m, "edge_agent_journal_commits_total");
    let flushes = value(&m, "edge_agent_journal_wal_flushes_total");
    assert!(stats.writer.batches as f64 > commits, "{commits} commits");
    assert!(
        flushes >= 1.0 && flushes <= commits,
        "{flushes} flushes, {commits} commits"
    );
    assert!(value(&m, "edge_agent_journal_wal_flush_seconds_total") > 0.0);
    assert!(value(&m, "edge_agent_journal_commit_seconds_total") > 0.0);
    assert_eq!(value(&m, "edge_agent_journal_wal_flush_failed"), 0.0);
    assert_eq!(
        value(&m, "edge_agent_uplink_state{state=\"disabled\"}")
            + value(&m, "edge_agent_uplink_state{state=\"connecting\"}")
            + value(&m, "edge_agent_uplink_state{state=\"connected\"}")
            + value(&m, "edge_agent_uplink_state{state=\"backoff\"}")
            + value(&m, "edge_agent_uplink_state{state=\"refused\"}")
            + value(&m, "edge_agent_uplink_state{state=\"stopped\"}"),
        1.0,
        "exactly one uplink state"
    );

    // /status is the same snapshot as JSON.
    let (code, body) = get(metrics, "/status").await;
    assert_eq!(code, 200);
    let s: edge_agent::metrics::Snapshot = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(s.journal.as_ref().unwrap().entries, STORED as u64);
    assert_eq!(s.server.publish_received, [N0 as u64, (N1 + N2) as u64, 0]);
    let (code, body) = get(metrics, "/health").await;
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(get(metrics, "/nope").await.0, 404);

    sub.disconnect().await;
    p.disconnect().await;
    // The gauges follow the disconnects (bounded wait: the server sees the close).
    let mut open = f64::NAN;
    for _ in 0..100 {
        open = value(
            &samples(&get(metrics, "/metrics").await.1),
            "edge_agent_clients_connected",
        );
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open, 0.0);
    stop(agent).await;
    assert!(
        mqtt::metrics::fetch::get(metrics, "/health", WAIT)
            .await
            .is_err(),
        "the endpoint stops with the agent"
    );
}

#[tokio::test]
async fn health_is_503_when_the_journal_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, _) = start(config(), dir.path()).await;
    let metrics = agent.metrics_addr().unwrap();
    assert_eq!(get(metrics, "/health").await.0, 200);
    agent.journal().close().await.unwrap();
    let (code, body) = get(metrics, "/health").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    // The scrape still answers, without the journal's figures.
    let (code, text) = get(metrics, "/metrics").await;
    assert_eq!(code, 200);
    assert!(!text.contains("edge_agent_journal_entries"), "{text}");
    stop(agent).await;
}

/// A WAL flush that works until told to fail (failure injection: a real disk cannot be
/// made to fail an fdatasync on demand).
#[derive(Debug, Default)]
struct FailingFlush(AtomicBool);

impl WalSync for FailingFlush {
    fn sync(&self, wal: &std::fs::File) -> std::io::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected EIO"));
        }
        wal.sync_data()
    }
}

#[tokio::test]
async fn a_failed_wal_flush_refuses_appends_and_turns_health_503() {
    let dir = tempfile::tempdir().unwrap();
    let flush = Arc::new(FailingFlush::default());
    let env = JournalEnv {
        wal_sync: flush.clone(),
        ..JournalEnv::default()
    };
    let agent = Agent::start_with_env(config(), dir.path(), env)
        .await
        .expect("agent starts");
    let addr = agent.local_addr("tcp").expect("tcp listener");
    let metrics = agent.metrics_addr().unwrap();
    let (mut p, _) = v5::Client::connect(v5::options(addr, "pub")).await;
    let publish = |p: &v5::Client, body: &'static [u8]| {
        let client = p.client.clone();
        async move {
            client
                .publish("s/t", v5::QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
        }
    };
    let puback = |packet: v5::Packet| match packet {
        v5::Packet::PubAck(a) => a.reason,
        other => panic!("{other:?}"),
    };
    publish(&p, b"before").await;
    let ack = p.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await;
    assert_eq!(puback(ack), PubAckReason::Success);
    assert_eq!(get(metrics, "/health").await.0, 200);

    flush.0.store(true, Ordering::SeqCst);
    for body in [&b"during"[..], &b"after"[..]] {
        publish(&p, body).await;
        let ack = p.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await;
        assert_eq!(puback(ack), PubAckReason::UnspecifiedError, "{body:?}");
    }
    // The disk "recovers", but nothing proves what became of the pages the failed flush
    // covered: appends stay refused until a restart.
    flush.0.store(false, Ordering::SeqCst);
    publish(&p, b"later").await;
    let ack = p.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await;
    assert_eq!(puback(ack), PubAckReason::UnspecifiedError);

    let (code, body) = get(metrics, "/health").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("WAL flush failed"), "{body}");
    let (_, text) = get(metrics, "/metrics").await;
    assert_eq!(
        value(&samples(&text), "edge_agent_journal_wal_flush_failed"),
        1.0
    );
    p.disconnect().await;
    stop(agent).await;

    // A restart recovers the journal from the disk: what was committed is there ("during"
    // too: committed, only not known to be flushed; the later ones were never stored),
    // and appends work again.
    let (agent, addr) = start(config(), dir.path()).await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "pub")).await;
    publish(&p, b"restarted").await;
    let ack = p.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await;
    assert_eq!(puback(ack), PubAckReason::Success);
    let entries = agent.journal().peek(100).await.unwrap();
    let bodies: Vec<&[u8]> = entries.iter().map(|e| &e.payload[..]).collect();
    assert_eq!(bodies, vec![&b"before"[..], b"during", b"restarted"]);
    p.disconnect().await;
    stop(agent).await;
}

fn edge_agent(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("STATE_DIRECTORY")
        .env_remove("EDGE_AGENT_CONFIG")
        .output()
        .expect("run edge-agent")
}

/// A config file whose metrics endpoint is `metrics`.
fn config_file(dir: &Path, metrics: SocketAddr) -> String {
    let path = dir.join("status.toml");
    let text = edge_agent::config::DEFAULT_CONFIG.replace("127.0.0.1:9181", &metrics.to_string());
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_prints_the_running_agents_figures() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config(), &dir.path().join("state")).await;
    let (mut p, _) = v5::Client::connect(v5::options(addr, "pub")).await;
    for _ in 0..2 {
        p.client
            .publish("s/t", v5::QoS::AtLeastOnce, false, &b"21.5"[..])
            .await
            .unwrap();
        p.wait_for(|p| matches!(p, v5::Packet::PubAck(_))).await;
    }
    let file = config_file(dir.path(), agent.metrics_addr().unwrap());
    let out = tokio::task::spawn_blocking(move || edge_agent(&["--config", &file, "status"]))
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    for want in [
        "running".to_owned(),
        format!("listeners    tcp {addr}"),
        "connections  1 open, 1 MQTT clients".to_owned(),
        "in 2 (QoS 0/1/2: 0/2/0)".to_owned(),
        "journal      2 entries".to_owned(),
        // Acknowledged one after the other: one flush each.
        "2 WAL flushes (avg ".to_owned(),
        "drops        none".to_owned(),
        "uplink       ".to_owned(),
    ] {
        assert!(stdout.contains(&want), "{want:?} missing in\n{stdout}");
    }
    p.disconnect().await;
    stop(agent).await;
}

#[tokio::test]
async fn status_without_an_agent_says_so_and_shows_the_journal_offline() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let j = Journal::open(state.join(FILE_NAME), &JournalConfig::default())
        .await
        .unwrap();
    for t in ["a/1", "a/2", "a/3"] {
        j.append(NewEntry::new(t, &b"1"[..], Qos::AtLeastOnce))
            .await
            .unwrap();
    }
    j.close().await.unwrap();
    // A port nobody listens on any more.
    let free = SocketAddr::from(([127, 0, 0, 1], test_support::free_port()));
    let file = config_file(dir.path(), free);
    let out = edge_agent(&[
        "--config",
        &file,
        "--state-dir",
        state.to_str().unwrap(),
        "status",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("edge-agent is not running"), "{stderr}");
    assert!(stdout.contains("waiting      3 entries"), "{stdout}");
}

#[tokio::test]
async fn sensor_readings_and_faults_are_exported_by_sensor_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n{}",
        support::process::default_config(),
        r#"
[[sensor]]
id = "gone"
type = "bme280"
bus = "/dev/i2c-99"
address = 0x76
interval_ms = 100
topic = "sensors/gone"

[[sensor]]
id = "sim"
type = "simulated"
quantity = "temperature"
interval_ms = 20
topic = "sensors/sim"
"#
    );
    let mut c = edge_agent::config::Config::parse(&text, "test").unwrap();
    c.journal.quick_check_on_open = false;
    let (agent, _) = start(c, dir.path()).await;
    let metrics = agent.metrics_addr().unwrap();
    let figures = |stats: &[edge_agent::sensors::SensorStats], id: &str| {
        let s = stats.iter().find(|s| s.id == id).unwrap();
        (
            s.readings_published,
            s.errors_of(edge_agent::sensors::FaultKind::MissingDevice),
        )
    };
    // Bounded wait for a fault and a few readings.
    for _ in 0..500 {
        let stats = agent.sensors().stats();
        if figures(&stats, "gone").1 >= 1 && figures(&stats, "sim").0 >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The sensors keep running: the scrape lies between a reading before and after it.
    let before = agent.sensors().stats();
    let m = samples(&get(metrics, "/metrics").await.1);
    let after = agent.sensors().stats();
    let faults = value(
        &m,
        "edge_agent_sensor_errors_total{sensor=\"gone\",kind=\"missing_device\"}",
    );
    assert!(faults >= 1.0);
    assert!(
        (figures(&before, "gone").1 as f64..=figures(&after, "gone").1 as f64).contains(&faults)
    );
    let readings = value(&m, "edge_agent_sensor_readings_total{sensor=\"sim\"}");
    assert!(readings >= 3.0);
    assert!(
        (figures(&before, "sim").0 as f64..=figures(&after, "sim").0 as f64).contains(&readings)
    );
    assert_eq!(
        value(
            &m,
            "edge_agent_sensor_errors_total{sensor=\"sim\",kind=\"nack\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&m, "edge_agent_sensor_readings_total{sensor=\"gone\"}"),
        0.0
    );
    stop(agent).await;
}
