//! `edge-agent validate` on `[[sensor]]` tables: good ones pass, bad ones (unknown type
//! or bus, impossible address, malformed device path, interval 0, wildcard topic,
//! duplicate id, unknown key) are refused with a message naming the sensor and the key.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};

use edge_agent::config::DEFAULT_CONFIG;

fn validate(dir: &std::path::Path, sensors: &str) -> Output {
    let file = dir.join("agent.toml");
    std::fs::write(&file, format!("{DEFAULT_CONFIG}\n{sensors}\n")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["validate", "--config"])
        .arg(&file)
        .env("RUST_BACKTRACE", "0")
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("run edge-agent validate")
}

const GOOD: &str = r#"
[[sensor]]
id = "bme280-1"
type = "bme280"
bus = "/dev/i2c-1"
address = 0x76
interval_ms = 10000
topic = "sensors/bme280-1"
qos = 1

[[sensor]]
id = "adc-1"
type = "mcp3008"
device = "/dev/spidev0.0"
channels = [0, 1]
vref = 3.3
topic = "sensors/adc-1"
status_topic = "status/adc-1"

[[sensor]]
id = "door"
type = "digital"
chip = "/dev/gpiochip0"
line = 17
active_low = true
debounce_ms = 50
topic = "sensors/door"

[[sensor]]
id = "sim-1"
type = "simulated"
quantity = "humidity"
topic = "sensors/sim-1"
"#;

#[test]
fn validate_accepts_good_sensors_and_refuses_bad_ones_naming_the_sensor() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), GOOD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let bme = |key: &str, value: &str| {
        let mut t = String::from("[[sensor]]\nid = \"t1\"\n");
        for (k, v) in [
            ("type", "\"bme280\""),
            ("bus", "\"/dev/i2c-1\""),
            ("address", "0x77"),
            ("topic", "\"sensors/t1\""),
        ] {
            if k != key {
                t.push_str(&format!("{k} = {v}\n"));
            }
        }
        if !value.is_empty() {
            t.push_str(&format!("{key} = {value}\n"));
        }
        t
    };
    let cases = [
        (bme("type", "\"bmp999\""), "sensor[0] \"t1\".type", "unknown type"),
        (bme("bus", "\"spi0\""), "sensor[0] \"t1\".bus", "unknown bus"),
        (bme("bus", ""), "sensor[0] \"t1\".bus", "missing"),
        (bme("address", "0x200"), "sensor[0] \"t1\".address", "7-bit"),
        (bme("address", "0x48"), "sensor[0] \"t1\".address", "0x76 or 0x77"),
        (bme("interval_ms", "0"), "sensor[0] \"t1\".interval_ms", "1..="),
        (bme("topic", "\"sensors/+\""), "sensor[0] \"t1\".topic", "wildcard"),
        (bme("channels", "[1]"), "sensor[0] \"t1\".channels", "does not apply"),
        (
            format!("{}\n{}", bme("address", "0x76"), bme("address", "0x77")),
            "sensor[1] \"t1\".id",
            "used twice",
        ),
        (
            "[[sensor]]\nid = \"a\"\ntype = \"mcp3008\"\ndevice = \"/dev/spidev0\"\ntopic = \"t\"\n"
                .to_owned(),
            "sensor[0] \"a\".device",
            "/dev/spidevB.C",
        ),
    ];
    for (table, field, reason) in cases {
        let out = validate(dir.path(), &table);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{table}");
        assert!(
            stderr.contains(field) && stderr.contains(reason),
            "{table}\nexpected {field:?} and {reason:?} in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    // An unknown key is refused by the parser, which names it and its line.
    let out = validate(dir.path(), &bme("colour", "\"red\""));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
}
