//! The agent is killed (-9) in the middle of a drain, again and again: every message it
//! acknowledged to the device reaches RocketMQ; duplicates happen only within the
//! in-flight window of each crash, and carry the key of the first copy.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use e2e::{Agent, Bridge, check_delivery, device_publish, numbered, plain_uplink, wait_log};
use rand::Rng;
use test_support::rocketmq::consume_all;
use test_support::{crash_rng, unique};

const WINDOW: usize = 64;
const ROUNDS: usize = 6;

#[test]
fn kill_9_during_a_drain_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = unique("e2ecrash");
    let gateway = unique("gw");
    let mut bridge = Bridge::start(dir.path(), &first, None, "");
    // A rate cap makes the drain last long enough to be interrupted.
    let uplink = format!(
        "{}\nwindow = {WINDOW}\nmax_rate = 1000",
        plain_uplink(&bridge, &gateway)
    );
    let mut agent = Agent::start(dir.path(), &gateway, &first, &uplink, "");
    wait_log(&agent.process, "uplink connected", Duration::from_secs(30));
    bridge.process.stop();
    let sent = numbered(5000);
    device_publish(agent.port, "dev-1", "line/b", 1, &sent);
    bridge.process.start();
    bridge.wait();

    let mut rng = crash_rng("kill_9_during_a_drain_loses_nothing");
    let mut depths = Vec::new();
    for _ in 0..ROUNDS {
        // Kill at a random point 300..1100 ms into the drain.
        let ms = rng.random_range(300..1100);
        std::thread::sleep(Duration::from_millis(ms));
        agent.process.kill9();
        depths.push(agent.journal_depth());
        agent.process.start();
        agent.wait();
    }
    agent.wait_drained(Duration::from_secs(120));
    assert!(
        depths.windows(2).any(|w| w[0] > w[1]) && depths.iter().any(|d| *d > 0),
        "the kills happened mid-drain: depths {depths:?}"
    );

    let got = consume_all(&first, sent.len(), Duration::from_secs(15));
    let dups = check_delivery(&got, &sent);
    assert!(
        dups <= ROUNDS * WINDOW,
        "{dups} duplicates for {ROUNDS} crashes with a window of {WINDOW}"
    );
    eprintln!("{ROUNDS} kills at journal depths {depths:?}: {dups} duplicates");
}
