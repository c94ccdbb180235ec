//! Helpers shared by the integration tests: where the test RocketMQ runs, unique names.
//!
//! The RocketMQ settings come from the environment (`ROCKETMQ_NAMESRV`, `ROCKETMQ_BROKER`,
//! `ROCKETMQ_CLUSTER`, `ROCKETMQ_BROKER_NAME`) or else from `tests/rocketmq/run/env`,
//! which `tests/rocketmq/rocketmq.sh start` writes. A test that needs RocketMQ and finds
//! neither fails with an error saying how to start it: it is never skipped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// The `tests/rocketmq/run/env` file of the workspace.
pub fn rocketmq_env_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/rocketmq/run/env")
}

/// A RocketMQ setting (`ROCKETMQ_NAMESRV`, ...): the environment variable, else the line
/// `NAME=value` of the env file, else an error that says how to start RocketMQ.
pub fn rocketmq_setting(name: &str) -> Result<String, String> {
    if let Ok(value) = std::env::var(name)
        && !value.trim().is_empty()
    {
        return Ok(value.trim().to_owned());
    }
    let path = rocketmq_env_file();
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

/// The name server address(es), `host:port[;host:port...]`.
pub fn namesrv_addr() -> Result<String, String> {
    rocketmq_setting("ROCKETMQ_NAMESRV")
}

/// The broker address, `host:port`.
pub fn broker_addr() -> Result<String, String> {
    rocketmq_setting("ROCKETMQ_BROKER")
}

/// The cluster name (`DefaultCluster` when not configured).
pub fn cluster_name() -> String {
    rocketmq_setting("ROCKETMQ_CLUSTER").unwrap_or_else(|_| "DefaultCluster".to_owned())
}

/// `prefix` followed by a suffix unique to this process and call, so that tests can share
/// one broker and one name server: letters and digits only.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:08x}{n}", rand::random::<u32>())
}
