//! Configuration: TOML, unknown keys refused, defaults in `conf/cloud-bridge.toml`, which is
//! compiled in so that the bridge runs without a file. Every key but the name servers, the
//! first-level topics, the credentials and the listeners has a default, so a minimal file
//! (`conf/examples/cloud-bridge.toml`) is enough. `docs/configure-bridge.md` documents
//! every key; its test compares them with [`mqtt::config_file::keys`] of [`Config`].

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;

/// The shipped defaults.
pub const DEFAULT_CONFIG: &str = include_str!("../../conf/cloud-bridge.toml");

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where RocketMQ is.
    pub rocketmq: RocketMqConfig,
    /// Topic layout.
    pub topics: TopicsConfig,
    /// Authentication (unset: no credentials, which `check` refuses unless anonymous
    /// clients are allowed).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Connection limits.
    #[serde(default)]
    pub limits: Limits,
    /// Subscription rules and limits.
    #[serde(default)]
    pub subscriptions: SubscriptionsConfig,
    /// Bounds on the state clients make the bridge keep (retained messages, sessions,
    /// wills, wildcard registrations).
    #[serde(default)]
    pub quotas: Quotas,
    /// MQTT listeners.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Topic ACLs, first match wins.
    #[serde(default)]
    pub acl: Vec<AclRule>,
    /// The metrics and health endpoint (`crate::metrics`).
    #[serde(default)]
    pub metrics: mqtt::metrics::MetricsConfig,
}

/// RocketMQ endpoints and timings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RocketMqConfig {
    /// Name server addresses (`host:port`).
    pub namesrv: Vec<String>,
    /// Cluster for topic creation.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// Send timeout, ms.
    #[serde(default = "default_send_timeout")]
    pub send_timeout_ms: u64,
    /// Meta refresh period, s.
    #[serde(default = "default_meta_refresh")]
    pub meta_refresh_secs: u64,
    /// How long a topic route (which brokers hold a topic) is used before it is read
    /// again from the name servers, s: a broker that joins the cluster is written to and
    /// read from within about this time (the Java client's `pollNameServerInterval`).
    #[serde(default = "default_route_refresh")]
    pub route_refresh_secs: u64,
    /// Whether one topic's sends may be pipelined (`rocketmq/producer.rs`).
    #[serde(default)]
    pub pipeline_sends: PipelineSends,
}

pub use crate::rocketmq::producer::PipelineSends;

fn default_cluster() -> String {
    "DefaultCluster".to_owned()
}
fn default_send_timeout() -> u64 {
    3000
}
fn default_meta_refresh() -> u64 {
    5
}
fn default_route_refresh() -> u64 {
    30
}

/// First-level topics, wildcards and the special topics of rocketmq-mqtt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// First-level topics.
    pub first_level: Vec<String>,
    /// Wildcard filters to register at init.
    #[serde(default)]
    pub wildcards: Vec<String>,
    /// service.conf eventNotifyRetryTopic (rocketmq-mqtt's default name by default).
    #[serde(default = "default_event_notify_retry_topic")]
    pub event_notify_retry_topic: String,
    /// service.conf clientRetryTopic.
    #[serde(default = "default_client_retry_topic")]
    pub client_retry_topic: String,
    /// service.conf clientP2pTopic.
    #[serde(default = "default_client_p2p_topic")]
    pub client_p2p_topic: String,
    /// Queues per created topic.
    #[serde(default = "default_queues")]
    pub queues: u32,
    /// kvconfig LMQ_CONNECT_NODES.
    #[serde(default)]
    pub connect_nodes: Vec<String>,
    /// Compaction topic of retained messages (`state_table.rs`), created by `init`.
    #[serde(default = "default_retained_topic")]
    pub retained_topic: String,
    /// Compaction topic of persistent sessions.
    #[serde(default = "default_session_topic")]
    pub session_topic: String,
    /// Compaction topic of wills.
    #[serde(default = "default_will_topic")]
    pub will_topic: String,
    /// Compaction topic of the leases of wildcard filters registered on subscribe.
    #[serde(default = "default_wildcard_topic")]
    pub wildcard_topic: String,
}

fn default_retained_topic() -> String {
    "mqttRetained".to_owned()
}
fn default_session_topic() -> String {
    "mqttSession".to_owned()
}
fn default_will_topic() -> String {
    "mqttWill".to_owned()
}
fn default_wildcard_topic() -> String {
    "mqttWildcard".to_owned()
}

