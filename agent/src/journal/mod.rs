//! The durable journal: every uplink-bound message, on disk before it is acknowledged,
//! deleted only after the cloud acknowledged it.
//!
//! # Invariants
//! - [`Journal::append`] returns `Ok(seq)` only after the transaction holding the entry
//!   committed (so the broker sends PUBACK/PUBREC only then). Durability of that commit
//!   is the `synchronous` setting's (below).
//! - Sequence numbers increase with every stored entry and are never reused, also across
//!   restarts and after the newest entries were confirmed (SQLite `AUTOINCREMENT`).
//!   Gateway id + `seq` is the message's stable id. Order per topic is `seq` order.
//! - An entry leaves the journal only by [`Journal::confirm`], by expiry (TTL or MQTT 5
//!   message expiry), or by the `drop-oldest` policy; each way is counted in a persisted
//!   counter ([`Counter`]). Expired entries are never handed out by reads.
//! - The byte quota counts topic + payload + user-property bytes of stored entries
//!   ([`NewEntry::quota_bytes`]). It is tracked in memory per priority class, recomputed
//!   from the table at open, and changed only together with a commit.
//! - A failed transaction (for example `SQLITE_FULL` on a full disk) is rolled back
//!   whole: every caller of that batch gets the error and nothing stored before is lost.
//!
//! # Group commit and threads
//! The database is owned by one dedicated OS thread (a `sqlite_worker`, as is the
//! sessions database). The async API sends commands over a bounded tokio channel
//! (`queue_capacity`; appenders wait when it is full, which is the back-pressure the
//! broker needs) and awaits a oneshot reply. The thread takes every
//! queued command (up to `max_batch`) into one `BEGIN IMMEDIATE … COMMIT`, so concurrent
//! publishes share one fsync; replies leave after the commit. With `synchronous = full`
//! a second thread, the syncer (`syncer.rs`), flushes the WAL (`fdatasync`) before the replies
//! of committed batches leave, while the journal thread already runs the next batch: one
//! flush covers every batch committed before it started.
//!
//! # `synchronous` and the loss window (WAL mode)
//! | setting | process killed (kill -9, panic, OOM) | OS crash or power cut |
//! |---|---|---|
//! | `full` (default) | nothing acknowledged is lost | nothing acknowledged is lost: the WAL is fsynced before `append` returns |
//! | `normal` | nothing acknowledged is lost | the commits since the last checkpoint may be lost (at most about 1000 WAL pages, ~4 MiB of writes, typically the last seconds); the file stays consistent |
//! | `off` | nothing acknowledged is lost | any recent commits may be lost, and the file may be corrupted |
//!
//! "Survives a power cut" assumes storage that honours fsync; cheap SD cards may not.
//!
//! # Limits and policies
//! Two limits apply to each append: the byte quota `max_bytes`, and the free-disk
//! watermark: once per batch the free space of the journal's file system is read
//! (`statvfs`), and the journal may grow by half of what exceeds `min_free_disk_bytes`
//! (each byte is written twice, to the WAL and to the main file). When an append would
//! pass the lower of the two limits:
//! - `reject-new`: the append fails with [`Error::QuotaExceeded`] (MQTT 5 reason 0x97);
//!   counted as `rejected_quota` or `rejected_disk`.
//! - `drop-oldest`: expired entries are swept first; then the oldest entries of the
//!   lowest class are dropped, then of the next class, up to and including the new
//!   entry's own class, until it fits (`quota_drop_oldest` / `disk_drop_oldest` per entry).
//!   Entries of a higher class than the new one are never dropped for it: if the lower
//!   and equal classes do not free enough, nothing is dropped and the new message is
//!   refused as under `reject-new`. So a low-priority message cannot displace alarms.
//! - A message larger than the whole quota is refused (`rejected_too_large`).
//!
//! Dropped rows free pages inside the file that later inserts reuse; the file itself does
//! not shrink.
//!
//! # On-disk format
//! One SQLite file (default `<state dir>/journal.db`) plus its `-wal` and `-shm`,
//! `PRAGMA application_id = 0x45414A4C` ("EAJL"), `user_version = 1`. Tables: `entries`
//! (one row per message: `seq`, `topic`, `payload`, `qos`, `retain`, `priority` 0..=3,
//! `received_ms`, `expires_ms` (Unix ms, NULL = never), `user_properties` (JSON array of
//! `[key, value]`, NULL when none), `size` (quota bytes)) with indexes on
//! `(priority, seq)` and `expires_ms`; and `counters (name, value)`. The statements are
//! the `const`s in `schema.rs`.
//!
//! # Recovery
//! Opening after kill -9 or a power cut relies on SQLite's WAL recovery (a torn last
//! WAL frame is ignored). A file that is not a journal, is damaged, or fails
//! `PRAGMA quick_check` (run at open unless `quick_check_on_open = false`) is refused
//! with an error naming it, and left untouched: nothing is ever deleted or recreated
//! automatically. [`Journal::integrity_check`] runs the full check on request.

