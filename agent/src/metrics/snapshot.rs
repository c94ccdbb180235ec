//! The agent's figures at one instant, and their OpenMetrics encoding (metric names are
//! listed in docs/operating.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mqtt::metrics::ServerCounterValues;
use mqtt::metrics::encode::{counter, counter_f64, counter_family, gauge, gauge_f64, gauge_family};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::journal::{Counter, Stats};
use crate::sensors::SensorStats;
use crate::uplink::status::{STAGE_BUCKETS_MICROS, StageTimes, UplinkStatus};

/// Uplink states as exported (`edge_agent_uplink_state{state}`), one series each.
pub const UPLINK_STATES: [&str; 6] = [
    "disabled",
    "connecting",
    "connected",
    "backoff",
    "refused",
    "stopped",
];

/// A bound MQTT listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// Its configured name.
    pub name: String,
    /// The bound address.
    pub addr: SocketAddr,
}

/// The local broker's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerFigures {
    /// Sessions: connected, or persistent and offline.
    pub sessions: u64,
    /// Messages handed to local subscribers' connections.
    pub delivered: u64,
    /// Deliveries dropped: a connected subscriber's queue stayed full.
    pub dropped_subscriber_full: u64,
    /// Deliveries dropped: an offline persistent session's queue was full.
    pub dropped_queue_full: u64,
    /// Uplink messages not journaled: their cloud topic is one RocketMQ cannot carry
    /// (`mqtt::cloud_topic`); delivered locally only.
    #[serde(default)]
    pub dropped_cloud_topic_refused: u64,
    /// Deliveries dropped: no room in `broker.db` for an offline session's message.
    #[serde(default)]
    pub dropped_db_full: u64,
    /// Retained publishes not retained (count, bytes or `broker.db` bound reached).
    #[serde(default)]
    pub retained_refused: u64,
    /// Retained messages held now.
    #[serde(default)]
    pub retained: u64,
    /// Their bytes (topic + payload).
    #[serde(default)]
    pub retained_bytes: u64,
    /// CONNECTs refused: `sessions.max_sessions` reached.
    #[serde(default)]
    pub sessions_refused: u64,
    /// Subscriptions refused: too many for the client, or a filter too long or deep.
    #[serde(default)]
    pub subscriptions_refused: u64,
    /// CONNECTs refused: every password check slot stayed busy.
    #[serde(default)]
    pub auth_busy: u64,
    /// Bytes of content in `broker.db`.
    #[serde(default)]
    pub db_bytes: u64,
}

/// The journal's figures (from `Journal::stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalFigures {
    /// Stored entries (the depth).
    pub entries: u64,
    /// Their quota bytes.
    pub bytes: u64,
    /// The quota.
    pub max_bytes: u64,
    /// Database file plus WAL.
    pub file_bytes: u64,
    /// Age of the oldest entry.
    pub oldest_age_ms: Option<u64>,
    /// Every persisted counter by name (`appended`, `confirmed`, drops by reason).
    pub counters: BTreeMap<String, u64>,
    /// Transactions committed since start.
    #[serde(default)]
    pub commits: u64,
    /// Time spent in them, in microseconds.
    #[serde(default)]
    pub commit_micros: u64,
    /// WAL flushes since start (`synchronous = full`).
    #[serde(default)]
    pub wal_flushes: u64,
    /// Time spent in them, in microseconds.
    #[serde(default)]
    pub wal_flush_micros: u64,
    /// A WAL flush failed: appends are refused until the agent is restarted.
    #[serde(default)]
    pub wal_flush_failed: bool,
}

impl From<&Stats> for JournalFigures {
    fn from(s: &Stats) -> Self {
        Self {
            entries: s.entries,
            bytes: s.bytes,
            max_bytes: s.max_bytes,
            file_bytes: s.file_bytes,
            oldest_age_ms: s.oldest_age_ms,
            counters: s.counters.iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            commits: s.writer.batches,
            commit_micros: s.writer.batch_micros,
            wal_flushes: s.writer.wal_flushes,
            wal_flush_micros: s.writer.wal_flush_micros,
            wal_flush_failed: s.writer.wal_flush_failed,
        }
    }
}

