//! Shared helpers of the cloud-bridge integration tests: the real RocketMQ started by
//! `tests/rocketmq/rocketmq.sh`, a bridge per test on a unique first-level topic, and the
//! plain Java RocketMQ client (`rocketmq.sh tool`) as the third-party reader.
#![allow(dead_code)]

/// Test PKI (shared with the end-to-end tests).
#[allow(unused_imports)] // not every test binary uses it
pub use e2e::certs;
pub mod clients;
pub mod paho_script;
pub mod paho_sessions;
pub mod peer;
pub mod raw;
pub mod subscriber;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cloud_bridge::config::Config;
use cloud_bridge::server::Server;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// RocketMQ addresses (from the environment or tests/rocketmq/run/env).
#[allow(unused_imports)]
pub use e2e::rocketmq_env;

pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{:x}", n & 0xffff_ffff)
}

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
        ns = rocketmq_env("ROCKETMQ_NAMESRV"),
        cluster = rocketmq_env("ROCKETMQ_CLUSTER"),
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

/// Runs the Java tool (the official RocketMQ Java client) and returns its JSON lines.
pub fn tool(args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let out = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"))
        .arg("tool")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rocketmq.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rocketmq.sh tool {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Reads `count` messages of an ordinary topic with a plain RocketMQ consumer.
pub fn consume(topic: &str, count: usize) -> Vec<serde_json::Value> {
    tool(&[
        "consume",
        "--topic",
        topic,
        "--count",
        &count.to_string(),
        "--timeout-ms",
        "30000",
        "--from-start",
    ])
    .expect("plain consumer")
}

/// Max offset of a queue (an LMQ name works) as the Java client sees it.
pub fn max_offset(topic: &str) -> i64 {
    let v = tool(&["max-offset", "--topic", topic]).expect("max-offset");
    v.first()
        .and_then(|o| o["maxOffset"].as_i64())
        .expect("maxOffset in the tool's output")
}

pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}
