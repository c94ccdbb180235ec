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

use crate::error::{Error, Result};
use crate::journal::JournalConfig;
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
    pub sensors: Vec<crate::sensors::SensorConfig>,
    /// The metrics and health endpoint (`crate::metrics`).
    #[serde(default)]
    pub metrics: mqtt::metrics::MetricsConfig,
}

/// One listener (shared with the other binary: `mqtt::listener::ListenerConfig`).
pub use mqtt::listener::ListenerConfig;
/// TLS files of a listener (`mqtt::tls::TlsFiles`).
pub use mqtt::tls::TlsFiles as TlsConfig;

/// One `[[acl]]` rule (see `crate::acl`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Client identifiers this rule applies to; a trailing `*` matches any suffix.
    #[serde(default)]
    pub clients: Vec<String>,
    /// User names (or certificate identities) this rule applies to; a trailing `*`
    /// matches any suffix.
    #[serde(default)]
    pub users: Vec<String>,
    /// Filters the client may publish to (`{client}`, `{username}` substituted).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Filters the client may subscribe to (a subscription must be within one).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Filters the client may neither publish to, subscribe within, nor receive.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Authentication: a verified client certificate, a user with a password, or anonymous.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept clients that send no user name (and no certificate). Unset: yes without
    /// `users`, no with them (see [`AuthConfig::anonymous_allowed`]).
    pub allow_anonymous: Option<bool>,
    /// Users and their password hashes (PHC strings, `edge-agent passwd` makes one).
    pub users: Vec<UserConfig>,
    /// Password checks (Argon2, ~19 MiB and tens of ms each) running at once.
    pub max_concurrent_checks: usize,
    /// How long a CONNECT waits for a free check before it is refused as "server busy"
    /// (MQTT 5 0x89, 3.1.1 code 3), milliseconds.
    pub check_wait_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: None,
            users: Vec::new(),
            max_concurrent_checks: 2,
            check_wait_ms: 2000,
        }
    }
}

impl AuthConfig {
    /// Whether clients without a user name (and without a certificate) are accepted:
    /// `allow_anonymous` when set, else only when no `[[auth.users]]` are configured.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.users.is_empty())
    }
}

/// One user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The MQTT user name.
    pub name: String,
    /// Argon2 PHC string, for example `$argon2id$v=19$m=19456,t=2,p=1$...`.
    pub password_hash: String,
}

/// Limits of client connections and of memory.
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

/// Persistent sessions and retained messages (kept in `<state dir>/broker.db`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Messages kept for one disconnected persistent session; later ones are dropped
    /// (and counted) until the client comes back.
    pub max_queued_messages: usize,
    /// Upper bound of a session's expiry (3.1.1 clean-session-false sessions get this).
    pub max_session_expiry_secs: u32,
    /// Most retained topics; a retained publish to a new topic beyond it is not retained.
    pub max_retained: usize,
    /// Bytes (topic + payload) of retained messages, all topics together; a retained
    /// publish that would pass it is not retained (counted).
    pub max_retained_bytes: usize,
    /// Bytes (topic + payload) kept for one persistent session (its unacknowledged and
    /// offline messages); newer ones are dropped (counted).
    pub max_queued_bytes: usize,
    /// Sessions (connected, or persistent and offline); a CONNECT that would open one
    /// more is refused (CONNACK 0x97, 3.1.1 code 3).
    pub max_sessions: usize,
    /// Bytes of content in `broker.db` (queued and retained messages); past it offline
    /// messages are dropped and retained publishes are not retained (counted).
    pub max_db_bytes: u64,
    /// Delayed wills (MQTT 5 will delay) held in memory at once; one more is published
    /// at once instead of waiting (counted).
    pub max_pending_wills: usize,
    /// Bytes (topic + payload) of the delayed wills held.
    pub max_pending_will_bytes: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            max_queued_messages: 1000,
            max_session_expiry_secs: 7 * 24 * 3600,
            max_retained: 10_000,
            max_retained_bytes: 8 * 1024 * 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            max_sessions: 1000,
            max_db_bytes: 128 * 1024 * 1024,
            max_pending_wills: 1000,
            max_pending_will_bytes: 4 * 1024 * 1024,
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
