//! The crash test: the `edge-agent` binary is killed with SIGKILL at random points while
//! a third-party client (Python paho-mqtt, 3.1.1, QoS 1, up to 20 in flight) streams
//! publishes to an uplink topic; 20 rounds on one state directory. Afterwards every
//! message the client saw acknowledged is in the journal exactly once, the journal holds
//! no message twice, its order is publish order, and `PRAGMA integrity_check` passes.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;
use support::process;

const ROUNDS: u64 = 20;

/// The paho QoS 1 streamer (arguments: port, start, topic, client id).
const STREAMER: &str = include_str!("support/streamer.py");

#[test]
fn kill_9_never_loses_or_duplicates_an_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    let mut rng =
        test_support::crash_rng("kill_9_never_loses_or_duplicates_an_acknowledged_message");
    for round in 0..ROUNDS {
        let (mut agent, addr) = process::spawn(dir.path(), "");
        let mut streamer = Command::new("python3")
            .arg("-c")
            .arg(STREAMER)
            .arg(addr.port().to_string())
            .arg((round * 1_000_000).to_string())
            .args(["crash/t", "streamer"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with paho-mqtt (tests/setup.sh installs it)");
        let out = streamer.stdout.take().unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for n in BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.trim().parse::<u64>().ok())
            {
                if got.is_empty() {
                    let _ = first_tx.send(());
                }
                got.push(n);
            }
            got
        });
        // Kill at a random point once the stream is flowing.
        first_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the streamer got its first PUBACK");
        let wait = rng.random_range(0..700);
        std::thread::sleep(Duration::from_millis(wait));
        agent.kill().unwrap(); // SIGKILL
        agent.wait().unwrap();
        // The streamer sees the connection drop and exits; bounded by its own timeouts.
        let status = streamer.wait().unwrap();
        assert!(status.success(), "streamer failed in round {round}");
        let got = reader.join().unwrap();
        acked.extend(got);
    }
    assert!(acked.len() > 100, "only {} acknowledged", acked.len());

    let check = process::journal(dir.path(), &["check"]);
    assert!(
        check.status.success(),
        "integrity check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let export = process::journal(dir.path(), &["export"]);
    assert!(export.status.success());
    let stored: Vec<u64> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["payload_utf8"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    let unique: HashSet<u64> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "a message is stored twice");
    for w in stored.windows(2) {
        assert!(w[0] < w[1], "out of order: {} before {}", w[0], w[1]);
    }
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !unique.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "{ROUNDS} rounds: {} acknowledged, {} stored",
        acked.len(),
        stored.len()
    );
}
