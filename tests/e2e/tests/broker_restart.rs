//! The RocketMQ broker restarts while the agent drains a backlog through the bridge:
//! every message arrives, duplicates only within the in-flight window, with the key of
//! the first copy. This stops the shared test broker, so it is the only test in its
//! binary (cargo runs test binaries one at a time).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use e2e::{Agent, Bridge, check_delivery, device_publish, numbered, plain_uplink, wait_log};
use test_support::rocketmq::consume_all;
use test_support::{repo_root, unique};

const WINDOW: usize = 64;

fn broker(action: &str) {
    let st = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"))
        .args([action, "broker"])
        .status()
        .expect("rocketmq.sh");
    assert!(st.success(), "rocketmq.sh {action} broker failed");
}

/// Starts the broker again when dropped, so a failing test does not leave it stopped.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"))
            .args(["start", "broker"])
            .status();
    }
}

#[test]
fn a_broker_restart_during_a_drain_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = unique("e2ermq");
    let gateway = unique("gw");
    let mut bridge = Bridge::start(dir.path(), &first, None, "");
    let uplink = format!(
        "{}\nwindow = {WINDOW}\nmax_rate = 1000",
        plain_uplink(&bridge, &gateway)
    );
    let agent = Agent::start(dir.path(), &gateway, &first, &uplink, "");
    wait_log(&agent.process, "uplink connected", Duration::from_secs(30));
    bridge.process.stop();
    let sent = numbered(4000);
    device_publish(agent.port, "dev-1", "line/d", 1, &sent);
    bridge.process.start();
    bridge.wait();

    // Let the drain run (rate-capped to 1000/s), then take the broker away mid-way.
    std::thread::sleep(Duration::from_millis(1500));
    let _guard = RestartOnDrop;
    broker("stop");
    let depth_while_down = agent.journal_depth();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        agent.journal_depth() >= depth_while_down.saturating_sub(WINDOW as u64),
        "nothing is confirmed while the broker is down"
    );
    broker("start");
    agent.wait_drained(Duration::from_secs(180));
    assert!(depth_while_down > 0, "the broker stopped mid-drain");

    let got = consume_all(&first, sent.len(), Duration::from_secs(15));
    let dups = check_delivery(&got, &sent);
    assert!(
        dups <= 2 * WINDOW,
        "{dups} duplicates for one broker restart"
    );
    eprintln!("broker stopped at journal depth {depth_while_down}: {dups} duplicates");
}
