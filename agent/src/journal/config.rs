//! Configuration of the journal (the `[journal]` table of the agent's TOML config).
//!
//! ```toml
//! [journal]
//! max_bytes = 268435456            # 256 MiB of topic + payload + user-property bytes
//! min_free_disk_bytes = 67108864   # stop growing when less than 64 MiB are free
//! when_full = "drop-oldest"        # or "reject-new"
//! synchronous = "full"             # or "normal", "off"
//! default_priority = "normal"
//! # default_ttl_secs = 604800      # unset: messages without a rule never expire
//!
//! [[journal.rules]]                # first matching rule wins
//! filter = "alarms/#"
//! priority = "critical"
//!
//! [[journal.rules]]
//! filter = "telemetry/+/raw"
//! priority = "low"
//! ttl_secs = 3600
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::filter::TopicFilter;
use crate::error::{Error, Result};

/// Priority class of a journal entry. Higher classes are sent first (when the uplink reads
/// in priority order) and dropped last (policy `drop-oldest`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    /// Bulk data that may be dropped first.
    Low = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Important data.
    High = 2,
    /// Alarms: dropped only when nothing else is left.
    Critical = 3,
}

impl Priority {
    /// All classes, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];

    /// The integer stored in the database.
    pub fn as_i64(self) -> i64 {
        self as i64
    }

    /// Index into per-class arrays (0 = lowest).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The class stored as `value`, if any.
    pub fn from_i64(value: i64) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_i64() == value)
    }

    /// The config spelling (`low`, `normal`, `high`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

/// SQLite's `synchronous` setting, i.e. when a commit is durable. See the loss windows in
/// the [journal module doc](super).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// fsync the WAL at every commit: an acknowledged message survives a power cut.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a process crash, a power cut may lose the
    /// last commits.
    Normal,
    /// Never fsync: survives a process crash only if the OS does not crash.
    Off,
}

impl SyncMode {
    /// The value for `PRAGMA synchronous`.
    pub fn pragma_value(self) -> &'static str {
        match self {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
            SyncMode::Off => "OFF",
        }
    }
}

/// What an append does when the byte quota or the free-disk watermark is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Delete the oldest entries of the lowest priority class until the new one fits;
    /// never an entry of a higher class than the new one (then the new one is refused).
    #[default]
    DropOldest,
    /// Refuse the new message (`Error::QuotaExceeded`, MQTT 5 reason 0x97).
    RejectNew,
}

/// One classification rule: topics matching `filter` get `priority` and `ttl_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// MQTT topic filter (`+` and `#` allowed).
    pub filter: String,
    /// Priority class of matching messages.
    #[serde(default)]
    pub priority: Priority,
    /// Time to live in seconds from receipt; unset means `default_ttl_secs`.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// Journal configuration. Every field has a default, so an empty `[journal]` table works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Byte quota: sum over stored entries of topic + payload + user-property bytes.
    pub max_bytes: u64,
    /// Free-disk watermark: the journal does not grow when the file system holding it
    /// has less than this many bytes available. 0 disables the check.
    pub min_free_disk_bytes: u64,
    /// Policy when the quota or the watermark is reached.
    pub when_full: WhenFull,
    /// SQLite `synchronous`.
    pub synchronous: SyncMode,
    /// Most commands committed in one transaction (group commit).
    pub max_batch: usize,
    /// Capacity of the channel to the journal thread; appenders wait when it is full.
    pub queue_capacity: usize,
    /// Expired entries are swept at most this often (seconds); 0 sweeps at every batch.
    pub sweep_interval_secs: u64,
    /// Run `PRAGMA quick_check` when opening (reads the whole file once).
    pub quick_check_on_open: bool,
    /// Priority of messages that match no rule.
    pub default_priority: Priority,
    /// TTL of messages whose rule has none; unset means they never expire.
    pub default_ttl_secs: Option<u64>,
    /// Classification rules, first match wins.
    pub rules: Vec<TopicRule>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            max_bytes: 256 * 1024 * 1024,
            min_free_disk_bytes: 64 * 1024 * 1024,
            when_full: WhenFull::DropOldest,
            synchronous: SyncMode::Full,
            max_batch: 1024,
            queue_capacity: 4096,
            sweep_interval_secs: 60,
            quick_check_on_open: true,
            default_priority: Priority::Normal,
            default_ttl_secs: None,
            rules: Vec::new(),
        }
    }
}

