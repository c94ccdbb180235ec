//! Shared test support of the agent: an in-process agent on 127.0.0.1:0 in a temporary
//! state directory, the `edge-agent` binary as a child process, and the paho-mqtt script
//! runner with the agent's prelude (`paho.py`). The MQTT test clients (rumqttc 3.1.1 and
//! 5, raw bytes) are `test_support`'s.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use edge_agent::config::Config;
use edge_agent::server::Agent;

pub mod floods;
pub mod process;
pub mod spawned;

/// The shipped defaults with the TCP listener on an ephemeral port.
pub fn config() -> Config {
    let mut c = Config::load(None).expect("defaults");
    c.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
    c.metrics.bind = Some("127.0.0.1:0".into());
    c.journal.quick_check_on_open = false;
    c
}

pub async fn start(config: Config, dir: &Path) -> (Agent, SocketAddr) {
    let agent = Agent::start(config, dir).await.expect("agent starts");
    let addr = agent.local_addr("tcp").expect("tcp listener");
    (agent, addr)
}

pub async fn stop(agent: Agent) {
    agent.stop(Duration::from_secs(10)).await.expect("stop");
}

/// Runs a Python paho-mqtt 2.x script (after `support/paho.py`) against `port`;
/// panics with its output unless it exits 0 and prints `OK`.
pub fn paho(script: &str, port: u16) {
    paho_after(include_str!("paho.py"), script, port);
}

/// [`paho`] on the blocking pool (the agent runs on this runtime).
pub async fn paho_async(script: &'static str, port: u16) {
    tokio::task::spawn_blocking(move || paho(script, port))
        .await
        .expect("paho script task");
}

/// Runs `prelude` then `script` (Python, paho-mqtt 2.x) with `port` as its first
/// argument, for at most 90 s; panics with its output unless it exits 0 and prints `OK`
/// last.
pub fn paho_after(prelude: &str, script: &str, port: u16) {
    let program = format!("{prelude}\n{script}\nprint(\"OK\")\n");
    let out = std::process::Command::new("timeout")
        .args(["90", "python3", "-c", &program, &port.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 with paho-mqtt 2.x is needed (tests/setup.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "paho script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
