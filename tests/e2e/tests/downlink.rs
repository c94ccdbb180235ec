//! Downlink end to end: a plain RocketMQ producer and, separately, a cloud-side MQTT
//! client publish commands; cloud-bridge delivers them to the agent's persistent session;
//! the agent hands them to local devices (mosquitto_sub), also to a device that was
//! offline when the command came (it waits in that device's persistent session).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use e2e::{Agent, Bridge, Subscriber, cloud_publish, lmq_name, plain_uplink, wait_log};
use test_support::rocketmq::produce;
use test_support::unique;

#[test]
fn commands_from_rocketmq_and_from_mqtt_reach_online_and_offline_devices() {
    let dir = tempfile::tempdir().unwrap();
    let first = unique("e2edown");
    let gateway = unique("gw");
    let bridge = Bridge::start(dir.path(), &first, None, "");
    let agent = Agent::start(
        dir.path(),
        &gateway,
        &first,
        &plain_uplink(&bridge, &gateway),
        "",
    );
    wait_log(&agent.process, "uplink connected", Duration::from_secs(30));

    // A device that subscribes, then goes offline (its session stays on the agent).
    let offline = Subscriber::start(agent.port, "dev-offline", "cmd/#", 1);
    drop(offline.wait(Duration::from_millis(300)));
    // A device that stays online.
    let online = Subscriber::start(agent.port, "dev-online", "cmd/#", 2);
    // Let the agent's downlink subscription reach the bridge.
    std::thread::sleep(Duration::from_secs(1));

    let cloud_topic = format!("{first}/{gateway}/cmd/valve");
    produce(
        &first,
        "open",
        &[
            (
                "INNER_MULTI_DISPATCH",
                &lmq_name(&format!("{first}/{gateway}/cmd/#")),
            ),
            ("originMqttTopic", &cloud_topic),
        ],
    );
    cloud_publish(&bridge, &unique("app"), &cloud_topic, "close");

    let got = online.wait(Duration::from_secs(30));
    assert_eq!(
        got,
        vec!["cmd/valve open", "cmd/valve close"],
        "agent log:\n{}",
        e2e::tail(&agent.process.log_text(), 30)
    );

    // The offline device gets both when it comes back.
    let back = Subscriber::start(agent.port, "dev-offline", "cmd/#", 2);
    let got = back.wait(Duration::from_secs(30));
    assert_eq!(got, vec!["cmd/valve open", "cmd/valve close"]);
}
