#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The `cloud-bridge` command: validate, init, wildcard add|list|remove, password, and a
//! running bridge picking up a wildcard added at run time from kvconfig.

mod harness;

use std::process::Command;
use std::time::Duration;

use harness::clients::{Msg, Proto, rumqttc_publish};
use harness::{config_text, password, start_bridge};
use test_support::rocketmq::{max_offset, tool};
use test_support::unique;

fn bridge(args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = bridge_code(args);
    (code == Some(0), out, err)
}

/// Runs cloud-bridge with `RUST_BACKTRACE=1`, as on many developer machines: errors must
/// still print as one message.
fn bridge_code(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cloud-bridge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run cloud-bridge");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_the_shipped_config_and_names_what_is_wrong() {
    let shipped = test_support::repo_root().join("conf/cloud-bridge.toml");
    let (ok, out, err) = bridge(&["validate", "--config", shipped.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("valid"));

    let dir = std::env::temp_dir().join(unique("cfg-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "unknown key",
            "[limits]\nmax_packet_size = 100\nbogus = 1\n",
            "bogus",
        ),
        ("bad first level", "", "first_level"),
        ("not toml", "[[[", "TOML"),
    ];
    for (name, text, needle) in cases {
        let text = if name == "bad first level" {
            config_text("a/b", &[], "")
        } else {
            format!("{}\n{text}", config_text("t1", &[], "")).replace(
                "[limits]\nmax_packet_size = 65536\nconnect_timeout_secs = 2\n",
                "",
            )
        };
        let path = dir.join(format!("{}.toml", name.replace(' ', "_")));
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = bridge_code(&["validate", "--config", path.to_str().unwrap()]);
        assert_eq!(
            code,
            Some(2),
            "{name} must be refused as the user's error: {err}"
        );
        assert!(
            err.starts_with("cloud-bridge: error: configuration ") && err.lines().count() == 1,
            "{name}: one line: {err}"
        );
        assert!(!err.to_lowercase().contains("backtrace"), "{name}: {err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "{name}: the error names the file: {err}"
        );
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    let (code, _, err) = bridge_code(&["validate", "--config", "/nonexistent/bridge.toml"]);
    assert!(
        code == Some(2) && err.contains("/nonexistent/bridge.toml"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn password_prints_the_rocketmq_mqtt_signature() {
    let (ok, out, _) = bridge(&["password", "dev1"]);
    assert!(ok);
    // The shipped secret is "demo-secret-change-me".
    assert_eq!(
        out.trim(),
        cloud_bridge::auth::hmac_password("demo-secret-change-me", "dev1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_and_wildcard_commands_manage_kvconfig_and_a_running_bridge_follows() {
    let first = unique("cli");
    let dir = std::env::temp_dir().join(unique("cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bridge.toml");
    let text = config_text(&first, &[&format!("{first}/+")], "");
    std::fs::write(&path, &text).unwrap();
    let cfg = path.to_str().unwrap();

    let (ok, out, err) = bridge(&["init", "--config", cfg]);
    assert!(ok, "init: {err}");
    assert!(out.contains(&format!("topic {first} on")), "{out}");
    let kv = |key: &str| tool(&["get-kv", "--key", key]).unwrap()[0]["value"].clone();
    assert_eq!(kv(&first), format!("{first}/+").as_str());
    assert!(
        kv("ALL_FIRST_TOPICS")
            .as_str()
            .unwrap()
            .split(',')
            .any(|t| t == first)
    );
    // Idempotent.
    assert!(bridge(&["init", "--config", cfg]).0);
    assert_eq!(kv(&first), format!("{first}/+").as_str());

    let (server, _) = start_bridge(&text).await;
    let addr = server.local_addr("mqtt").unwrap();
    let added = format!("{first}/a/#");
    let (ok, out, err) = bridge(&["wildcard", "add", &added, "--config", cfg]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("{first}/+,{added}"));
    let (ok, out, _) = bridge(&["wildcard", "list", "--config", cfg]);
    assert!(
        ok && out.contains(&format!("{first}: {first}/+,{added}")),
        "{out}"
    );
    let (ok, _, err) = bridge(&["wildcard", "add", "other/+", "--config", cfg]);
    assert!(!ok && err.contains("first-level"), "{err}");

    // The running bridge re-reads kvconfig (meta_refresh_secs = 1 in tests).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let lmq = cloud_bridge::lmq::lmq_name(&added);
    let before = max_offset(&lmq);
    let id = unique("c");
    rumqttc_publish(
        addr,
        Proto::V311,
        None,
        &id,
        &password(&id),
        &[Msg {
            topic: format!("{first}/a/b"),
            qos: 1,
            payload: b"x".to_vec(),
            user: Vec::new(),
        }],
    )
    .await;
    assert_eq!(
        max_offset(&lmq),
        before + 1,
        "the added wildcard's LMQ did not grow"
    );

    let (ok, out, _) = bridge(&["wildcard", "remove", &added, "--config", cfg]);
    assert!(ok);
    assert_eq!(out.trim(), format!("{first}/+"));
    let (ok, _, err) = bridge(&["wildcard", "remove", &added, "--config", cfg]);
    assert!(!ok && err.contains("not registered"), "{err}");
    server.stop(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_refuses_a_secret_that_ships_with_the_code() {
    // The built-in defaults carry "demo-secret-change-me": anyone could compute every
    // client's password. `run` stops before binding anything, with exit status 2.
    let (code, _, err) = bridge_code(&["run"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("auth.secret_key") && err.contains("--insecure-demo"),
        "{err}"
    );
    assert!(!err.contains("Stack backtrace"), "{err}");
    // `validate` says nothing against it: the file is valid, only unsafe to serve.
    let (code, _, err) = bridge_code(&["validate"]);
    assert_eq!(code, Some(0), "{err}");
}
