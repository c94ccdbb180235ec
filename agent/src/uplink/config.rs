//! The `[uplink]` and `[downlink]` configuration: which local topics go to the cloud, the
//! bridge to send them to (address, TLS with a pinned CA and an optional gateway
//! certificate, credentials), the topic mapping, the in-flight window, the drain policy
//! and the reconnect backoff; and which cloud filters come back down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Where uplink messages go and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// Topic filters; a publish matching any of them is appended to the journal (and
    /// acknowledged only after the commit).
    pub topics: Vec<String>,
    /// The cloud bridge, `host:port`. Unset: no uplink; messages wait in the journal.
    pub bridge: Option<String>,
    /// This gateway's id: the `{gateway}` of topic templates and the first part of every
    /// message's stable id. Default: the host name.
    pub gateway_id: Option<String>,
    /// MQTT client id at the bridge (`{gateway}` is replaced). With mutual TLS the
    /// bridge requires it to equal the certificate's common name.
    pub client_id: String,
    /// The cloud's first-level topic: the `{first}` of topic templates.
    pub first_level: String,
    /// User name and password sent in CONNECT (cloud-bridge: any user name configured
    /// there, and Base64(HmacSHA1(secret, client id)), which `cloud-bridge password`
    /// prints). `password_file` is read at each connect (keep secrets out of this file).
    pub username: Option<String>,
    /// See `username`.
    pub password: Option<String>,
    /// See `username`.
    pub password_file: Option<PathBuf>,
    /// TLS to the bridge. Unset: plain TCP, allowed only to a loopback address.
    pub tls: Option<UplinkTls>,
    /// Topic mapping rules, first match wins (default: `"" -> "{first}/{gateway}/"`).
    pub map: Vec<TopicRule>,
    /// Entries in flight: sent and not yet deleted from the journal (acknowledged, and
    /// the deletion committed; with `synchronous = full` also flushed). At most this many
    /// are sent twice after a crash or a lost connection, and with `full` after a power
    /// cut. Publishes in flight per connection are also capped by the bridge's receive
    /// maximum.
    pub window: u16,
    /// MQTT keepalive, seconds.
    pub keepalive_secs: u16,
    /// Session expiry asked of the bridge (the downlink's persistent session), seconds.
    pub session_expiry_secs: u32,
    /// `fifo`: strictly in journal order. `live-first`: messages that arrive while a
    /// backlog drains go out before the rest of the backlog (order per topic then holds
    /// within the backlog and within live traffic, not across them).
    pub drain: DrainPolicy,
    /// Messages per second at most (metered links); 0 = no cap.
    pub max_rate: u32,
    /// First reconnect delay, milliseconds; doubles up to `backoff_max_ms`, with jitter.
    pub backoff_min_ms: u64,
    /// Longest reconnect delay, milliseconds.
    pub backoff_max_ms: u64,
    /// TCP connect + TLS handshake + CONNACK must complete within this, seconds.
    pub connect_timeout_secs: u64,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            topics: vec!["#".to_owned()],
            bridge: None,
            gateway_id: None,
            client_id: "{gateway}".to_owned(),
            first_level: "t1".to_owned(),
            username: None,
            password: None,
            password_file: None,
            tls: None,
            map: Vec::new(),
            window: 256,
            keepalive_secs: 30,
            session_expiry_secs: 7 * 24 * 3600,
            drain: DrainPolicy::Fifo,
            max_rate: 0,
            backoff_min_ms: 500,
            backoff_max_ms: 60_000,
            connect_timeout_secs: 10,
        }
    }
}

/// TLS to the bridge: the CA the bridge's certificate must chain to (pinned: the system's
/// roots are not used), and optionally this gateway's certificate for mutual TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkTls {
    /// CA bundle, PEM.
    pub ca: PathBuf,
    /// Gateway certificate chain, PEM (mutual TLS).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Gateway private key, PEM.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Name checked against the bridge's certificate; default: the host of `bridge`.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// How a backlog drains next to live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainPolicy {
    /// Strict journal order.
    #[default]
    Fifo,
    /// New messages first, the backlog in the gaps.
    LiveFirst,
}

/// One mapping rule: local topics starting with `local` go to the cloud as `cloud` +
/// the rest, and cloud topics starting with `cloud` come down as `local` + the rest.
/// `{first}` and `{gateway}` are replaced in `cloud`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// Local topic prefix ("" = every topic).
    pub local: String,
    /// Cloud topic prefix.
    pub cloud: String,
}

