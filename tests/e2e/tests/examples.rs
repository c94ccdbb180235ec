//! The minimal configurations a newcomer starts from, `conf/examples/cloud-bridge.toml`
//! and `conf/examples/edge-agent.toml`, validate and run: a device's publish goes through
//! an agent and a bridge started from them to a plain RocketMQ consumer.
//!
//! The files are used as shipped except for what only a test must change: the
//! certificate paths (a test PKI), the addresses (free loopback ports, the test RocketMQ),
//! the first-level topic and the gateway id (unique per run, so other tests' messages do
//! not mix in), and the metrics endpoints (off: their default ports may be in use).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use e2e::{Process, bin, device_publish};
use test_support::certs::Pki;
use test_support::rocketmq::{self, consume};
use test_support::{free_port, repo_root, unique};

fn example(name: &str) -> (std::path::PathBuf, String) {
    let path = repo_root().join("conf/examples").join(name);
    let text = std::fs::read_to_string(&path).expect("example file");
    (path, text)
}

/// `text` with every `(from, to)` replaced; each `from` must occur.
fn adapt(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut text = text.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "the example no longer holds {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// `BIN validate --config PATH`: exit status, stderr.
fn validate(binary: &str, path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(bin(binary))
        .args(["validate", "--config"])
        .arg(path)
        .output()
        .expect("validate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_minimal_examples_validate_and_carry_a_message_to_rocketmq() {
    let dir = tempfile::tempdir().unwrap();
    let first = unique("ex");
    let gateway = unique("gw");
    let pki = Pki::new(&dir.path().join("pki"));
    let gw = pki.client(&gateway, true);

    // As shipped: the bridge's validates (validate does not open listener TLS files);
    // the agent's only lacks the certificate files it names.
    let (bridge_path, bridge_text) = example("cloud-bridge.toml");
    let (code, err) = validate("cloud-bridge", &bridge_path);
    assert_eq!(code, Some(0), "{err}");
    let (agent_path, agent_text) = example("edge-agent.toml");
    let (code, err) = validate("edge-agent", &agent_path);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("uplink.tls") && err.contains("/etc/edge-agent/cloud-ca.pem"),
        "{err}"
    );

    let bridge_port = free_port();
    let bridge_text = adapt(
        &bridge_text,
        &[
            ("127.0.0.1:9876", &rocketmq::env("ROCKETMQ_NAMESRV")),
            (
                "first_level = [\"t1\"]",
                &format!("first_level = [\"{first}\"]"),
            ),
            ("0.0.0.0:8883", &format!("127.0.0.1:{bridge_port}")),
            (
                "/etc/cloud-bridge/server.pem",
                pki.server_cert.to_str().unwrap(),
            ),
            (
                "/etc/cloud-bridge/server.key",
                pki.server_key.to_str().unwrap(),
            ),
            (
                "/etc/cloud-bridge/gateways-ca.pem",
                pki.ca.to_str().unwrap(),
            ),
        ],
    ) + "\n[metrics]\nbind = \"\"\n";
    let bridge_config = dir.path().join("bridge.toml");
    std::fs::write(&bridge_config, &bridge_text).unwrap();
    let (code, err) = validate("cloud-bridge", &bridge_config);
    assert_eq!(code, Some(0), "{err}");
    // Served as shipped, the example's secret would let anyone in: `run` refuses it
    // (exit 2, before binding anything); a user sets their own.
    let refused = Command::new(bin("cloud-bridge"))
        .args(["run", "--config"])
        .arg(&bridge_config)
        .output()
        .expect("cloud-bridge run");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("auth.secret_key") && err.contains("openssl rand"),
        "{err}"
    );
    let bridge_text = adapt(
        &bridge_text,
        &[("\"change-me\"", "\"e2e-examples-secret\"")],
    );
    std::fs::write(&bridge_config, bridge_text).unwrap();

    let agent_port = free_port();
    let agent_text = adapt(
        &agent_text,
        &[
            ("0.0.0.0:1883", &format!("127.0.0.1:{agent_port}")),
            (
                "bridge.example.com:8883",
                &format!("localhost:{bridge_port}"),
            ),
            (
                "[uplink]\n",
                &format!("[uplink]\ngateway_id = \"{gateway}\"\nfirst_level = \"{first}\"\n"),
            ),
            ("/etc/edge-agent/cloud-ca.pem", pki.ca.to_str().unwrap()),
            ("/etc/edge-agent/gateway.pem", gw.cert.to_str().unwrap()),
            ("/etc/edge-agent/gateway.key", gw.key.to_str().unwrap()),
        ],
    ) + "\n[metrics]\nbind = \"\"\n";
    let agent_config = dir.path().join("agent.toml");
    std::fs::write(&agent_config, agent_text).unwrap();
    let (code, err) = validate("edge-agent", &agent_config);
    assert_eq!(code, Some(0), "{err}");

    let init = Command::new(bin("cloud-bridge"))
        .args(["init", "--config"])
        .arg(&bridge_config)
        .output()
        .expect("cloud-bridge init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let arg = |p: &std::path::Path| p.display().to_string();
    let mut bridge = Process::spawn(
        "cloud-bridge",
        vec!["run".into(), "--config".into(), arg(&bridge_config)],
        dir.path().join("bridge.log"),
    );
    bridge.wait_port(bridge_port);
    let mut agent = Process::spawn(
        "edge-agent",
        vec![
            "run".into(),
            "--config".into(),
            arg(&agent_config),
            "--state-dir".into(),
            arg(&dir.path().join("state")),
        ],
        dir.path().join("agent.log"),
    );
    agent.wait_port(agent_port);

    let payloads: Vec<String> = (0..3).map(|i| format!("reading {i}")).collect();
    device_publish(agent_port, "dev-1", "sensors/temp", 1, &payloads);
    let got = consume(&first, payloads.len(), Duration::from_secs(60));
    let bodies: Vec<&str> = got
        .iter()
        .map(|m| m["body_utf8"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(bodies, payloads, "{got:?}");
    assert_eq!(
        got[0]["properties"]["originMqttTopic"].as_str(),
        Some(format!("{first}/{gateway}/sensors/temp").as_str())
    );
    agent.stop();
    bridge.stop();
}
