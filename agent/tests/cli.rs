//! The `edge-agent` binary: `journal stats|peek|export|check` on a real journal, and the
//! `validate` and `passwd` subcommands.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use edge_agent::journal::{FILE_NAME, Journal, JournalConfig, NewEntry, Qos};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("run edge-agent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn make_journal(dir: &Path) {
    let j = Journal::open(dir.join(FILE_NAME), &JournalConfig::default())
        .await
        .expect("open");
    j.append(NewEntry::new("sensors/t1", &b"21.5"[..], Qos::AtLeastOnce))
        .await
        .expect("append");
    j.append(NewEntry::new(
        "sensors/bin",
        vec![0u8, 255],
        Qos::ExactlyOnce,
    ))
    .await
    .expect("append");
    j.close().await.expect("close");
}

#[tokio::test]
async fn journal_subcommands_read_a_real_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_journal(dir.path()).await;
    let state = dir.path().to_str().expect("utf-8 path");

    let out = agent(&["journal", "--state-dir", state, "stats"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("waiting      2 entries"), "{stdout}");
    assert!(stdout.contains("appended"), "{stdout}");

    let out = agent(&["--state-dir", state, "journal", "stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["entries"], 2);
    assert_eq!(v["counters"]["appended"], 2);

    let out = agent(&["journal", "--state-dir", state, "peek", "--limit", "1"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("sensors/t1") && !stdout.contains("sensors/bin"),
        "{stdout}"
    );

    let out = agent(&[
        "journal",
        "--state-dir",
        state,
        "export",
        "--format",
        "jsonl",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);

    let file = dir.path().join(FILE_NAME);
    let out = agent(&["journal", "--file", file.to_str().expect("utf-8"), "check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn missing_journal_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_str().expect("utf-8 path");
    let out = agent(&["journal", "--state-dir", state, "stats"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no journal at"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !dir.path().join(FILE_NAME).exists(),
        "the CLI created a journal"
    );
}

#[test]
fn validate_passwd_and_bad_config() {
    let out = agent(&["validate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("built-in defaults: valid"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    // The user's errors: one line naming the file, the key and the reason, exit status 2,
    // and no backtrace even with RUST_BACKTRACE=1.
    for (content, needle) in [
        (
            "[limits]\nmax_conections = 3\n",
            "limits.max_conections: unknown key",
        ),
        (
            "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\n[limits]\nmax_connections = 0\n",
            "limits.max_connections: must be greater than 0",
        ),
        ("[[listener]]\nname = \"a\"\n", "listener[0].bind: missing"),
    ] {
        std::fs::write(&bad, content).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args(["validate", "--config", bad.to_str().expect("utf-8")])
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run edge-agent");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        let prefix = format!("edge-agent: error: configuration {}: ", bad.display());
        assert!(
            err.starts_with(&prefix) && err.lines().count() == 1,
            "one line: {err}"
        );
        assert!(err.contains(needle), "{err}");
        assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let hash = text(&out.stdout).trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(edge_agent::auth::verify_password("s3cret", &hash));

    // The shipped file is the compiled-in default and validates as a file too.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/edge-agent.toml");
    let out = agent(&["validate", "--config", shipped]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
