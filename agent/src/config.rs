//! The agent's configuration: TOML, unknown keys refused, every key with a default.
//!
//! `conf/edge-agent.toml` is the documented default and is compiled in, so `edge-agent`
//! without `--config` runs exactly that file: one TCP listener on 127.0.0.1:1883,
//! anonymous clients allowed (loopback only), data in the state directory. Anonymous
//! access is off as soon as `[[auth.users]]` are configured, unless
//! `auth.allow_anonymous = true` says otherwise; [`Config::warnings`] names a listener
//! on a non-loopback address that still accepts anonymous clients.
//! `edge-agent validate [--config FILE]` checks a file (listeners, TLS files, users'
//! password hashes, filters, journal rules) without starting anything. A minimal file
//! (`conf/examples/edge-agent.toml`: a listener and the uplink) is enough.
//! `docs/configure-agent.md` documents every key; its test compares them with
//! [`mqtt::config_file::keys`] of [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::acl::AclRule;
pub use crate::auth::{AuthConfig, UserConfig};
pub use crate::broker::SessionsConfig;
use crate::error::{Error, Result};
pub use crate::journal::JournalConfig;
pub use crate::sensors::SensorConfig;
pub use crate::uplink::{DownlinkConfig, UplinkConfig};

/// The shipped defaults.
pub const DEFAULT_CONFIG: &str = include_str!("../../conf/edge-agent.toml");

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the agent keeps its data; unset: see `state_dir` (the `--state-dir` flag wins).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// MQTT listeners.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Who may connect.
    #[serde(default)]
    pub auth: AuthConfig,
    /// What clients may publish and subscribe to (`[[acl]]`, `crate::acl`); none:
    /// everything.
    #[serde(default)]
    pub acl: Vec<AclRule>,
    /// Connection and memory limits.
    #[serde(default)]
    pub limits: Limits,
    /// Persistent sessions and retained messages.
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// Which topics go to the cloud through the journal, and the bridge they go to.
    #[serde(default)]
    pub uplink: UplinkConfig,
    /// Which cloud messages come down to local subscribers.
    #[serde(default)]
    pub downlink: DownlinkConfig,
    /// The durable journal.
    #[serde(default)]
    pub journal: JournalConfig,
    /// Sensors attached to the gateway (`[[sensor]]` tables, `crate::sensors`).
    #[serde(default, rename = "sensor")]
    pub sensors: Vec<SensorConfig>,
    /// The metrics and health endpoint (`crate::metrics`).
    #[serde(default)]
    pub metrics: mqtt::metrics::MetricsConfig,
}

/// One listener (shared with the other binary: `mqtt::listener::ListenerConfig`).
pub use mqtt::listener::ListenerConfig;
/// TLS files of a listener (`mqtt::tls::TlsFiles`).
pub use mqtt::tls::TlsFiles as TlsConfig;

