//! Sensors in a running agent: a `simulated` sensor's readings reach an MQTT subscriber
//! as well-formed JSON (and the journal); a BME280 on a bus that does not exist
//! (`/dev/i2c-99`) yields retained status-topic fault messages and error counts while
//! the agent keeps serving; and a device that fails, then works, is retried with backoff
//! and reported `ok` again.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use edge_agent::config::{Config, DEFAULT_CONFIG};
use edge_agent::error::Error;
use edge_agent::sensors::reading::Value;
use edge_agent::sensors::sampler::Sampler;
use edge_agent::sensors::{FaultKind, SensorState, Sensors};
use support::{start, stop};
use test_support::{WAIT, v5};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The test defaults (`support::config`) with the `[[sensor]]` tables of `sensors`.
fn config_with(sensors: &str) -> Config {
    let mut c = support::config();
    c.sensors = Config::parse(&format!("{DEFAULT_CONFIG}\n{sensors}"), "test")
        .expect("sensor config")
        .sensors;
    c
}

const SIM_AND_MISSING: &str = r#"
[[sensor]]
id = "sim-1"
type = "simulated"
quantity = "temperature"
interval_ms = 50
topic = "sensors/sim-1"

[[sensor]]
id = "bme-missing"
type = "bme280"
bus = "/dev/i2c-99"
address = 0x76
topic = "sensors/bme-missing"
retry_initial_ms = 50
retry_max_ms = 200
"#;

fn json(p: &v5::Publish) -> serde_json::Value {
    serde_json::from_slice(&p.payload)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&p.payload)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn simulated_readings_reach_a_subscriber_and_a_missing_bus_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, addr) = start(config_with(SIM_AND_MISSING), dir.path()).await;

    let (mut sub, _) = v5::Client::connect(v5::options(addr, "reader")).await;
    sub.subscribe("sensors/sim-1", v5::QoS::AtLeastOnce).await;
    let mut last_seq = 0;
    for _ in 0..5 {
        let p = sub.publish(WAIT).await.expect("a reading");
        assert_eq!(&p.topic[..], b"sensors/sim-1");
        assert_eq!(p.qos, v5::QoS::AtLeastOnce);
        assert!(!p.retain);
        let r = json(&p);
        let fields: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            fields.len(),
            6,
            "exactly sensor, quantity, value, unit, ts_ms, seq: {r}"
        );
        assert_eq!(r["sensor"], "sim-1");
        assert_eq!(r["quantity"], "temperature");
        assert_eq!(r["unit"], "°C");
        let v = r["value"].as_f64().expect("numeric value");
        assert!((17.9..=24.1).contains(&v), "{v}");
        let ts = r["ts_ms"].as_i64().expect("ts_ms");
        assert!((now_ms() - ts).abs() < 60_000, "{ts}");
        let seq = r["seq"].as_u64().expect("seq");
        assert!(seq > last_seq, "seq {seq} after {last_seq}");
        last_seq = seq;
    }

    // The status topic: retained, so a new subscriber gets the current fault at once,
    // then one message per failed attempt.
    let (mut status, _) = v5::Client::connect(v5::options(addr, "status")).await;
    status
        .subscribe("sensors/bme-missing/status", v5::QoS::AtLeastOnce)
        .await;
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let p = status.publish(WAIT).await.expect("a status message");
        let s = json(&p);
        assert_eq!(s["sensor"], "bme-missing");
        assert_eq!(s["state"], "failing");
        assert_eq!(s["kind"], "missing_device");
        let error = s["error"].as_str().unwrap();
        assert!(error.contains("/dev/i2c-99"), "{error}");
        let retry = s["retry_in_ms"].as_u64().unwrap();
        assert!(
            (50..=200).contains(&retry),
            "backoff within bounds: {retry}"
        );
        attempts.push(s["attempts"].as_u64().unwrap());
    }
    assert!(
        attempts.windows(2).all(|w| w[1] > w[0]),
        "attempts count up: {attempts:?}"
    );

    let stats = agent.sensors().stats();
    assert_eq!(stats.len(), 2);
    let (sim, bad) = (&stats[0], &stats[1]);
    assert_eq!((sim.id.as_str(), sim.state), ("sim-1", SensorState::Ok));
    assert!(sim.readings_published >= 5, "{sim:?}");
    assert_eq!(sim.errors_total(), 0);
    assert_eq!(bad.state, SensorState::Failing);
    assert!(bad.errors_of(FaultKind::MissingDevice) >= 3, "{bad:?}");
    assert_eq!(bad.errors_total(), bad.errors_of(FaultKind::MissingDevice));
    assert!(bad.last_error.as_deref().unwrap().contains("/dev/i2c-99"));
    assert_eq!(bad.readings_published, 0);

    // The agent keeps serving devices.
    let (mut other, _) = v5::Client::connect(v5::options(addr, "device")).await;
    other.subscribe("plant/line-1", v5::QoS::AtLeastOnce).await;
    other
        .client
        .publish("plant/line-1", v5::QoS::AtLeastOnce, false, "still here")
        .await
        .unwrap();
    let p = other.publish(WAIT).await.expect("a device's message");
    assert_eq!(&p.payload[..], b"still here");

    // Readings are uplink data: the default `[uplink] topics = ["#"]` journals them.
    let journaled = agent.journal().peek(10_000).await.unwrap();
    assert!(
        journaled
            .iter()
            .filter(|e| e.topic == "sensors/sim-1")
            .count()
            >= 5,
        "readings in the journal"
    );
    assert!(
        journaled
            .iter()
            .any(|e| e.topic == "sensors/bme-missing/status" && e.retain)
    );
    sub.disconnect().await;
    status.disconnect().await;
    other.disconnect().await;
    stop(agent).await;
}

