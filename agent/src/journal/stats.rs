//! Counters persisted in the journal, and the figures `journal stats` shows.

use std::path::PathBuf;

use serde::Serialize;
use serde::ser::SerializeMap;

use super::config::{Priority, SyncMode, WhenFull};

/// A persisted counter. Every message that leaves the journal other than by `confirm`
/// increments exactly one of the drop or rejection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Entries stored.
    Appended,
    /// Entries deleted by `confirm` (acknowledged by the cloud).
    Confirmed,
    /// Entries removed because their TTL or message expiry passed.
    Expired,
    /// Entries dropped by `drop-oldest` to stay under the byte quota.
    QuotaDropOldest,
    /// Entries dropped by `drop-oldest` to stay above the free-disk watermark.
    DiskDropOldest,
    /// Appends refused at the byte quota (`reject-new`, or `drop-oldest` when only
    /// higher-priority entries were left).
    RejectedQuota,
    /// Appends refused at the free-disk watermark (same policies).
    RejectedDisk,
    /// Appends refused because the message alone exceeds the quota.
    RejectedTooLarge,
}

impl Counter {
    /// Number of counters.
    pub const COUNT: usize = 8;
    /// All counters, in display order.
    pub const ALL: [Counter; Counter::COUNT] = [
        Counter::Appended,
        Counter::Confirmed,
        Counter::Expired,
        Counter::QuotaDropOldest,
        Counter::DiskDropOldest,
        Counter::RejectedQuota,
        Counter::RejectedDisk,
        Counter::RejectedTooLarge,
    ];

    /// The name stored in the `counters` table and shown by `journal stats`.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Appended => "appended",
            Counter::Confirmed => "confirmed",
            Counter::Expired => "expired",
            Counter::QuotaDropOldest => "quota_drop_oldest",
            Counter::DiskDropOldest => "disk_drop_oldest",
            Counter::RejectedQuota => "rejected_quota",
            Counter::RejectedDisk => "rejected_disk",
            Counter::RejectedTooLarge => "rejected_too_large",
        }
    }

    /// The counter stored as `name`.
    pub fn from_name(name: &str) -> Option<Counter> {
        Counter::ALL.into_iter().find(|c| c.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Values of all counters since the journal file was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters([u64; Counter::COUNT]);

impl Counters {
    /// The value of `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c.index()]
    }

    /// Adds `n` to `c`.
    pub fn add(&mut self, c: Counter, n: u64) {
        self.0[c.index()] = self.0[c.index()].saturating_add(n);
    }

    /// Sum of all drop and rejection counters.
    pub fn dropped_total(&self) -> u64 {
        Counter::ALL
            .into_iter()
            .filter(|c| !matches!(c, Counter::Appended | Counter::Confirmed))
            .map(|c| self.get(c))
            .sum()
    }

    /// `(name, value)` for every counter.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c.name(), self.get(c)))
    }
}

impl Serialize for Counters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(Counter::COUNT))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, &value)?;
        }
        map.end()
    }
}

/// Entries and bytes of one priority class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PriorityStats {
    /// The class.
    pub priority: Priority,
    /// Stored entries.
    pub entries: u64,
    /// Their quota bytes.
    pub bytes: u64,
}

/// Group-commit figures of the running journal thread (not persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: u64,
    /// Commands carried out in them (appends, confirms, reads).
    pub commands: u64,
    /// Appends among them.
    pub appends: u64,
    /// Largest number of commands in one transaction.
    pub max_batch: u64,
    /// Time spent in committed transactions (BEGIN to COMMIT), in microseconds.
    pub batch_micros: u64,
    /// Flushes of the WAL by the syncer thread (`synchronous = full`); each one covers
    /// every transaction committed before it.
    pub wal_flushes: u64,
    /// Time spent in those flushes (`fdatasync`), in microseconds: on a failing SD card
    /// this is the figure that grows.
    pub wal_flush_micros: u64,
    /// A WAL flush failed: appends fail until the agent is restarted.
    pub wal_flush_failed: bool,
}

impl WriterStats {
    /// Average commands per transaction.
    pub fn average_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.commands as f64 / self.batches as f64
        }
    }
}

/// What `journal stats` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// The database file.
    pub path: PathBuf,
    /// Size of the database file plus its WAL, in bytes.
    pub file_bytes: u64,
    /// Stored entries (including expired ones not yet swept).
    pub entries: u64,
    /// Their quota bytes.
    pub bytes: u64,
    /// The configured quota.
    pub max_bytes: u64,
    /// Entries past their expiry that the next sweep removes.
    pub expired_pending: u64,
    /// Sequence number of the oldest stored entry.
    pub oldest_seq: Option<u64>,
    /// Age of the oldest stored entry, in milliseconds.
    pub oldest_age_ms: Option<u64>,
    /// The last sequence number ever assigned.
    pub last_seq: u64,
    /// Per class, lowest first.
    pub per_priority: Vec<PriorityStats>,
    /// Persisted counters.
    pub counters: Counters,
    /// Group-commit figures since this process opened the journal.
    pub writer: WriterStats,
    /// `synchronous` in force (as configured; read-only opens report the default).
    pub synchronous: SyncMode,
    /// Policy in force.
    pub when_full: WhenFull,
    /// Whether this handle is read-only.
    pub read_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_round_trip_and_are_unique() {
        for (i, c) in Counter::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(Counter::from_name(c.name()), Some(c));
        }
        assert_eq!(Counter::from_name("nope"), None);
    }

    #[test]
    fn dropped_total_excludes_throughput_counters() {
        let mut c = Counters::default();
        c.add(Counter::Appended, 10);
        c.add(Counter::Confirmed, 5);
        c.add(Counter::Expired, 2);
        c.add(Counter::RejectedDisk, 1);
        assert_eq!(c.dropped_total(), 3);
        let json = serde_json::to_string(&c).unwrap_or_default();
        assert!(json.contains("\"rejected_disk\":1"), "{json}");
    }
}