impl JournalFigures {
    fn counter(&self, c: Counter) -> u64 {
        self.counters.get(c.name()).copied().unwrap_or_default()
    }
}

/// The uplink's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkValues {
    /// One of [`UPLINK_STATES`].
    pub state: String,
    /// Publishes sent and not yet acknowledged.
    pub in_flight: u64,
    /// Publishes sent (resends included).
    pub sent: u64,
    /// Publishes the bridge acknowledged.
    pub acked: u64,
    /// Messages the bridge refused for good.
    pub rejected: u64,
    /// Successful connections.
    pub connects: u64,
    /// Failed connection attempts and lost connections.
    pub failures: u64,
    /// The last failure since the last successful connection.
    pub last_error: Option<String>,
    /// The window (`[uplink] window`).
    #[serde(default)]
    pub window: u64,
    /// Its slots held: entries sent and not yet acknowledged, or acknowledged and not
    /// yet confirmed in the journal.
    #[serde(default)]
    pub window_used: u64,
    /// Entries read from the journal by the uplink.
    #[serde(default)]
    pub journal_read_entries: u64,
    /// Time of the uplink's journal reads (a batch each).
    #[serde(default)]
    pub journal_read: StageFigures,
    /// From a PUBLISH's write to its PUBACK.
    #[serde(default)]
    pub puback: StageFigures,
    /// From a PUBACK to the journal's answer to its confirm.
    #[serde(default)]
    pub confirm: StageFigures,
}

impl From<&UplinkStatus> for UplinkValues {
    fn from(u: &UplinkStatus) -> Self {
        let (window, window_used) = u.window();
        Self {
            state: u.state().as_str().to_owned(),
            in_flight: UplinkStatus::get(&u.inflight),
            sent: UplinkStatus::get(&u.sent),
            acked: UplinkStatus::get(&u.acked),
            rejected: UplinkStatus::get(&u.rejected) + UplinkStatus::get(&u.unmapped),
            connects: UplinkStatus::get(&u.connects),
            failures: UplinkStatus::get(&u.failures),
            last_error: u.last_error(),
            window,
            window_used,
            journal_read_entries: UplinkStatus::get(&u.journal_read_entries),
            journal_read: StageFigures::from(&u.journal_read),
            puback: StageFigures::from(&u.puback),
            confirm: StageFigures::from(&u.confirm),
        }
    }
}

/// One stage's latency histogram (an uplink [`StageTimes`]) at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageFigures {
    /// Observations per bucket, not cumulative: `counts[i]` took at most
    /// `STAGE_BUCKETS_MICROS[i]` µs (and more than the bound before); the last one,
    /// more than every bound.
    pub counts: Vec<u64>,
    /// Sum of the observations, microseconds.
    pub sum_micros: u64,
}

impl From<&StageTimes> for StageFigures {
    fn from(t: &StageTimes) -> Self {
        Self {
            counts: t.counts(),
            sum_micros: t.sum_micros(),
        }
    }
}

impl StageFigures {
    /// Observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their mean, milliseconds (0 without any).
    pub fn average_ms(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum_micros as f64 / n as f64 / 1000.0,
        }
    }

    /// Writes the histogram `name` (seconds).
    fn encode(
        &self,
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
    ) -> Result<(), std::fmt::Error> {
        let bounds = STAGE_BUCKETS_MICROS
            .iter()
            .map(|m| *m as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY));
        // A snapshot from another version may have fewer buckets: the rest are empty.
        let counts = self.counts.iter().copied().chain(std::iter::repeat(0));
        let mut buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
        // Anything beyond the known buckets counts as above every bound.
        let extra: u64 = self.counts.iter().skip(buckets.len()).sum();
        if let Some(last) = buckets.last_mut() {
            last.1 += extra;
        }
        let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
        m.encode_histogram::<NoLabelSet>(self.sum_micros as f64 / 1e6, self.count(), &buckets, None)
    }
}

