//! The bridge is down while devices publish: 10,000 QoS 1 messages wait in the agent's
//! journal; when the bridge comes back they all reach RocketMQ, in order, none lost.
//! And a cut or slow link (a proxy that closes or delays the agent's connection): the
//! agent reconnects with backoff, without spinning, and loses nothing.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use e2e::{
    Agent, Bridge, check_delivery, device_publish, numbered, plain_uplink, proxy::Proxy, wait_log,
};
use test_support::rocketmq::{consume, consume_all};
use test_support::unique;

#[test]
fn ten_thousand_messages_wait_for_the_bridge_and_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let first = unique("e2eout");
    let gateway = unique("gw");
    let mut bridge = Bridge::start(dir.path(), &first, None, "");
    let agent = Agent::start(
        dir.path(),
        &gateway,
        &first,
        &plain_uplink(&bridge, &gateway),
        "",
    );
    wait_log(&agent.process, "uplink connected", Duration::from_secs(30));
    bridge.process.stop();

    let sent = numbered(10_000);
    device_publish(agent.port, "dev-1", "line/counter", 1, &sent);
    assert_eq!(
        agent.journal_depth(),
        10_000,
        "every acknowledged message is journaled"
    );

    bridge.process.start();
    bridge.wait();
    agent.wait_drained(Duration::from_secs(300));
    let got = consume(&first, sent.len(), Duration::from_secs(120));
    let dups = check_delivery(&got, &sent);
    assert_eq!(
        dups, 0,
        "the bridge was down before anything was sent: no duplicates"
    );
}

#[test]
fn a_cut_and_a_slow_link_lose_nothing_and_reconnects_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let first = unique("e2enet");
    let gateway = unique("gw");
    let bridge = Bridge::start(dir.path(), &first, None, "");
    let proxy = Proxy::start(([127, 0, 0, 1], bridge.port).into());
    let uplink = plain_uplink(&bridge, &gateway).replace(
        &format!("127.0.0.1:{}", bridge.port),
        &proxy.addr.to_string(),
    );
    let agent = Agent::start(dir.path(), &gateway, &first, &uplink, "");
    wait_log(&agent.process, "uplink connected", Duration::from_secs(30));

    let sent = numbered(3000);
    device_publish(agent.port, "dev-1", "line/a", 1, &sent[..1000]);
    // Cut: every connection closed, new ones refused, for 3 s.
    proxy.cut();
    let before = proxy.connections();
    device_publish(agent.port, "dev-1", "line/a", 1, &sent[1000..2000]);
    std::thread::sleep(Duration::from_secs(3));
    proxy.restore();
    // Slow: every chunk delayed 20 ms, while more comes in.
    proxy.slow(20);
    device_publish(agent.port, "dev-1", "line/a", 1, &sent[2000..]);
    std::thread::sleep(Duration::from_secs(2));
    proxy.restore();
    agent.wait_drained(Duration::from_secs(120));

    let log = agent.process.log_text();
    assert!(
        log.contains("uplink down"),
        "the loss of the link is logged"
    );
    let reconnects = log.matches("uplink connected").count();
    assert!(
        reconnects >= 2,
        "reconnected after the cut ({reconnects} connects)"
    );
    // Backoff 100 ms doubling to 1 s with jitter: about 6 attempts in the 3 s cut, never
    // a tight loop (which would make hundreds).
    let attempts = log.matches("uplink down").count();
    assert!(
        attempts <= 15,
        "{attempts} failed attempts in a 3 s cut: not backing off"
    );
    assert!(
        proxy.connections() > before,
        "it came back through the proxy"
    );

    let got = consume_all(&first, sent.len(), Duration::from_secs(15));
    check_delivery(&got, &sent);
}
