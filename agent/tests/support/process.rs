//! The `edge-agent` binary as a child process: its config written to the test's
//! directory, its MQTT address read from its log.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use test_support::process::Logged;

/// The shipped defaults with both listeners (MQTT and metrics) on 127.0.0.1:0.
pub fn default_config() -> String {
    edge_agent::config::DEFAULT_CONFIG
        .replace("127.0.0.1:1883", "127.0.0.1:0")
        .replace("127.0.0.1:9181", "127.0.0.1:0")
}

/// `edge-agent --config <dir>/agent.toml --state-dir <dir>/state` (config `text`
/// written first), logging at INFO, without systemd's `STATE_DIRECTORY`.
pub fn command(program: &std::ffi::OsStr, dir: &Path, text: &str) -> Command {
    let config = dir.join("agent.toml");
    std::fs::write(&config, text).unwrap();
    let mut cmd = Command::new(program);
    cmd.arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "info")
        .env_remove("STATE_DIRECTORY");
    cmd
}

/// Starts `edge-agent` with `extra` inserted before `[journal]` in a config whose
/// listeners bind 127.0.0.1:0; returns the child and the bound MQTT address (read from
/// its log; its lines above INFO are echoed).
pub fn spawn(dir: &Path, extra: &str) -> (Child, SocketAddr) {
    let text = default_config().replace("\n[journal]\n", &format!("\n{extra}\n[journal]\n"));
    let program: &std::ffi::OsStr = env!("CARGO_BIN_EXE_edge-agent").as_ref();
    let mut agent = Logged::spawn("edge-agent", &mut command(program, dir, &text), true);
    let addr = agent.addr("listening", Duration::from_secs(30));
    (agent.child, addr)
}

/// Runs `edge-agent journal ...` on the state directory.
pub fn journal(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .arg("journal")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("run edge-agent journal")
}
