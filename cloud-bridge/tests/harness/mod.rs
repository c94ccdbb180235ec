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

/// A bridge configuration on its own first-level topic, listening on a free port. A SUBACK
/// that registers a wildcard does not wait for rocketmq-mqtt servers
/// (`subscriptions.registration_settle_ms = 0`) unless `extra` sets that key.
pub fn config_text(first: &str, wildcards: &[&str], extra: &str) -> String {
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
namesrv = ["{ns}"]
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
        ns = rocketmq::env("ROCKETMQ_NAMESRV"),
        cluster = rocketmq::env("ROCKETMQ_CLUSTER"),
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

pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}