/// `[limits]`: limits of client connections and of memory. The keys both binaries have
/// are handed to `mqtt::server` as [`mqtt::server::Limits`] ([`Limits::server`]); the
/// others are the agent's own (the broker's queues and subscriptions, per-address
/// admission).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections across all listeners; more are closed at accept.
    pub max_connections: usize,
    /// Largest packet accepted, bytes.
    pub max_packet_size: usize,
    /// Time allowed between accept and CONNECT (and for a TLS handshake), seconds.
    pub connect_timeout_secs: u64,
    /// MQTT 5 receive maximum advertised to clients.
    pub receive_maximum: u16,
    /// Publishes of one connection being stored at once (in order; they share fsyncs).
    pub publish_pipeline: usize,
    /// Bytes (topic + payload) of publishes being stored at once, over all connections;
    /// a connection whose publish does not fit stops reading until it does.
    pub max_storing_bytes: usize,
    /// Messages waiting in memory for one connected subscriber.
    pub subscriber_queue: usize,
    /// Bytes (topic + payload) of the messages waiting for one connected subscriber.
    pub subscriber_queue_bytes: usize,
    /// How long a publish waits for room in a full subscriber queue before that
    /// subscriber misses the message (counted), milliseconds.
    pub subscriber_wait_ms: u64,
    /// Sockets one source address may have open (0: no bound).
    pub max_connections_per_address: usize,
    /// New sockets one source address may open per second, bursts of twice that (0: no
    /// bound).
    pub accept_rate_per_address: u32,
    /// Subscriptions one client may hold; more are refused (SUBACK 0x97).
    pub max_subscriptions: usize,
    /// Longest topic filter accepted in SUBSCRIBE, bytes (SUBACK 0x8F beyond).
    pub max_filter_length: usize,
    /// Most levels of a topic filter (SUBACK 0x8F beyond).
    pub max_filter_depth: usize,
    /// Longest keepalive granted, seconds (MQTT 5: Server Keep Alive; 3.1.1: refused
    /// above it); 0 or 65535: no cap.
    pub max_keepalive: u16,
    /// Topic aliases an MQTT 5 client may use (Topic Alias Maximum; 0: none).
    pub topic_alias_maximum: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_packet_size: 256 * 1024,
            connect_timeout_secs: 10,
            receive_maximum: 128,
            publish_pipeline: 128,
            max_storing_bytes: 8 * 1024 * 1024,
            subscriber_queue: 1000,
            subscriber_queue_bytes: 1024 * 1024,
            subscriber_wait_ms: 5000,
            max_connections_per_address: 64,
            accept_rate_per_address: 20,
            max_subscriptions: 100,
            max_filter_length: 512,
            max_filter_depth: 16,
            max_keepalive: 65535,
            topic_alias_maximum: 10,
        }
    }
}