impl Default for UplinkValues {
    fn default() -> Self {
        Self {
            state: "disabled".to_owned(),
            in_flight: 0,
            sent: 0,
            acked: 0,
            rejected: 0,
            connects: 0,
            failures: 0,
            last_error: None,
            window: 0,
            window_used: 0,
            journal_read_entries: 0,
            journal_read: StageFigures::default(),
            puback: StageFigures::default(),
            confirm: StageFigures::default(),
        }
    }
}

/// One sensor's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorValues {
    /// The sensor id.
    pub id: String,
    /// `starting`, `ok` or `failing`.
    #[serde(default)]
    pub state: String,
    /// Readings published.
    pub readings: u64,
    /// Errors by kind (`nack`, `missing`, `bus`, ...).
    pub errors: BTreeMap<String, u64>,
}

impl From<&SensorStats> for SensorValues {
    fn from(s: &SensorStats) -> Self {
        Self {
            id: s.id.clone(),
            state: s.state.as_str().to_owned(),
            readings: s.readings_published,
            errors: s
                .errors
                .iter()
                .map(|(k, n)| (k.as_str().to_owned(), *n))
                .collect(),
        }
    }
}

/// Everything at one instant: what `/metrics`, `/status` and `edge-agent status` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The agent's version.
    pub version: String,
    /// Bound MQTT listeners.
    pub listeners: Vec<ListenerInfo>,
    /// Connections and publishes of the MQTT listeners.
    pub server: ServerCounterValues,
    /// The local broker.
    pub broker: BrokerFigures,
    /// The journal (`None` when it could not be read: see `journal_error`).
    pub journal: Option<JournalFigures>,
    /// Why the journal could not be read.
    pub journal_error: Option<String>,
    /// The uplink.
    pub uplink: UplinkValues,
    /// The sensors.
    pub sensors: Vec<SensorValues>,
}

/// Journal counters exported as drops (`edge_agent_dropped_total{reason}`).
const JOURNAL_DROPS: [Counter; 6] = [
    Counter::Expired,
    Counter::QuotaDropOldest,
    Counter::DiskDropOldest,
    Counter::RejectedQuota,
    Counter::RejectedDisk,
    Counter::RejectedTooLarge,
];