/// Bounds on the state clients make the bridge keep outside the message log. Each bridge
/// holds these tables in memory, so they also bound its memory. A write that would exceed
/// one is refused with reason 0x97 (quota exceeded). `0` means no limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quotas {
    /// Retained messages, all clients together.
    pub retained_messages: usize,
    /// Their bytes (topic + stored record), all clients together.
    pub retained_total_bytes: usize,
    /// Retained messages whose last publisher is one client.
    pub retained_messages_per_client: usize,
    /// Their bytes.
    pub retained_bytes_per_client: usize,
    /// Persistent sessions stored.
    pub sessions: usize,
    /// Bytes of one stored session (its subscriptions and delivery marks).
    pub session_record_bytes: usize,
    /// Bytes of all stored sessions.
    pub sessions_total_bytes: usize,
    /// Bytes of one stored will (topic, payload, properties).
    pub will_record_bytes: usize,
    /// Bytes of all stored wills.
    pub wills_total_bytes: usize,
    /// Wildcard filters registered per first-level topic (a kvconfig list; every publish
    /// is matched against all of them).
    pub wildcards_per_first_level: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            retained_messages: 100_000,
            retained_total_bytes: 32 << 20,
            retained_messages_per_client: 1_000,
            retained_bytes_per_client: 1 << 20,
            sessions: 100_000,
            session_record_bytes: 64 << 10,
            sessions_total_bytes: 32 << 20,
            will_record_bytes: 16 << 10,
            wills_total_bytes: 32 << 20,
            wildcards_per_first_level: 512,
        }
    }
}

impl Quotas {
    /// The retained table's limits.
    pub fn retained(&self) -> crate::state_table::TableLimits {
        crate::state_table::TableLimits {
            entries: self.retained_messages,
            bytes: self.retained_total_bytes,
            entries_per_owner: self.retained_messages_per_client,
            bytes_per_owner: self.retained_bytes_per_client,
            entry_bytes: 0,
        }
    }

    /// The session table's limits.
    pub fn sessions(&self) -> crate::state_table::TableLimits {
        crate::state_table::TableLimits {
            entries: self.sessions,
            bytes: self.sessions_total_bytes,
            entry_bytes: self.session_record_bytes,
            ..Default::default()
        }
    }

    /// The will table's limits.
    pub fn wills(&self) -> crate::state_table::TableLimits {
        crate::state_table::TableLimits {
            bytes: self.wills_total_bytes,
            entry_bytes: self.will_record_bytes,
            ..Default::default()
        }
    }
}

fn default_queues() -> u32 {
    4
}
fn default_event_notify_retry_topic() -> String {
    "eventNotifyRetryTopic".to_owned()
}
fn default_client_retry_topic() -> String {
    "clientRetryTopic".to_owned()
}
fn default_client_p2p_topic() -> String {
    "clientP2pTopic".to_owned()
}

/// rocketmq-mqtt compatible credentials.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// service.conf username.
    pub username: String,
    /// service.conf secretKey.
    pub secret_key: String,
    /// Accept clients without credentials.
    pub allow_anonymous: bool,
}

/// Limits of client connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest packet, bytes.
    pub max_packet_size: usize,
    /// Connections per bridge.
    pub max_connections: usize,
    /// CONNECT timeout, s.
    pub connect_timeout_secs: u64,
    /// MQTT 5 receive maximum.
    pub receive_maximum: u16,
    /// Stores in flight per connection: to different topics at once, to one topic one
    /// after another (order per topic).
    pub publish_pipeline: usize,
    /// Bytes (topic + payload) of publishes in flight to RocketMQ, over all connections;
    /// a connection whose publish does not fit stops reading until it does.
    pub max_storing_bytes: usize,
    /// QoS 1/2 deliveries in flight per client.
    pub max_inflight: u16,
    /// Largest retained payload, bytes.
    pub max_retained_bytes: usize,
    /// Longest client identifier, bytes (at most `mqtt::cloud_topic::MAX_CLIENT_ID_BYTES`:
    /// client ids name queues, offset groups and kvconfig keys).
    pub max_client_id_length: usize,
    /// Longest keepalive granted, seconds (MQTT 5: Server Keep Alive; 3.1.1: refused
    /// above it); 0 or 65535: no cap.
    pub max_keepalive: u16,
    /// Topic aliases an MQTT 5 client may use (Topic Alias Maximum; 0: none).
    pub topic_alias_maximum: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024,
            max_connections: 20_000,
            connect_timeout_secs: 10,
            receive_maximum: 128,
            publish_pipeline: 16,
            max_storing_bytes: 64 * 1024 * 1024,
            max_inflight: 32,
            max_retained_bytes: 64 * 1024,
            max_client_id_length: 128,
            max_keepalive: 65535,
            topic_alias_maximum: 10,
        }
    }
}

/// What a subscription to an unregistered wildcard filter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnregisteredWildcards {
    /// Register the filter in kvconfig and read it.
    Register,
    /// Refuse it with a SUBACK failure.
    Refuse,
}