mod config;
mod entry;
mod env;
mod export;
mod filter;
mod render;
mod schema;
mod stats;
mod store;
mod syncer;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use config::{Classifier, JournalConfig, Priority, SyncMode, TopicRule, WhenFull};
pub use entry::{Cursor, Entry, NewEntry, Qos, ReadOrder};
pub use env::{
    Clock, DiskSpace, Fdatasync, FixedDisk, JournalEnv, ManualClock, StatvfsDisk, SystemClock,
    WalSync,
};
pub use filter::{FilterError, TopicFilter};
pub(crate) use render::{age as human_age, bytes as human_bytes};
pub use render::{render_entry, render_stats};
pub use stats::{Counter, Counters, PriorityStats, Stats, WriterStats};

use crate::error::{Error, Result};
use store::{Record, StoreOptions};
use writer::{Command, Op};

/// File name of the journal inside the state directory.
pub const FILE_NAME: &str = "journal.db";

/// An append queued by [`Journal::submit`], not yet known to be committed.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<u64>>, Arc<watch::Sender<u64>>);

impl Pending {
    /// Waits for the commit; returns the entry's sequence number (and tells
    /// [`Journal::committed_seq`] watchers).
    pub async fn committed(self) -> Result<u64> {
        let seq = self.0.await.map_err(|_| Error::Closed)??;
        self.1.send_if_modified(|last| {
            let newer = seq > *last;
            *last = (*last).max(seq);
            newer
        });
        Ok(seq)
    }
}

/// Appends queued by [`Journal::submit_many`], not yet known to be committed.
#[derive(Debug)]
pub struct PendingMany(
    oneshot::Receiver<Result<Vec<Result<u64>>>>,
    Arc<watch::Sender<u64>>,
);

impl PendingMany {
    /// Waits for the commit; returns each entry's outcome (sequence number, or why it
    /// was refused), in submission order. `Err` when the whole batch failed.
    pub async fn committed(self) -> Result<Vec<Result<u64>>> {
        let out = self.0.await.map_err(|_| Error::Closed)??;
        if let Some(seq) = out.iter().filter_map(|r| r.as_ref().ok()).max().copied() {
            self.1.send_if_modified(|last| {
                let newer = seq > *last;
                *last = (*last).max(seq);
                newer
            });
        }
        Ok(out)
    }
}

/// Handle to an open journal. Clones share the same journal thread.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::Sender<Command>,
    classifier: Arc<Classifier>,
    path: Arc<PathBuf>,
    read_only: bool,
    committed: Arc<watch::Sender<u64>>,
}

impl Journal {
    /// Opens (or creates) the journal at `path` for reading and writing.
    pub async fn open(path: impl AsRef<Path>, config: &JournalConfig) -> Result<Journal> {
        Self::open_with_env(path, config, JournalEnv::default()).await
    }

    /// Like [`Journal::open`], with an injected clock and free-space source.
    pub async fn open_with_env(
        path: impl AsRef<Path>,
        config: &JournalConfig,
        env: JournalEnv,
    ) -> Result<Journal> {
        let opts = StoreOptions {
            read_only: false,
            max_bytes: config.max_bytes,
            min_free_disk_bytes: config.min_free_disk_bytes,
            when_full: config.when_full,
            synchronous: config.synchronous,
            sweep_interval_ms: config.sweep_interval_secs.saturating_mul(1000),
            quick_check: config.quick_check_on_open,
        };
        Self::start(path.as_ref(), config, opts, env).await
    }