impl Snapshot {
    /// The OpenMetrics exposition (metric names prefixed `edge_agent_`).
    pub fn openmetrics(&self) -> String {
        let mut registry = Registry::with_prefix("edge_agent");
        registry.register_collector(Box::new(Encoded(self.clone())));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "metrics not encoded");
        }
        out
    }

    /// Drops by reason: the journal's and the broker's.
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<(&'static str, u64)> = JOURNAL_DROPS
            .iter()
            .map(|c| {
                let n = self.journal.as_ref().map_or(0, |j| j.counter(*c));
                (c.name(), n)
            })
            .collect();
        v.push(("subscriber_full", self.broker.dropped_subscriber_full));
        v.push(("queue_full", self.broker.dropped_queue_full));
        v.push((
            "cloud_topic_refused",
            self.broker.dropped_cloud_topic_refused,
        ));
        v.push(("db_full", self.broker.dropped_db_full));
        v
    }

    fn encode(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let one = |n: u64| [("version", self.version.clone())].map(|l| ([l], n));
        gauge_family(e, "build_info", "The agent's version", &one(1))?;
        self.server.encode(e)?;
        let b = &self.broker;
        gauge(
            e,
            "sessions",
            "Broker sessions (connected or persistent)",
            b.sessions,
        )?;
        counter(
            e,
            "delivered",
            "Messages handed to local subscribers",
            b.delivered,
        )?;
        gauge(
            e,
            "retained",
            "Retained messages held (sessions.max_retained)",
            b.retained,
        )?;
        gauge(
            e,
            "retained_bytes",
            "Bytes (topic + payload) of the retained messages (sessions.max_retained_bytes)",
            b.retained_bytes,
        )?;
        gauge(
            e,
            "broker_db_bytes",
            "Bytes of content in broker.db (sessions.max_db_bytes)",
            b.db_bytes,
        )?;
        counter_family(
            e,
            "refused",
            "Requests refused by a resource bound, by bound",
            &[
                ([("reason", "retained")], b.retained_refused),
                ([("reason", "sessions")], b.sessions_refused),
                ([("reason", "subscriptions")], b.subscriptions_refused),
                ([("reason", "auth_busy")], b.auth_busy),
            ],
        )?;
        let drops: Vec<_> = self
            .drops()
            .into_iter()
            .map(|(r, n)| ([("reason", r)], n))
            .collect();
        counter_family(
            e,
            "dropped",
            "Messages dropped or refused, by reason",
            &drops,
        )?;
        if let Some(j) = &self.journal {
            gauge(
                e,
                "journal_entries",
                "Journal depth (entries waiting)",
                j.entries,
            )?;
            gauge(
                e,
                "journal_bytes",
                "Quota bytes of the waiting entries",
                j.bytes,
            )?;
            gauge(
                e,
                "journal_max_bytes",
                "The journal's byte quota",
                j.max_bytes,
            )?;
            gauge(
                e,
                "journal_file_bytes",
                "Journal file plus WAL",
                j.file_bytes,
            )?;
            let age = j.oldest_age_ms.unwrap_or_default() as f64 / 1000.0;
            gauge_f64(
                e,
                "journal_oldest_age_seconds",
                "Age of the oldest waiting entry (0 when empty)",
                age,
            )?;
            let appended = j.counter(Counter::Appended);
            counter(
                e,
                "journal_appended",
                "Entries stored in the journal",
                appended,
            )?;
            let confirmed = j.counter(Counter::Confirmed);
            counter(
                e,
                "journal_confirmed",
                "Entries confirmed by the cloud",
                confirmed,
            )?;
            counter(
                e,
                "journal_commits",
                "Journal transactions committed since start (group commits)",
                j.commits,
            )?;
            counter_f64(
                e,
                "journal_commit_seconds",
                "Time spent in journal transactions since start",
                j.commit_micros as f64 / 1e6,
            )?;
            counter(
                e,
                "journal_wal_flushes",
                "fdatasync calls on the journal's WAL since start (synchronous = full)",
                j.wal_flushes,
            )?;
            counter_f64(
                e,
                "journal_wal_flush_seconds",
                "Time spent in those flushes since start (slow storage shows here)",
                j.wal_flush_micros as f64 / 1e6,
            )?;
            gauge(
                e,
                "journal_wal_flush_failed",
                "1 after a failed WAL flush: appends are refused until a restart",
                u64::from(j.wal_flush_failed),
            )?;
        }
        let u = &self.uplink;
        let states: Vec<_> = UPLINK_STATES
            .iter()
            .map(|s| ([("state", *s)], u64::from(u.state == *s)))
            .collect();
        gauge_family(
            e,
            "uplink_state",
            "1 for the uplink's current state",
            &states,
        )?;
        gauge(
            e,
            "uplink_in_flight",
            "Uplink publishes not yet acknowledged",
            u.in_flight,
        )?;
        counter(
            e,
            "uplink_sent",
            "Uplink publishes sent (resends included)",
            u.sent,
        )?;
        counter(e, "uplink_acked", "Uplink publishes acknowledged", u.acked)?;
        counter(
            e,
            "uplink_rejected",
            "Messages the bridge refused for good",
            u.rejected,
        )?;
        counter(e, "uplink_connects", "Uplink connections made", u.connects)?;
        counter(
            e,
            "uplink_failures",
            "Uplink connection failures",
            u.failures,
        )?;
        gauge(
            e,
            "uplink_window",
            "The uplink's window (uplink.window): entries sent and not yet confirmed, at most",
            u.window,
        )?;
        gauge(
            e,
            "uplink_window_used",
            "Window slots held: entries sent and not yet acknowledged, or acknowledged and not yet confirmed in the journal",
            u.window_used,
        )?;
        counter(
            e,
            "uplink_journal_read_entries",
            "Entries the uplink read from the journal (resends included)",
            u.journal_read_entries,
        )?;
        u.journal_read.encode(
            e,
            "uplink_journal_read_seconds",
            "Time of the uplink's journal reads, one batch each",
        )?;
        u.puback.encode(
            e,
            "uplink_puback_seconds",
            "From an uplink PUBLISH's write to its PUBACK from the bridge",
        )?;
        u.confirm.encode(
            e,
            "uplink_confirm_seconds",
            "From a PUBACK to the journal's answer to the confirm of its entry (its window slot returns)",
        )?;
        let readings: Vec<_> = self
            .sensors
            .iter()
            .map(|s| ([("sensor", s.id.as_str())], s.readings))
            .collect();
        counter_family(e, "sensor_readings", "Sensor readings published", &readings)?;
        let errors: Vec<_> = self
            .sensors
            .iter()
            .flat_map(|s| {
                s.errors
                    .iter()
                    .map(|(k, n)| ([("sensor", s.id.as_str()), ("kind", k.as_str())], *n))
            })
            .collect();
        counter_family(e, "sensor_errors", "Sensor faults, by kind", &errors)
    }
}