/// Subscription rules and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionsConfig {
    /// Unregistered wildcard filters.
    pub unregistered: UnregisteredWildcards,
    /// Longest filter, bytes.
    pub max_filter_length: usize,
    /// Deepest filter, levels.
    pub max_filter_depth: usize,
    /// Subscriptions per client.
    pub max_per_client: usize,
    /// Connections in a row that may end with the same message unacknowledged before it
    /// is moved to the client's retry queue (clientRetryTopic), unblocking the queue.
    pub max_resends: u32,
    /// Times a message may go through the retry queue before it is dropped.
    pub max_retry_times: u32,
    /// A wildcard filter that a bridge registered on subscribe, and that no subscriber of
    /// any bridge nor stored session has used for this long, is taken out of kvconfig
    /// (`wildcards.rs`). `0`: never.
    pub prune_wildcards_after_secs: u64,
    /// How long the SUBACK of a SUBSCRIBE that registered a new wildcard filter waits, in
    /// ms, so that rocketmq-mqtt servers have re-read kvconfig (two 5 s timers in series)
    /// and dispatch their publishes into the filter's queue too (0: no wait).
    pub registration_settle_ms: u64,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        Self {
            unregistered: UnregisteredWildcards::Register,
            max_filter_length: mqtt::cloud_topic::MAX_TOPIC_BYTES,
            max_filter_depth: 8,
            max_per_client: 64,
            max_resends: 3,
            max_retry_times: 3,
            prune_wildcards_after_secs: 86_400,
            registration_settle_ms: 10_000,
        }
    }
}

/// One listener (shared with the other binary: `mqtt::listener::ListenerConfig`).
pub use mqtt::listener::ListenerConfig;
/// TLS files of a listener (`mqtt::tls::TlsFiles`).
pub use mqtt::tls::TlsFiles as TlsConfig;

/// One ACL rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Client identities this rule applies to; a trailing `*` matches any suffix.
    pub clients: Vec<String>,
    /// Filters the client may publish to (`{client}` = its identity).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Filters the client may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// Secrets that ship in this repository's configuration files: anyone can read them, so a
/// bridge that accepts them accepts everybody.
pub const PLACEHOLDER_SECRETS: [&str; 2] = ["demo-secret-change-me", "change-me"];

/// How to make a secret of one's own.
pub const SECRET_HINT: &str =
    "set auth.secret_key to a secret of your own, e.g. the output of `openssl rand -base64 32`";

impl Config {
    /// Whether clients authenticate with a secret that ships in the repository.
    pub fn uses_placeholder_secret(&self) -> bool {
        !self.auth.allow_anonymous && PLACEHOLDER_SECRETS.contains(&self.auth.secret_key.as_str())
    }