    /// Opens an existing journal read-only (for the `journal` CLI while the agent runs):
    /// reads work, writes fail with [`Error::ReadOnly`], nothing is swept.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Journal> {
        let config = JournalConfig::default();
        let opts = StoreOptions {
            read_only: true,
            max_bytes: config.max_bytes,
            min_free_disk_bytes: 0,
            when_full: config.when_full,
            synchronous: config.synchronous,
            sweep_interval_ms: u64::MAX,
            quick_check: false,
        };
        Self::start(path.as_ref(), &config, opts, JournalEnv::default()).await
    }

    async fn start(
        path: &Path,
        config: &JournalConfig,
        opts: StoreOptions,
        env: JournalEnv,
    ) -> Result<Journal> {
        let classifier = config.classifier()?;
        let (tx, ready) = writer::spawn(
            path.to_path_buf(),
            opts,
            env,
            config.queue_capacity,
            config.max_batch,
        )?;
        let read_only = ready.await.map_err(|_| Error::Closed)??;
        Ok(Journal {
            tx,
            classifier: Arc::new(classifier),
            path: Arc::new(path.to_path_buf()),
            read_only,
            committed: Arc::new(watch::Sender::new(0)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this handle was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The highest sequence number whose append was committed through this handle (or
    /// a clone) and awaited; 0 before the first. The uplink waits on it for new entries.
    pub fn committed_seq(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// The priority class and TTL the rules give `topic`.
    pub fn classify(&self, topic: &str) -> (Priority, Option<Duration>) {
        self.classifier.classify(topic)
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Run(make(reply)))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Stores `entry` and returns its sequence number once committed. Fails with
    /// [`Error::QuotaExceeded`] when the policy refuses it, [`Error::DiskFull`] when
    /// SQLite finds the disk full (nothing stored is lost either way).
    pub async fn append(&self, entry: NewEntry) -> Result<u64> {
        self.submit(entry).await?.committed().await
    }

    /// Queues `entry` for the journal thread and returns as soon as it is queued; the
    /// returned [`Pending`] yields its sequence number once committed. Entries are
    /// committed in the order they were submitted, so one publisher can keep several
    /// appends in flight (sharing fsyncs) without reordering them.
    pub async fn submit(&self, entry: NewEntry) -> Result<Pending> {
        let record = self.record(entry)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Append(record, reply))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(Pending(answer, self.committed.clone()))
    }

    /// Like [`Journal::submit`] for several entries as one command with one reply (a
    /// publisher's burst): cheaper per entry, same order and commit guarantees; each
    /// entry is accepted or refused on its own. Fails at once if any topic is empty.
    pub async fn submit_many(&self, entries: Vec<NewEntry>) -> Result<PendingMany> {
        let records = entries
            .into_iter()
            .map(|e| self.record(e))
            .collect::<Result<Vec<_>>>()?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::AppendMany(records, reply))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(PendingMany(answer, self.committed.clone()))
    }

    fn record(&self, entry: NewEntry) -> Result<Record> {
        if entry.topic.is_empty() {
            return Err(Error::InvalidEntry("empty topic".to_owned()));
        }
        let (rule_priority, ttl) = self.classifier.classify(&entry.topic);
        let size = entry.quota_bytes();
        Ok(Record {
            priority: entry.priority.unwrap_or(rule_priority),
            ttl,
            message_expiry: entry.message_expiry,
            topic: entry.topic,
            payload: entry.payload,
            qos: entry.qos,
            retain: entry.retain,
            user_properties: entry.user_properties,
            size,
        })
    }

    /// Up to `limit` unexpired entries after `cursor` (at most 10 000 per call). Advance
    /// the cursor with [`Cursor::advance_past`] to read on. Entries stay until confirmed.
    pub async fn next_batch(&self, cursor: Cursor, limit: usize) -> Result<Vec<Entry>> {
        self.call(|tx| Op::NextBatch(cursor, limit, tx)).await
    }

    /// Deletes the given entries (the cloud acknowledged them); returns how many were
    /// still stored. Unknown sequence numbers are ignored. With `synchronous = full` it
    /// answers once the deletion is flushed, like an append.
    pub async fn confirm(&self, seqs: &[u64]) -> Result<u64> {
        let seqs = seqs.to_vec();
        self.call(|tx| Op::Confirm(seqs, tx)).await
    }

    /// Removes expired entries now; returns how many. (Sweeps also happen by themselves
    /// at the first command after each `sweep_interval_secs`.)
    pub async fn sweep_expired(&self) -> Result<u64> {
        self.call(Op::Sweep).await
    }

    /// Sweeps every `every` until `cancel` fires (spawn it in the agent's task tracker
    /// so expired entries go even while no command arrives).
    pub async fn run_sweeper(&self, every: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.sweep_expired().await {
                        tracing::warn!(error = %e, "journal sweep failed");
                        if matches!(e, Error::Closed) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Depth, bytes, ages, per-class figures and counters.
    pub async fn stats(&self) -> Result<Stats> {
        self.call(Op::Stats).await
    }

    /// The first `limit` unexpired entries in sequence order.
    pub async fn peek(&self, limit: usize) -> Result<Vec<Entry>> {
        self.next_batch(Cursor::start(ReadOrder::Fifo), limit).await
    }

    /// Writes every unexpired entry as one JSON object per line; returns how many.
    pub async fn export_jsonl<W>(&self, out: &mut W) -> Result<u64>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        export::jsonl(self, out).await
    }

    /// Runs `PRAGMA integrity_check`; returns the problems found (empty = healthy).
    pub async fn integrity_check(&self) -> Result<Vec<String>> {
        self.call(Op::IntegrityCheck).await
    }

    /// Finishes the queued commands, closes the database and stops the thread. Other
    /// clones get [`Error::Closed`] afterwards.
    pub async fn close(&self) -> Result<()> {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::Close(reply)).await.is_err() {
            return Ok(());
        }
        // A dropped reply means another close got there first: closed either way.
        let _ = done.await;
        Ok(())
    }
}