/// Which cloud messages come down to local subscribers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownlinkConfig {
    /// Filters subscribed at the bridge (`{first}`, `{gateway}` replaced), in the
    /// uplink's persistent session. Empty: no downlink.
    pub subscribe: Vec<String>,
    /// QoS of those subscriptions (0 or 1).
    pub qos: u8,
    /// Messages handed down at once (the receive maximum sent to the bridge).
    pub window: u16,
}

impl Default for DownlinkConfig {
    fn default() -> Self {
        Self {
            subscribe: vec!["{first}/{gateway}/cmd/#".to_owned()],
            qos: 1,
            window: 32,
        }
    }
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The host name, for the default gateway id.
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

impl UplinkConfig {
    /// The gateway id in use.
    pub fn gateway(&self) -> String {
        self.gateway_id.clone().unwrap_or_else(host_name)
    }

    /// Replaces `{first}` and `{gateway}` in `template`.
    pub fn expand(&self, template: &str) -> String {
        template
            .replace("{first}", &self.first_level)
            .replace("{gateway}", &self.gateway())
    }

    /// The client id in use.
    pub fn client(&self) -> String {
        self.expand(&self.client_id)
    }

    /// The mapping rules, expanded (the default rule when none are configured).
    pub fn rules(&self) -> Vec<(String, String)> {
        if self.map.is_empty() {
            return vec![(String::new(), self.expand("{first}/{gateway}/"))];
        }
        self.map
            .iter()
            .map(|r| (r.local.clone(), self.expand(&r.cloud)))
            .collect()
    }