impl JournalConfig {
    /// Checks every value; errors name the offending key.
    pub fn validate(&self) -> Result<()> {
        self.classifier().map(|_| ())
    }

    /// Validates the config and compiles its rules.
    pub fn classifier(&self) -> Result<Classifier> {
        let bad = |field: &str, reason: &str| Error::Config {
            field: format!("journal.{field}"),
            reason: reason.to_owned(),
        };
        if self.max_bytes == 0 {
            return Err(bad("max_bytes", "must be greater than 0"));
        }
        // Each sizes a buffer or a channel (at most 2^29 - 1 on 32-bit gateways).
        for (field, v) in [
            ("max_batch", self.max_batch),
            ("queue_capacity", self.queue_capacity),
        ] {
            if v == 0 {
                return Err(bad(field, "must be greater than 0"));
            }
            if v > 1_000_000 {
                return Err(bad(field, "must be at most 1000000"));
            }
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let filter = TopicFilter::parse(&rule.filter)
                .map_err(|e| bad(&format!("rules[{i}].filter"), &e.to_string()))?;
            let ttl = rule.ttl_secs.or(self.default_ttl_secs);
            rules.push((filter, rule.priority, ttl.map(Duration::from_secs)));
        }
        Ok(Classifier {
            rules,
            default_priority: self.default_priority,
            default_ttl: self.default_ttl_secs.map(Duration::from_secs),
        })
    }
}

/// The compiled classification rules: topic -> (priority, TTL).
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<(TopicFilter, Priority, Option<Duration>)>,
    default_priority: Priority,
    default_ttl: Option<Duration>,
}

impl Classifier {
    /// The priority class and TTL for `topic` (first matching rule, else the defaults).
    pub fn classify(&self, topic: &str) -> (Priority, Option<Duration>) {
        self.rules
            .iter()
            .find(|(f, _, _)| f.matches(topic))
            .map(|(_, p, ttl)| (*p, *ttl))
            .unwrap_or((self.default_priority, self.default_ttl))
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_defaults() {
        let cfg: JournalConfig = toml::from_str("").expect("parse");
        assert_eq!(cfg, JournalConfig::default());
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn module_doc_example_parses() {
        let text = "max_bytes = 1000\nwhen_full = \"reject-new\"\nsynchronous = \"normal\"\n\
                    [[rules]]\nfilter = \"alarms/#\"\npriority = \"critical\"\n\
                    [[rules]]\nfilter = \"telemetry/+/raw\"\npriority = \"low\"\nttl_secs = 3600\n";
        let cfg: JournalConfig = toml::from_str(text).expect("parse");
        assert_eq!(cfg.when_full, WhenFull::RejectNew);
        assert_eq!(cfg.synchronous, SyncMode::Normal);
        let c = cfg.classifier().expect("valid");
        assert_eq!(c.classify("alarms/fire"), (Priority::Critical, None));
        assert_eq!(
            c.classify("telemetry/m1/raw"),
            (Priority::Low, Some(Duration::from_secs(3600)))
        );
        assert_eq!(c.classify("other"), (Priority::Normal, None));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<JournalConfig>("max_byte = 1").is_err());
        assert!(toml::from_str::<JournalConfig>("when_full = \"drop\"").is_err());
        assert!(toml::from_str::<JournalConfig>("[[rules]]\nfilter=\"a\"\nprio=\"low\"").is_err());
        let cfg = JournalConfig {
            rules: vec![TopicRule {
                filter: "a/#/b".into(),
                priority: Priority::Low,
                ttl_secs: None,
            }],
            ..JournalConfig::default()
        };
        let err = cfg.validate().expect_err("bad filter accepted").to_string();
        assert!(err.contains("journal.rules[0].filter"), "{err}");
        let zero = JournalConfig {
            max_bytes: 0,
            ..JournalConfig::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn default_ttl_applies_to_rules_without_one() {
        let cfg = JournalConfig {
            default_ttl_secs: Some(60),
            rules: vec![TopicRule {
                filter: "x/#".into(),
                priority: Priority::High,
                ttl_secs: None,
            }],
            ..JournalConfig::default()
        };
        let c = cfg.classifier().expect("valid");
        assert_eq!(
            c.classify("x/1"),
            (Priority::High, Some(Duration::from_secs(60)))
        );
        assert_eq!(
            c.classify("y"),
            (Priority::Normal, Some(Duration::from_secs(60)))
        );
    }
}