    /// Parses a configuration text and checks it.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let config: Config = mqtt::config_file::from_toml(text).map_err(|e| Error::Config {
            origin: origin.to_owned(),
            reason: e.to_string(),
        })?;
        config.check().map_err(|reason| Error::Config {
            origin: origin.to_owned(),
            reason,
        })?;
        Ok(config)
    }

    /// Loads a file, or the compiled-in defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        match path {
            None => Self::parse(DEFAULT_CONFIG, "built-in defaults"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Config {
                    origin: p.display().to_string(),
                    reason: format!("cannot read it: {e}"),
                })?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.rocketmq.namesrv.is_empty() {
            return Err("rocketmq.namesrv: at least one name server is needed".into());
        }
        if self.topics.first_level.is_empty() {
            return Err("topics.first_level: at least one first-level topic is needed".into());
        }
        for t in &self.topics.first_level {
            if t.is_empty() || t.contains(['/', '+', '#', '%', ',']) {
                return Err(format!(
                    "topics.first_level: {t:?} must be one non-empty level without / + # % ,"
                ));
            }
        }
        for (key, t) in [
            ("topics.retained_topic", &self.topics.retained_topic),
            ("topics.session_topic", &self.topics.session_topic),
            ("topics.will_topic", &self.topics.will_topic),
        ] {
            // RocketMQ's topic name rule (TopicValidator): [%|a-zA-Z0-9_-], at most 127.
            let ok = !t.is_empty()
                && t.len() <= 127
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-|".contains(c));
            if !ok || self.topics.first_level.contains(t) {
                return Err(format!(
                    "{key}: {t:?} must be a RocketMQ topic name (letters, digits, _ - |) that is not a first-level topic"
                ));
            }
        }
        for w in &self.topics.wildcards {
            crate::lmq::check_wildcard(w, &self.topics.first_level)
                .map_err(|e| format!("topics.wildcards: {e}"))?;
        }
        if self.limits.max_packet_size < mqtt::codec::MIN_PACKET_SIZE {
            return Err(format!(
                "limits.max_packet_size must be at least {}",
                mqtt::codec::MIN_PACKET_SIZE
            ));
        }
        if self.limits.max_connections == 0
            || self.limits.publish_pipeline == 0
            || self.limits.max_storing_bytes == 0
        {
            return Err(
                "limits: max_connections, publish_pipeline and max_storing_bytes must be > 0"
                    .into(),
            );
        }
        if self.limits.max_connections > mqtt::listener::MAX_CONNECTIONS_LIMIT {
            return Err(format!(
                "limits.max_connections must be at most {}",
                mqtt::listener::MAX_CONNECTIONS_LIMIT
            ));
        }
        if self.limits.max_inflight == 0 || self.subscriptions.max_per_client == 0 {
            return Err("limits.max_inflight and subscriptions.max_per_client must be > 0".into());
        }
        let max_id = mqtt::cloud_topic::MAX_CLIENT_ID_BYTES;
        if self.limits.max_client_id_length < 23 || self.limits.max_client_id_length > max_id {
            // MQTT requires servers to accept ids of 1 to 23 characters.
            return Err(format!(
                "limits.max_client_id_length must be between 23 and {max_id}"
            ));
        }
        let max_filter = mqtt::cloud_topic::MAX_TOPIC_BYTES;
        if self.subscriptions.max_filter_length > max_filter {
            return Err(format!(
                "subscriptions.max_filter_length must be at most {max_filter} (LMQ names are file names)"
            ));
        }
        if self.limits.receive_maximum == 0 {
            return Err("limits.receive_maximum must be > 0".into());
        }
        if self.listeners.is_empty() {
            return Err("at least one [[listener]] is needed".into());
        }
        let mut names = std::collections::HashSet::new();
        for l in &self.listeners {
            if !names.insert(&l.name) {
                return Err(format!("listener name {:?} is used twice", l.name));
            }
            if l.tls
                .as_ref()
                .is_some_and(|t| t.require_client_cert && t.client_ca.is_none())
            {
                return Err(format!(
                    "listener {:?}: require_client_cert needs client_ca",
                    l.name
                ));
            }
        }
        for rule in &self.acl {
            for f in rule.publish.iter().chain(&rule.subscribe) {
                mqtt::topic::validate_filter(&f.replace("{client}", "x"))
                    .map_err(|e| format!("acl filter {f:?}: {e}"))?;
            }
        }
        if !self.auth.allow_anonymous && self.auth.secret_key.is_empty() {
            return Err("auth.secret_key is empty and anonymous access is off".into());
        }
        if !self.auth.allow_anonymous && self.auth.username.is_empty() {
            return Err("auth.username is empty and anonymous access is off".into());
        }
        self.metrics_addr()?;
        Ok(())
    }

    /// Where the metrics endpoint listens; `None` when it is turned off.
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        self.metrics
            .address(crate::metrics::DEFAULT_BIND)
            .map_err(|e| format!("metrics.bind: {e}"))
    }

    /// How long a topic route is used before it is read again (`route_refresh_secs`).
    pub fn route_refresh(&self) -> Duration {
        Duration::from_secs(self.rocketmq.route_refresh_secs.max(1))
    }

    /// Send timeout.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.rocketmq.send_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_defaults_are_valid() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.topics.first_level, vec!["t1".to_string()]);
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.metrics_addr(), Ok(Some(crate::metrics::DEFAULT_BIND)));
        let off = DEFAULT_CONFIG.replace("bind = \"127.0.0.1:9182\"", "bind = \"\"");
        assert_eq!(Config::parse(&off, "x").unwrap().metrics_addr(), Ok(None));
        let bad = DEFAULT_CONFIG.replace("bind = \"127.0.0.1:9182\"", "bind = \":x\"");
        let e = Config::parse(&bad, "x").unwrap_err().to_string();
        assert!(e.contains("metrics.bind"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_the_origin() {
        let text = DEFAULT_CONFIG.replace("[auth]", "[auth]\nfoo = 1");
        let e = Config::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("foo"), "{e}");
    }

    #[test]
    fn bad_first_level_topics_are_refused() {
        let text = DEFAULT_CONFIG.replace("first_level = [\"t1\"]", "first_level = [\"a/b\"]");
        assert!(Config::parse(&text, "x").is_err());
        let text =
            DEFAULT_CONFIG.replace("wildcards = [\"t1/+\", \"t1/#\"]", "wildcards = [\"t2/+\"]");
        assert!(Config::parse(&text, "x").is_err());
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        for (old, new) in [
            ("max_connections = 20000", "max_connections = 2000000000"),
            ("max_storing_bytes = 67108864", "max_storing_bytes = 0"),
        ] {
            let text = DEFAULT_CONFIG.replace(old, new);
            assert_ne!(text, DEFAULT_CONFIG, "{old}");
            let e = Config::parse(&text, "x").unwrap_err().to_string();
            assert!(
                e.contains("max_connections") || e.contains("max_storing_bytes"),
                "{e}"
            );
        }
    }
}