impl Limits {
    /// The keys both servers share (`mqtt::server`'s scaffold applies them).
    pub fn server(&self) -> mqtt::server::Limits {
        mqtt::server::Limits {
            max_connections: self.max_connections,
            max_packet_size: self.max_packet_size,
            connect_timeout_secs: self.connect_timeout_secs,
            receive_maximum: self.receive_maximum,
            publish_pipeline: self.publish_pipeline,
            max_storing_bytes: self.max_storing_bytes,
            max_keepalive: self.max_keepalive,
            topic_alias_maximum: self.topic_alias_maximum,
        }
    }
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Config {
    /// Parses a configuration text and checks it; errors are [`Error::ConfigFile`],
    /// named after `origin`.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let in_file = |reason: String| Error::ConfigFile {
            origin: origin.to_owned(),
            reason,
        };
        let config: Config =
            mqtt::config_file::from_toml(text).map_err(|e| in_file(e.to_string()))?;
        config.check().map_err(|e| match e {
            Error::Config { field, reason } => in_file(format!("{field}: {reason}")),
            other => in_file(other.to_string()),
        })?;
        Ok(config)
    }

    /// Loads a file, or the compiled-in defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Self::parse(DEFAULT_CONFIG, "built-in defaults"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::ConfigFile {
                    origin: p.display().to_string(),
                    reason: format!("cannot read it: {e}"),
                })?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }

    /// Checks every value; errors name the key.
    pub fn check(&self) -> Result<()> {
        if self.listeners.is_empty() {
            return Err(bad("listener", "at least one [[listener]] is needed"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            if !names.insert(&l.name) {
                return Err(bad(format!("listener[{i}].name"), "used twice"));
            }
            if let Some(t) = &l.tls
                && t.require_client_cert
                && t.client_ca.is_none()
            {
                return Err(bad(
                    format!("listener[{i}].tls.require_client_cert"),
                    "needs client_ca",
                ));
            }
        }
        for (i, u) in self.auth.users.iter().enumerate() {
            if u.name.is_empty() {
                return Err(bad(format!("auth.users[{i}].name"), "empty"));
            }
            crate::auth::parse_hash(&u.password_hash)
                .map_err(|e| bad(format!("auth.users[{i}].password_hash"), e))?;
        }
        for (i, rule) in self.acl.iter().enumerate() {
            if rule.clients.is_empty() && rule.users.is_empty() {
                return Err(bad(
                    format!("acl[{i}]"),
                    "needs `clients` or `users` (\"*\" for everybody)",
                ));
            }
            for (key, filters) in [
                ("publish", &rule.publish),
                ("subscribe", &rule.subscribe),
                ("deny", &rule.deny),
            ] {
                for f in filters {
                    let sample = f.replace("{client}", "x").replace("{username}", "x");
                    mqtt::topic::validate_filter(&sample)
                        .map_err(|e| bad(format!("acl[{i}].{key}"), format!("{f:?}: {e}")))?;
                }
            }
        }
        let l = &self.limits;
        if l.max_packet_size < mqtt::codec::MIN_PACKET_SIZE {
            return Err(bad(
                "limits.max_packet_size",
                format!("must be at least {}", mqtt::codec::MIN_PACKET_SIZE),
            ));
        }
        for (field, v) in [
            ("limits.max_connections", l.max_connections),
            ("limits.publish_pipeline", l.publish_pipeline),
            ("limits.max_storing_bytes", l.max_storing_bytes),
            ("limits.subscriber_queue", l.subscriber_queue),
            ("limits.subscriber_queue_bytes", l.subscriber_queue_bytes),
            ("limits.receive_maximum", usize::from(l.receive_maximum)),
            ("limits.max_subscriptions", l.max_subscriptions),
            ("limits.max_filter_length", l.max_filter_length),
            ("limits.max_filter_depth", l.max_filter_depth),
            (
                "auth.max_concurrent_checks",
                self.auth.max_concurrent_checks,
            ),
            ("sessions.max_sessions", self.sessions.max_sessions),
            ("sessions.max_queued_bytes", self.sessions.max_queued_bytes),
        ] {
            if v == 0 {
                return Err(bad(field, "must be greater than 0"));
            }
        }
        // Upper bounds: each of these sizes a semaphore, a channel or a buffer (a tokio
        // semaphore or channel holds at most 2^29 - 1 on 32-bit gateways).
        for (field, v, most) in [
            (
                "limits.max_connections",
                l.max_connections,
                mqtt::listener::MAX_CONNECTIONS_LIMIT,
            ),
            ("limits.publish_pipeline", l.publish_pipeline, 65_535),
            ("limits.subscriber_queue", l.subscriber_queue, 1_000_000),
            (
                "auth.max_concurrent_checks",
                self.auth.max_concurrent_checks,
                1024,
            ),
        ] {
            if v > most {
                return Err(bad(field, format!("must be at most {most}")));
            }
        }
        self.uplink.check(&self.downlink)?;
        self.metrics_addr()?;
        crate::sensors::config::check_all(&self.sensors)?;
        self.journal.validate()
    }

    /// Where the metrics endpoint listens; `None` when it is turned off.
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>> {
        self.metrics
            .address(crate::metrics::DEFAULT_BIND)
            .map_err(|e| bad("metrics.bind", e))
    }

    /// Warnings about a configuration that is valid but unsafe: a listener on a
    /// non-loopback address that accepts anonymous clients (`edge-agent validate` prints
    /// them; the agent logs them at start).
    pub fn warnings(&self) -> Vec<String> {
        if !self.auth.anonymous_allowed() {
            return Vec::new();
        }
        self.listeners
            .iter()
            .filter(|l| !l.bind.ip().is_loopback())
            .filter(|l| !l.tls.as_ref().is_some_and(|t| t.require_client_cert))
            .map(|l| {
                format!(
                    "listener {:?} on {} accepts anonymous clients from the network: configure \
                     [[auth.users]] (anonymous access is then off) or set auth.allow_anonymous = false",
                    l.name, l.bind
                )
            })
            .collect()
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.connect_timeout_secs)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn shipped_defaults_are_valid_and_listen_on_loopback() {
        let c = Config::load(None).expect("defaults");
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].bind, "127.0.0.1:1883".parse().expect("addr"));
        assert!(c.auth.anonymous_allowed());
        assert!(c.warnings().is_empty());
        assert_eq!(
            c.metrics_addr().expect("metrics"),
            Some(crate::metrics::DEFAULT_BIND)
        );
        let off = DEFAULT_CONFIG.replace("bind = \"127.0.0.1:9181\"", "bind = \"\"");
        assert_ne!(off, DEFAULT_CONFIG);
        let c = Config::parse(&off, "x").expect("off");
        assert_eq!(c.metrics_addr().expect("off"), None);
        let bad = DEFAULT_CONFIG.replace("bind = \"127.0.0.1:9181\"", "bind = \"nine\"");
        let e = Config::parse(&bad, "x").expect_err("bad bind").to_string();
        assert!(e.contains("metrics.bind"), "{e}");
    }

    #[test]
    fn users_turn_anonymous_access_off_and_a_network_listener_is_warned_about() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    5i9WFq2hDQnrPtw4Xf0Q5xkk3sUAV8NBf0mAY7Mpu0U";
        let users = format!("\n[[auth.users]]\nname = \"u\"\npassword_hash = \"{hash}\"\n");
        let open = DEFAULT_CONFIG.replace("127.0.0.1:1883", "0.0.0.0:1883");
        let c = Config::parse(&format!("{open}{users}"), "x").expect("users");
        assert!(!c.auth.anonymous_allowed());
        assert!(c.warnings().is_empty());
        let c = Config::parse(&open, "x").expect("anonymous");
        assert!(c.auth.anonymous_allowed());
        let w = c.warnings();
        assert!(w.len() == 1 && w[0].contains("0.0.0.0:1883"), "{w:?}");
        let explicit = open.replace("[auth]", "[auth]\nallow_anonymous = true");
        let c = Config::parse(&format!("{explicit}{users}"), "x").expect("explicit");
        assert!(c.auth.anonymous_allowed());
        assert_eq!(c.warnings().len(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let text = DEFAULT_CONFIG.replace("[limits]", "[limits]\nfoo = 1");
        let e = Config::parse(&text, "x.toml").expect_err("foo").to_string();
        assert!(e.contains("x.toml") && e.contains("foo"), "{e}");
        let text = DEFAULT_CONFIG.replace("topics = [\"#\"]", "topics = [\"a/#/b\"]");
        assert_ne!(text, DEFAULT_CONFIG);
        assert!(Config::parse(&text, "x").is_err());
        let text =
            format!("{DEFAULT_CONFIG}\n[[auth.users]]\nname = \"u\"\npassword_hash = \"plain\"\n");
        let e = Config::parse(&text, "x").expect_err("hash").to_string();
        assert!(e.contains("auth.users[0].password_hash"), "{e}");
    }

    #[test]
    fn limits_out_of_range_are_refused_by_name() {
        for (old, new, field) in [
            (
                "max_connections = 1024",
                "max_connections = 2000000000",
                "limits.max_connections",
            ),
            (
                "max_storing_bytes = 8388608",
                "max_storing_bytes = 0",
                "limits.max_storing_bytes",
            ),
            (
                "subscriber_queue_bytes = 1048576",
                "subscriber_queue_bytes = 0",
                "limits.subscriber_queue_bytes",
            ),
            (
                "subscriber_queue = 1000 ",
                "subscriber_queue = 1000000000 ",
                "limits.subscriber_queue",
            ),
            (
                "publish_pipeline = 128 ",
                "publish_pipeline = 100000 ",
                "limits.publish_pipeline",
            ),
        ] {
            let text = DEFAULT_CONFIG.replace(old, new);
            assert_ne!(text, DEFAULT_CONFIG, "{old}");
            let e = Config::parse(&text, "x").expect_err(new).to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}

/// `[[sensor]]` tables parsed and checked as part of a whole file.
#[cfg(test)]
#[allow(clippy::expect_used)]
mod sensor_tests {
    use super::{Config, DEFAULT_CONFIG};

    fn with_sensor(table: &str) -> String {
        format!("{DEFAULT_CONFIG}\n[[sensor]]\n{table}\n")
    }

    fn refused(table: &str) -> String {
        Config::parse(&with_sensor(table), "x.toml")
            .expect_err(table)
            .to_string()
    }

    const BME: &str = "id = \"bme-1\"\ntype = \"bme280\"\nbus = \"/dev/i2c-1\"\naddress = 0x76\ntopic = \"sensors/bme-1\"";

    #[test]
    fn each_type_parses_with_its_defaults() {
        let text = format!(
            "{}\n[[sensor]]\nid = \"adc\"\ntype = \"mcp3008\"\ndevice = \"/dev/spidev0.0\"\nchannels = [0, 7]\ntopic = \"s/adc\"\n\
             [[sensor]]\nid = \"door\"\ntype = \"digital\"\nchip = \"/dev/gpiochip0\"\nline = 17\ntopic = \"s/door\"\n\
             [[sensor]]\nid = \"sim\"\ntype = \"simulated\"\ntopic = \"s/sim\"\nqos = 0\n",
            with_sensor(BME)
        );
        let c = Config::parse(&text, "x").expect("valid");
        assert_eq!(c.sensors.len(), 4);
        assert_eq!(c.sensors[0].status_topic(), "sensors/bme-1/status");
        assert_eq!(c.sensors[0].interval_ms(), 10_000);
        assert_eq!(c.sensors[2].interval_ms(), 10);
        assert_eq!(c.sensors[3].qos, 0);
        assert!(Config::load(None).expect("defaults").sensors.is_empty());
    }

    #[test]
    fn bad_sensor_config_is_refused_naming_the_sensor() {
        let cases = [
            (BME.replace("bme280", "bme680"), "unknown type"),
            (BME.replace("/dev/i2c-1", "/dev/spi-1"), "unknown bus"),
            (BME.replace("/dev/i2c-1", "i2c-1"), "unknown bus"),
            (BME.replace("0x76", "0x200"), "not a 7-bit I2C address"),
            (BME.replace("0x76", "0x40"), "only at 0x76 or 0x77"),
            (BME.replace("bus = \"/dev/i2c-1\"\n", ""), "bus: missing"),
            (format!("{BME}\ninterval_ms = 0"), "interval_ms"),
            (BME.replace("sensors/bme-1", "sensors/+/t"), "wildcard"),
            (BME.replace("sensors/bme-1", "sensors/#"), "wildcard"),
            (format!("{BME}\nqos = 3"), "qos"),
            (
                format!("{BME}\nline = 3"),
                "does not apply to a bme280 sensor",
            ),
        ];
        for (table, what) in cases {
            let e = refused(&table);
            assert!(e.contains("sensor[0] \"bme-1\""), "{table}: {e}");
            assert!(e.contains(what), "{table}: expected {what:?} in {e}");
        }
        let e = refused(&format!("{BME}\ncolour = \"red\""));
        assert!(e.contains("colour"), "{e}");
        let e = refused("id = \"a\"\ntype = \"mcp3008\"\ndevice = \"/dev/spidev0\"\ntopic = \"t\"");
        assert!(
            e.contains("sensor[0] \"a\".device") && e.contains("spidevB.C"),
            "{e}"
        );
        let e = refused(
            "id = \"a\"\ntype = \"mcp3008\"\ndevice = \"/dev/spidev0.1\"\nchannels = [8]\ntopic = \"t\"",
        );
        assert!(e.contains("channels"), "{e}");
        let e = refused(
            "id = \"d\"\ntype = \"digital\"\nchip = \"/sys/class/gpio\"\nline = 1\ntopic = \"t\"",
        );
        assert!(e.contains("gpiochipN"), "{e}");
        let dup = format!("{}\n[[sensor]]\n{BME}\n", with_sensor(BME));
        let e = Config::parse(&dup, "x").expect_err("duplicate").to_string();
        assert!(
            e.contains("sensor[1] \"bme-1\".id") && e.contains("used twice"),
            "{e}"
        );
    }
}
