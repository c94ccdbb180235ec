//! The uplink's drain, stage by stage (issue #17), on its protocol core (issue #18): a
//! backlog on two topics drains through a small window to a "bridge" (a second
//! edge-agent: any MQTT 5 server does for the uplink, and this one journals what it
//! receives, advertises topic aliases and a Receive Maximum), arrives once each, in
//! order and under its mapped topics (so the topic aliases the uplink now uses resolve
//! on the server), and every entry is counted in the agent's stage histograms: its
//! PUBACK, its confirm, the journal reads, as `/status` (and `/metrics`) show them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use edge_agent::config::Config;
use edge_agent::journal::{NewEntry, Qos};
use edge_agent::server::Agent;

const WINDOW: u16 = 8;
const MESSAGES: usize = 10 * WINDOW as usize;
const WAIT: Duration = Duration::from_secs(30);

fn config() -> Config {
    let mut c = Config::load(None).expect("defaults");
    c.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
    c.metrics.bind = Some("127.0.0.1:0".into());
    c.journal.quick_check_on_open = false;
    c
}

async fn start(config: Config, dir: &Path) -> Agent {
    Agent::start(config, dir).await.expect("agent starts")
}

async fn scrape(agent: &Agent) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = agent.metrics_addr().expect("metrics endpoint");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_arrives_in_order_and_every_stage_counts_each_entry() {
    let bridge_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut up = config();
    up.uplink.topics = vec!["t1/+/line/#".into()];
    let bridge = start(up, bridge_dir.path()).await;
    let bridge_addr = bridge.local_addr("tcp").unwrap();

    let mut c = config();
    c.uplink.topics = vec!["line/#".into()];
    c.uplink.bridge = Some(bridge_addr.to_string());
    c.uplink.gateway_id = Some("gw".into());
    c.uplink.window = WINDOW;
    let agent = start(c, dir.path()).await;
    for i in 0..MESSAGES {
        let topic = if i % 2 == 0 { "line/a" } else { "line/b" };
        agent
            .journal()
            .append(NewEntry::new(topic, format!("m{i:03}"), Qos::AtLeastOnce))
            .await
            .unwrap();
    }

    // Drained: confirmed in the agent's journal, and each confirm's wait recorded.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = agent.metrics_snapshot().await;
        let drained = s.journal.as_ref().is_some_and(|j| j.entries == 0);
        if drained && s.uplink.confirm.count() == MESSAGES as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not drained: {:?}",
            s.uplink
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let got = bridge.journal().peek(2 * MESSAGES).await.unwrap();
    let got: Vec<(String, Vec<u8>)> = got
        .into_iter()
        .map(|e| (e.topic, e.payload.to_vec()))
        .collect();
    let want: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|i| {
            let topic = if i % 2 == 0 {
                "t1/gw/line/a"
            } else {
                "t1/gw/line/b"
            };
            (topic.to_owned(), format!("m{i:03}").into_bytes())
        })
        .collect();
    assert_eq!(got, want, "each once, in order, under its mapped topic");

    let u = agent.metrics_snapshot().await.uplink;
    assert_eq!(u.sent, MESSAGES as u64, "{u:?}");
    assert_eq!(u.puback.count(), MESSAGES as u64, "a PUBACK wait per entry");
    assert_eq!(
        u.confirm.count(),
        MESSAGES as u64,
        "a confirm wait per entry"
    );
    assert!(u.journal_read.count() >= 1, "{u:?}");
    assert!(u.journal_read_entries >= MESSAGES as u64, "{u:?}");
    assert_eq!((u.window, u.in_flight), (u64::from(WINDOW), 0));

    let text = scrape(&agent).await;
    for line in [
        format!("edge_agent_uplink_puback_seconds_count {MESSAGES}"),
        format!("edge_agent_uplink_puback_seconds_bucket{{le=\"+Inf\"}} {MESSAGES}"),
        format!("edge_agent_uplink_confirm_seconds_count {MESSAGES}"),
        format!("edge_agent_uplink_window {WINDOW}"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("edge_agent_uplink_journal_read_seconds_count ")),
        "{text}"
    );

    agent.stop(Duration::from_secs(10)).await.unwrap();
    bridge.stop(Duration::from_secs(10)).await.unwrap();
}
