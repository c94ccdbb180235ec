//! A local device cannot smuggle a RocketMQ separator into a cloud topic: a message on an
//! uplink topic whose cloud topic breaks `mqtt::cloud_topic` (a `,` would split the LMQ
//! name at the broker and reach another gateway's queue) is delivered to local subscribers
//! but never journaled, and is counted. Driven by Debian's mosquitto clients.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{config, start, stop};
use test_support::WAIT;

fn mosquitto(tool: &str, port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(tool);
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5"])
        .args(args);
    c
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separator_in_a_device_topic_is_delivered_locally_but_not_uplinked() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.uplink.topics = vec!["line/#".into()];
    let (agent, addr) = start(c, dir.path()).await;
    let metrics = agent.metrics_addr().expect("metrics endpoint");
    let port = addr.port();
    let smuggled = "line/x,/LMQ/t1/gw-2/cmd/valve";
    let lines = tokio::task::spawn_blocking(move || {
        let sub = mosquitto(
            "mosquitto_sub",
            port,
            &["-t", "line/#", "-q", "1", "-C", "3", "-W", "15", "-v"],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (Debian package mosquitto-clients)");
        std::thread::sleep(Duration::from_millis(500));
        for (topic, m) in [(smuggled, "open"), ("line/a%b", "x"), ("line/ok", "fine")] {
            let out = mosquitto("mosquitto_pub", port, &["-t", topic, "-q", "1", "-m", m])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{topic}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = sub.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(
        lines,
        format!("{smuggled} open\nline/a%b x\nline/ok fine\n")
    );

    let (code, text) = mqtt::metrics::fetch::get(metrics, "/metrics", WAIT)
        .await
        .expect("endpoint answers");
    assert_eq!(code, 200);
    assert_eq!(
        sample(
            &text,
            "edge_agent_dropped_total{reason=\"cloud_topic_refused\"}"
        ),
        Some(2.0),
        "{text}"
    );
    // Only line/ok is waiting for the cloud.
    assert_eq!(
        sample(&text, "edge_agent_journal_entries"),
        Some(1.0),
        "{text}"
    );
    stop(agent).await;
}
