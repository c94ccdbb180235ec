//! Shared helpers of the cloud-bridge integration tests: a bridge per test on a unique
//! first-level topic, real MQTT clients publishing and subscribing through it. The
//! RocketMQ environment and its Java tool, the PKI, the raw MQTT client and unique names
//! are `test_support`'s.
#![allow(dead_code)]

pub mod clients;
pub mod paho_script;
pub mod paho_sessions;
pub mod peer;
pub mod subscriber;

use std::time::Duration;

use cloud_bridge::config::Config;
use cloud_bridge::server::Server;
use test_support::rocketmq;

/// A bridge configuration on its own first-level topic, listening on a free port, on the
/// test RocketMQ. A SUBACK that registers a wildcard does not wait for rocketmq-mqtt
/// servers (`subscriptions.registration_settle_ms = 0`) unless `extra` sets that key.
pub fn config_text(first: &str, wildcards: &[&str], extra: &str) -> String {
    config_on(
        &[rocketmq::env("ROCKETMQ_NAMESRV")],
        &rocketmq::env("ROCKETMQ_CLUSTER"),
        first,
        wildcards,
        extra,
    )
}

/// [`config_text`] on the RocketMQ of name servers `namesrv` (`host:port` each) and
/// cluster `cluster`.
pub fn config_on(
    namesrv: &[String],
    cluster: &str,
    first: &str,
    wildcards: &[&str],
    extra: &str,
) -> String {
    let ns: Vec<String> = namesrv.iter().map(|a| format!("{a:?}")).collect();
    let wild: Vec<String> = wildcards.iter().map(|w| format!("{w:?}")).collect();
    let fast = "registration_settle_ms = 0\n";
    let extra = if extra.contains("registration_settle_ms") {
        extra.to_owned()
    } else if extra.contains("[subscriptions]\n") {
        extra.replacen("[subscriptions]\n", &format!("[subscriptions]\n{fast}"), 1)
    } else {
        format!("{extra}\n[subscriptions]\n{fast}")
    };
    format!(
        r#"
[rocketmq]
namesrv = [{ns}]
cluster = "{cluster}"
send_timeout_ms = 3000
meta_refresh_secs = 1

[topics]
first_level = ["{first}"]
wildcards = [{wild}]
event_notify_retry_topic = "eventNotifyRetryTopic"
client_retry_topic = "clientRetryTopic"
client_p2p_topic = "clientP2pTopic"
queues = 2

[auth]
username = "demo"
secret_key = "test-secret"

[limits]
max_packet_size = 65536
connect_timeout_secs = 2

[metrics]
bind = ""

[[listener]]
name = "mqtt"
bind = "127.0.0.1:0"
{extra}
"#,
        ns = ns.join(", "),
        wild = wild.join(", "),
    )
}

pub fn password(client_id: &str) -> String {
    cloud_bridge::auth::hmac_password("test-secret", client_id)
}

/// Runs `cloud-bridge init` for the config and starts a bridge in-process.
pub async fn start_bridge(text: &str) -> (Server, Config) {
    let config = Config::parse(text, "test").expect("test config");
    cloud_bridge::admin::init(&config).await.expect("init");
    let server = Server::start(config.clone()).await.expect("start bridge");
    (server, config)
}

/// Reads `count` messages of an ordinary topic with a plain RocketMQ consumer (up to
/// 30 s).
pub fn consume(topic: &str, count: usize) -> Vec<serde_json::Value> {
    rocketmq::consume(topic, count, Duration::from_secs(30))
}

/// The test config `text` with the metrics endpoint on 127.0.0.1:0 (`config_text` turns
/// it off).
pub fn with_metrics(text: &str) -> String {
    let on = text.replace(
        "[metrics]\nbind = \"\"",
        "[metrics]\nbind = \"127.0.0.1:0\"",
    );
    assert_ne!(on, text, "the harness config has [metrics]");
    on
}

pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}