    /// Reconnect delays.
    pub fn backoff(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.backoff_min_ms),
            Duration::from_millis(self.backoff_max_ms),
        )
    }

    /// Checks the section (without touching the network); errors name the key.
    pub fn check(&self, downlink: &DownlinkConfig) -> Result<()> {
        for (i, f) in self.topics.iter().enumerate() {
            mqtt::topic::validate_filter(f)
                .map_err(|e| bad(format!("uplink.topics[{i}]"), e.to_string()))?;
        }
        let Some(bridge) = &self.bridge else {
            return Ok(());
        };
        let (host, port) = split_host_port(bridge).map_err(|e| bad("uplink.bridge", e))?;
        let gateway = self.gateway();
        // The gateway id is a topic level and the client id names queues at the bridge:
        // both follow the client id rules of `mqtt::cloud_topic`.
        mqtt::cloud_topic::check_client_id(&gateway, usize::MAX)
            .map_err(|e| bad("uplink.gateway_id", format!("{gateway:?}: {e}")))?;
        if self.first_level.is_empty() || self.first_level.contains(['/', '+', '#', '%', ',']) {
            return Err(bad("uplink.first_level", "must be one topic level"));
        }
        mqtt::cloud_topic::check_client_id(&self.client(), usize::MAX)
            .map_err(|e| bad("uplink.client_id", format!("{:?}: {e}", self.client())))?;
        if self.password.is_some() && self.password_file.is_some() {
            return Err(bad(
                "uplink.password_file",
                "set password or password_file, not both",
            ));
        }
        for (field, v) in [
            ("uplink.window", u64::from(self.window)),
            ("uplink.backoff_min_ms", self.backoff_min_ms),
            ("uplink.connect_timeout_secs", self.connect_timeout_secs),
        ] {
            if v == 0 {
                return Err(bad(field, "must be greater than 0"));
            }
        }
        if self.backoff_max_ms < self.backoff_min_ms {
            return Err(bad("uplink.backoff_max_ms", "smaller than backoff_min_ms"));
        }
        for (i, (local, cloud)) in self.rules().iter().enumerate() {
            if local.contains(['+', '#']) || cloud.contains(['+', '#']) {
                return Err(bad(
                    format!("uplink.map[{i}]"),
                    "prefixes cannot hold wildcards",
                ));
            }
            mqtt::cloud_topic::check_topic(cloud)
                .map_err(|e| bad(format!("uplink.map[{i}].cloud"), format!("{cloud:?}: {e}")))?;
            if cloud.is_empty() || !cloud.starts_with(&self.first_level) {
                return Err(bad(
                    format!("uplink.map[{i}].cloud"),
                    format!(
                        "{cloud:?} must start with the first-level topic {:?}",
                        self.first_level
                    ),
                ));
            }
        }
        match &self.tls {
            Some(tls) => {
                if tls.cert.is_some() != tls.key.is_some() {
                    return Err(bad("uplink.tls", "cert and key go together"));
                }
                self.client_tls()?;
                self.server_name()?;
            }
            None => {
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    return Err(bad(
                        "uplink.tls",
                        format!("needed for {host}:{port} (plain TCP only to loopback)"),
                    ));
                }
            }
        }
        for (i, f) in downlink.subscribe.iter().enumerate() {
            let f = self.expand(f);
            mqtt::topic::validate_filter(&f)
                .map_err(|e| bad(format!("downlink.subscribe[{i}]"), e.to_string()))?;
        }
        if downlink.qos > 1 {
            return Err(bad("downlink.qos", "0 or 1"));
        }
        if downlink.window == 0 {
            return Err(bad("downlink.window", "must be greater than 0"));
        }
        Ok(())
    }

    /// The rustls client configuration: the pinned CA, and the gateway certificate.
    pub fn client_tls(&self) -> Result<Option<Arc<ClientConfig>>> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let identity = tls.cert.as_deref().zip(tls.key.as_deref());
        let config = mqtt::tls::client_config(&tls.ca, identity)
            .map_err(|e| bad("uplink.tls", e.to_string()))?;
        Ok(Some(config))
    }

    /// The name the bridge's certificate must carry.
    pub fn server_name(&self) -> Result<ServerName<'static>> {
        let bridge = self.bridge.as_deref().unwrap_or_default();
        let (host, _) = split_host_port(bridge).map_err(|e| bad("uplink.bridge", e))?;
        let name = self
            .tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .unwrap_or(host);
        ServerName::try_from(name.clone())
            .map_err(|e| bad("uplink.tls.server_name", format!("{name:?}: {e}")))
    }

    /// The password to send, if any (reads `password_file`).
    pub fn password(&self) -> Result<Option<String>> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        match &self.password_file {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// Splits `host:port` (`[v6]:port` too).
pub fn split_host_port(addr: &str) -> std::result::Result<(String, u16), String> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{addr:?}: bad port"))?;
    if host.is_empty() {
        return Err(format!("{addr:?}: empty host"));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with_bridge(bridge: &str) -> UplinkConfig {
        UplinkConfig {
            bridge: Some(bridge.to_owned()),
            gateway_id: Some("gw-1".to_owned()),
            ..UplinkConfig::default()
        }
    }

    #[test]
    fn default_rule_prefixes_first_level_and_gateway() {
        let c = with_bridge("127.0.0.1:1883");
        assert_eq!(c.rules(), vec![(String::new(), "t1/gw-1/".to_owned())]);
        assert_eq!(c.client(), "gw-1");
        c.check(&DownlinkConfig::default()).unwrap();
    }

    #[test]
    fn plain_tcp_only_to_loopback() {
        let e = with_bridge("cloud.example.com:1883")
            .check(&DownlinkConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("uplink.tls"), "{e}");
        with_bridge("[::1]:1883")
            .check(&DownlinkConfig::default())
            .unwrap();
        with_bridge("localhost:1883")
            .check(&DownlinkConfig::default())
            .unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        for (c, key) in [
            (with_bridge("127.0.0.1"), "uplink.bridge"),
            (
                UplinkConfig {
                    gateway_id: Some("a/b".to_owned()),
                    ..with_bridge("127.0.0.1:1")
                },
                "uplink.gateway_id",
            ),
            (
                UplinkConfig {
                    map: vec![TopicRule {
                        local: "a/".to_owned(),
                        cloud: "other/".to_owned(),
                    }],
                    ..with_bridge("127.0.0.1:1")
                },
                "uplink.map[0].cloud",
            ),
            (
                UplinkConfig {
                    tls: Some(UplinkTls {
                        ca: "/nonexistent/ca.pem".into(),
                        cert: None,
                        key: None,
                        server_name: None,
                    }),
                    ..with_bridge("127.0.0.1:1")
                },
                "/nonexistent/ca.pem",
            ),
        ] {
            let e = c.check(&DownlinkConfig::default()).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