/// A sampler that returns a fixed value.
struct Fixed;
impl Sampler for Fixed {
    fn sample(&mut self) -> edge_agent::Result<Vec<Value>> {
        Ok(vec![Value::new("temperature", 20.5, "°C")])
    }
}

#[tokio::test]
async fn a_device_that_fails_then_answers_is_retried_and_reported_ok() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(
        r#"
[[sensor]]
id = "flaky"
type = "bme280"
bus = "/dev/i2c-1"
address = 0x77
interval_ms = 20
topic = "sensors/flaky"
retry_initial_ms = 20
retry_max_ms = 40
"#,
    );
    let sensor_cfg = cfg.sensors.clone();
    let mut no_sensors = cfg;
    no_sensors.sensors.clear();
    let (agent, addr) = start(no_sensors, dir.path()).await;
    let (mut sub, _) = v5::Client::connect(v5::options(addr, "reader")).await;
    // `sensors/flaky/#` also matches `sensors/flaky` itself.
    sub.subscribe("sensors/flaky/#", v5::QoS::AtLeastOnce).await;

    // The device NACKs its first two opens, then works.
    let opens = Arc::new(AtomicU32::new(0));
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let sensors = Sensors::start_with(&sensor_cfg, agent.broker(), &tracker, &cancel, |_| {
        let opens = opens.clone();
        Arc::new(move || {
            if opens.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(Error::Sensor {
                    kind: FaultKind::Nack,
                    message: "I2C nack at address 0x77".into(),
                })
            } else {
                Ok(Box::new(Fixed) as Box<dyn Sampler>)
            }
        })
    });

    let mut seen = Vec::new();
    for _ in 0..4 {
        let p = sub.publish(WAIT).await.expect("a message");
        let m = json(&p);
        let what = match &p.topic[..] {
            b"sensors/flaky/status" => format!("status {}", m["state"].as_str().unwrap()),
            b"sensors/flaky" => format!("reading {}", m["value"]),
            other => panic!("unexpected topic {other:?}"),
        };
        seen.push(what);
    }
    assert_eq!(
        seen,
        [
            "status failing",
            "status failing",
            "status ok",
            "reading 20.5"
        ]
    );
    let s = &sensors.stats()[0];
    assert_eq!(s.state, SensorState::Ok);
    assert_eq!(s.errors_of(FaultKind::Nack), 2);
    assert!(s.readings_published >= 1);
    assert_eq!(s.last_error.as_deref(), Some("I2C nack at address 0x77"));

    cancel.cancel();
    tracker.close();
    tokio::time::timeout(WAIT, tracker.wait())
        .await
        .expect("sensor tasks stop on cancel");
    sub.disconnect().await;
    stop(agent).await;
}
