//! The broker's part of the configuration: its own `[sessions]` section, and
//! [`Settings`], the values [`LocalBroker::new`](super::LocalBroker::new) takes from the
//! other sections (`server` fills it from `config::Config`, so the broker does not
//! depend on how the file is assembled).

use std::time::Duration;

use serde::Deserialize;

use crate::acl::AclRule;
use crate::auth::AuthConfig;
use crate::topic_map::TopicMap;

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

/// Everything the broker is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[sessions]`.
    pub sessions: SessionsConfig,
    /// `[auth]`: who may connect.
    pub auth: AuthConfig,
    /// `[[acl]]` rules (none: everything is allowed).
    pub acl: Vec<AclRule>,
    /// `[uplink] topics`: the filters of the topics journaled for the cloud.
    pub uplink_topics: Vec<String>,
    /// The `[uplink]` map rules, to check a topic's cloud name before journaling it.
    pub topic_map: TopicMap,
    /// `limits.max_subscriptions`: subscriptions one client may hold.
    pub max_subscriptions: usize,
    /// `limits.max_filter_length`: longest topic filter, bytes.
    pub max_filter_length: usize,
    /// `limits.max_filter_depth`: most levels of a topic filter.
    pub max_filter_depth: usize,
    /// `limits.subscriber_queue`: messages waiting for one connected subscriber.
    pub subscriber_queue: usize,
    /// `limits.subscriber_queue_bytes`: their bytes (topic + payload).
    pub subscriber_queue_bytes: usize,
    /// `limits.subscriber_wait_ms`: how long a publish waits for room in a full
    /// subscriber queue.
    pub subscriber_wait: Duration,
    /// `limits.publish_pipeline`: publishes of one connection being stored at once.
    pub publish_pipeline: usize,
}
