//! The test RocketMQ (`tests/rocketmq/rocketmq.sh`, a real Apache RocketMQ on loopback)
//! and its plain Java client (`rocketmq.sh tool`, the third-party reader and writer).
//!
//! The settings come from the environment (`ROCKETMQ_NAMESRV`, `ROCKETMQ_BROKER`,
//! `ROCKETMQ_CLUSTER`, `ROCKETMQ_BROKER_NAME`) or else from `tests/rocketmq/run/env`,
//! which `rocketmq.sh start` writes. A test that needs RocketMQ and finds neither fails
//! with an error saying how to start it: it is never skipped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::repo_root;

/// The `tests/rocketmq/run/env` file of the workspace.
pub fn env_file() -> PathBuf {
    repo_root().join("tests/rocketmq/run/env")
}

/// A setting (`ROCKETMQ_NAMESRV`, ...): the environment variable when set and not blank,
/// else the line `NAME=value` of the env file, else an error that says how to start
/// RocketMQ.
pub fn setting(name: &str) -> Result<String, String> {
    if let Ok(value) = std::env::var(name)
        && !value.trim().is_empty()
    {
        return Ok(value.trim().to_owned());
    }
    let path = env_file();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{name} is not set and {} cannot be read ({e}): start the test RocketMQ with \
             `tests/rocketmq/rocketmq.sh start` or set {name}",
            path.display()
        )
    })?;
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| format!("{name} is neither set nor in {}", path.display()))
}

/// [`setting`], or a panic with its error.
pub fn env(name: &str) -> String {
    setting(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The name server address(es), `host:port[;host:port...]`.
pub fn namesrv_addr() -> Result<String, String> {
    setting("ROCKETMQ_NAMESRV")
}

/// The broker address, `host:port`.
pub fn broker_addr() -> Result<String, String> {
    setting("ROCKETMQ_BROKER")
}

/// The cluster name (`DefaultCluster` when not configured).
pub fn cluster_name() -> String {
    setting("ROCKETMQ_CLUSTER").unwrap_or_else(|_| "DefaultCluster".to_owned())
}

/// `tests/rocketmq/rocketmq.sh` with `args`.
pub fn script(args: &[&str]) -> Command {
    let mut cmd = Command::new(repo_root().join("tests/rocketmq/rocketmq.sh"));
    cmd.args(args);
    cmd
}

/// Runs `rocketmq.sh cluster ARGS` (start, stop broker-a --kill, env, ...) and returns its
/// stdout; panics when it fails.
pub fn cluster(args: &[&str]) -> String {
    let out = script(&["cluster"])
        .args(args)
        .output()
        .expect("rocketmq.sh");
    assert!(
        out.status.success(),
        "rocketmq.sh cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Which RocketMQ `rocketmq.sh tool` talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instance {
    /// The single test instance (`rocketmq.sh start`).
    Single,
    /// The cluster of two name servers and two brokers (`rocketmq.sh cluster start`).
    Cluster,
}

impl Instance {
    fn prefix(self) -> &'static [&'static str] {
        match self {
            Instance::Single => &[],
            Instance::Cluster => &["cluster"],
        }
    }
}

/// Runs the Java tool on the single instance and returns its JSON lines, or its stderr
/// when it fails.
pub fn tool(args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let out = script(&["tool"])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rocketmq.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rocketmq.sh tool {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(json_lines(&out.stdout))
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs the Java consumer from the start of `topic` for up to `count` messages within
/// `timeout`; returns whether it got them all, the messages it printed (one JSON object
/// each: topic, queueId, queueOffset, keys, body_utf8, properties, ...), and its stderr.
pub fn try_consume(
    on: Instance,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> (bool, Vec<serde_json::Value>, String) {
    let out = script(on.prefix())
        .args(["tool", "consume", "--topic", topic, "--from-start"])
        .args(["--count", &count.to_string()])
        .args(["--timeout-ms", &timeout.as_millis().to_string()])
        .output()
        .expect("rocketmq.sh tool consume");
    (
        out.status.success(),
        json_lines(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads `count` messages of `topic` from the start with the plain Java consumer
/// (panics unless it gets them all within `timeout`).
pub fn consume(topic: &str, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
    let (ok, lines, stderr) = try_consume(Instance::Single, topic, count, timeout);
    assert!(
        ok,
        "consume {topic}: got {} of {count}: {stderr}",
        lines.len()
    );
    lines
}

/// Every message of `topic` the Java consumer finds within `timeout` (at least
/// `at_least`, or the call panics): for runs where duplicates make the total unknown.
pub fn consume_all(topic: &str, at_least: usize, timeout: Duration) -> Vec<serde_json::Value> {
    let (_, lines, stderr) = try_consume(Instance::Single, topic, at_least * 10 + 1000, timeout);
    assert!(
        lines.len() >= at_least,
        "consume {topic}: got {} of at least {at_least}: {stderr}",
        lines.len()
    );
    lines
}

/// Sends one message with the plain Java producer (`--prop K=V` pairs).
pub fn produce(topic: &str, body: &str, props: &[(&str, &str)]) {
    let mut cmd = script(&["tool", "produce", "--topic", topic, "--body", body]);
    for (k, v) in props {
        cmd.args(["--prop", &format!("{k}={v}")]);
    }
    let out = cmd.output().expect("rocketmq.sh tool produce");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("SEND_OK"),
        "produce to {topic}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Max offset of a queue (an LMQ name works) as the Java client sees it.
pub fn max_offset(topic: &str) -> i64 {
    let v = tool(&["max-offset", "--topic", topic]).expect("max-offset");
    v.first()
        .and_then(|o| o["maxOffset"].as_i64())
        .expect("maxOffset in the tool's output")
}
