//! The uplink's window bounds what a crash or a power cut can send twice: an entry holds
//! its slot from its send until its deletion from the journal is flushed, not only until
//! the bridge's PUBACK. Here the "bridge" is a second edge-agent (any MQTT 5 broker
//! does for the uplink), whose own journal records every message it receives, and the
//! sending agent's WAL flushes are held (failure injection: a real disk cannot be told
//! to stall): the bridge gets exactly `window` messages until the flushes go through
//! again (a lost connection included; cloud messages still come down), then the rest,
//! once each and in order.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use edge_agent::journal::{JournalEnv, WalSync};
use edge_agent::server::Agent;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use support::{config, start, stop};
use test_support::{WAIT, v5};

const WINDOW: u16 = 16;
const MESSAGES: usize = 3 * WINDOW as usize;

/// A WAL flush that waits while the gate is closed.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }
}

impl WalSync for Gate {
    fn sync(&self, wal: &std::fs::File) -> std::io::Result<()> {
        let mut closed = self
            .closed
            .lock()
            .map_err(|_| std::io::Error::other("gate poisoned"))?;
        while *closed {
            closed = self
                .opened
                .wait(closed)
                .map_err(|_| std::io::Error::other("gate poisoned"))?;
        }
        drop(closed);
        wal.sync_data()
    }
}

async fn journaled(agent: &Agent) -> Vec<Vec<u8>> {
    let entries = agent.journal().peek(10 * MESSAGES).await.unwrap();
    entries.into_iter().map(|e| e.payload.to_vec()).collect()
}

/// Waits until `agent`'s journal holds `n` entries (or `WAIT` passed); returns them.
async fn wait_journaled(agent: &Agent, n: usize) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = journaled(agent).await;
        if got.len() >= n || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_entry_holds_its_window_slot_until_its_deletion_is_flushed() {
    let up_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The bridge's port, free for now: the uplink retries until it listens.
    let port = test_support::free_port();

    let gate = Arc::new(Gate::default());
    let mut c = config();
    c.uplink.topics = vec!["line/#".into()];
    c.uplink.bridge = Some(format!("127.0.0.1:{port}"));
    c.uplink.gateway_id = Some("gw".into());
    c.uplink.window = WINDOW;
    c.uplink.backoff_min_ms = 20;
    c.uplink.backoff_max_ms = 100;
    let env = JournalEnv {
        wal_sync: gate.clone(),
        ..JournalEnv::default()
    };
    let agent = Agent::start_with_env(c, dir.path(), env).await.unwrap();
    let addr = agent.local_addr("tcp").unwrap();

    // The device's messages are journaled (and flushed) while the bridge is away.
    let (mut device, _) = v5::Client::connect(v5::options(addr, "dev")).await;
    for i in 0..MESSAGES {
        device
            .client
            .publish("line/a", v5::QoS::AtLeastOnce, false, format!("m{i:03}"))
            .await
            .unwrap();
        match device
            .wait_for(|p| matches!(p, v5::Packet::PubAck(_)))
            .await
        {
            v5::Packet::PubAck(a) => assert_eq!(a.reason, PubAckReason::Success),
            other => panic!("{other:?}"),
        }
    }
    device.disconnect().await;
    // A local device that takes cloud commands.
    let (mut local, _) = v5::Client::connect(v5::options(addr, "actuator")).await;
    local.subscribe("cmd/#", v5::QoS::AtLeastOnce).await;

    // From now on no flush completes, so no confirm is answered.
    gate.set(true);
    let mut up = config();
    up.listeners[0].bind = format!("127.0.0.1:{port}").parse().unwrap();
    up.uplink.topics = vec!["t1/+/line/#".into()];
    let (bridge, _) = start(up.clone(), up_dir.path()).await;

    let first = wait_journaled(&bridge, usize::from(WINDOW)).await;
    assert_eq!(first.len(), usize::from(WINDOW), "sent before any confirm");
    // The bridge acknowledged all of them; still nothing more goes out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        journaled(&bridge).await.len(),
        usize::from(WINDOW),
        "sent beyond the window while confirms wait for their flush"
    );
    assert_eq!(
        agent.uplink().acked.load(Ordering::Relaxed),
        u64::from(WINDOW),
        "acknowledged by the bridge, waiting for their confirm"
    );

    // The connection is lost and comes back: the window's slots are the uplink's, not
    // the connection's, so the new connection has none free either.
    stop(bridge).await;
    let (bridge, bridge_addr) = start(up, up_dir.path()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while agent.uplink().connects.load(Ordering::Relaxed) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        journaled(&bridge).await.len(),
        usize::from(WINDOW),
        "sent beyond the window after a reconnect while confirms wait for their flush"
    );
    // Cloud messages still come down meanwhile.
    let (cloud, _) = v5::Client::connect(v5::options(bridge_addr, "cloud")).await;
    cloud
        .client
        .publish("t1/gw/cmd/valve", v5::QoS::AtLeastOnce, false, "open")
        .await
        .unwrap();
    let down = local.publish(WAIT).await.expect("a cloud command");
    assert_eq!(
        (&down.topic[..], &down.payload[..]),
        (&b"cmd/valve"[..], &b"open"[..])
    );
    cloud.disconnect().await;

    gate.set(false);
    let all = wait_journaled(&bridge, MESSAGES).await;
    let want: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| format!("m{i:03}").into_bytes())
        .collect();
    assert_eq!(all, want, "each once and in order");
    let deadline = tokio::time::Instant::now() + WAIT;
    while agent.journal().stats().await.unwrap().entries > 0 {
        assert!(tokio::time::Instant::now() < deadline, "not all confirmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    local.disconnect().await;
    stop(agent).await;
    stop(bridge).await;
}