/// A snapshot as a `prometheus-client` collector.
#[derive(Debug)]
struct Encoded(Snapshot);

impl Collector for Encoded {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_names_labels_and_eof() {
        let mut counters = BTreeMap::new();
        counters.insert("appended".to_owned(), 7);
        counters.insert("rejected_quota".to_owned(), 3);
        let s = Snapshot {
            version: "1.2.3".into(),
            listeners: vec![],
            server: ServerCounterValues {
                publish_received: [0, 10, 0],
                ..Default::default()
            },
            broker: BrokerFigures {
                dropped_queue_full: 2,
                ..Default::default()
            },
            journal: Some(JournalFigures {
                entries: 4,
                oldest_age_ms: Some(1500),
                counters,
                ..Default::default()
            }),
            journal_error: None,
            uplink: UplinkValues {
                state: "backoff".into(),
                ..Default::default()
            },
            sensors: vec![SensorValues {
                id: "t1".into(),
                state: "failing".into(),
                readings: 5,
                errors: [("nack".to_owned(), 2)].into(),
            }],
        };
        let text = s.openmetrics();
        for line in [
            "edge_agent_build_info{version=\"1.2.3\"} 1",
            "edge_agent_publish_received_total{qos=\"1\"} 10",
            "edge_agent_journal_entries 4",
            "edge_agent_journal_oldest_age_seconds 1.5",
            "edge_agent_journal_appended_total 7",
            "edge_agent_dropped_total{reason=\"rejected_quota\"} 3",
            "edge_agent_dropped_total{reason=\"queue_full\"} 2",
            "edge_agent_uplink_state{state=\"backoff\"} 1",
            "edge_agent_uplink_state{state=\"connected\"} 0",
            "edge_agent_sensor_errors_total{sensor=\"t1\",kind=\"nack\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn uplink_stage_histograms_are_cumulative_seconds() {
        let times = StageTimes::default();
        for ms in [1, 2, 2, 3] {
            times.observe(std::time::Duration::from_millis(ms));
        }
        times.observe(std::time::Duration::from_secs(60));
        let s = Snapshot {
            version: "1".into(),
            listeners: vec![],
            server: ServerCounterValues::default(),
            broker: BrokerFigures::default(),
            journal: None,
            journal_error: None,
            uplink: UplinkValues {
                window: 256,
                window_used: 17,
                puback: StageFigures::from(&times),
                ..Default::default()
            },
            sensors: vec![],
        };
        let text = s.openmetrics();
        for line in [
            "edge_agent_uplink_window 256",
            "edge_agent_uplink_window_used 17",
            "edge_agent_uplink_puback_seconds_count 5",
            "edge_agent_uplink_puback_seconds_sum 60.008",
            // 1 ms is in (0.8 ms, 1.6 ms]; 2 and 3 ms in (1.6, 3.2].
            "edge_agent_uplink_puback_seconds_bucket{le=\"0.0016\"} 1",
            "edge_agent_uplink_puback_seconds_bucket{le=\"0.0032\"} 4",
            "edge_agent_uplink_puback_seconds_bucket{le=\"+Inf\"} 5",
            "edge_agent_uplink_confirm_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // The JSON of /status carries them too, and reads back.
        let json = serde_json::to_string(&s).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back.uplink.puback.count(), 5);
        assert_eq!(back, s);
    }
}
