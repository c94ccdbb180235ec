//! The synchronous core of the journal: one SQLite connection, owned by the journal
//! thread. Every mutating call runs inside the batch transaction opened by
//! [`Store::begin`]; the in-memory accounting is snapshotted there and restored by
//! [`Store::rollback`], so it always equals what is committed.

mod read;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::config::{Priority, SyncMode, WhenFull};
use super::entry::Qos;
use super::env::JournalEnv;
use super::schema::{self as sql, classify};
use super::stats::{Counter, Counters, WriterStats};
use super::syncer::FlushStats;
use crate::error::{Error, QuotaReason, Result};

/// SQLite result: an `Err` aborts (rolls back) the whole batch.
pub(crate) type Sql<T> = rusqlite::Result<T>;

/// Most entries one read returns.
pub(crate) const MAX_READ: usize = 10_000;
/// Rows fetched at a time when choosing entries to drop.
const EVICT_CHUNK: i64 = 256;

/// A message ready to be stored (classified by the caller's task).
#[derive(Debug)]
pub(crate) struct Record {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    pub priority: Priority,
    pub ttl: Option<Duration>,
    pub message_expiry: Option<Duration>,
    pub user_properties: Vec<(String, String)>,
    pub size: u64,
}

/// Columns of one `entries` row in [`insert_sql`].
const INSERT_COLUMNS: usize = 9;
/// Rows per INSERT statement, largest first: a run of accepted rows is inserted by the
/// fewest statements of these sizes (7 cached statements). One statement of 64
/// rows costs about 1.7 µs a row here against 3.0 µs for 64 single-row statements: every
/// statement also reads and writes `sqlite_sequence` (AUTOINCREMENT).
const INSERT_SIZES: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// The INSERT of `INSERT_SIZES[i]` rows, built once.
fn insert_sql(i: usize) -> Option<&'static str> {
    static SQL: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        INSERT_SIZES
            .iter()
            .map(|n| {
                let rows: Vec<String> = (0..*n)
                    .map(|r| {
                        let params: Vec<String> = (1..=INSERT_COLUMNS)
                            .map(|c| format!("?{}", r * INSERT_COLUMNS + c))
                            .collect();
                        format!("({})", params.join(", "))
                    })
                    .collect();
                format!("{}{}", sql::INSERT_ENTRIES, rows.join(", "))
            })
            .collect()
    });
    SQL.get(i).map(String::as_str)
}

/// A record accepted by the limits, with its computed columns, waiting for its INSERT.
#[derive(Debug)]
struct NewRow {
    rec: Record,
    received_ms: i64,
    expires_ms: Option<i64>,
    props: Option<String>,
}

/// The outcomes of one `append_many`, and the accepted rows not yet inserted (with the
/// index of their outcome).
#[derive(Debug)]
struct InsertRows {
    out: Vec<Result<u64>>,
    waiting: Vec<(usize, NewRow)>,
}

impl InsertRows {
    fn with_capacity(n: usize) -> InsertRows {
        InsertRows {
            out: Vec::with_capacity(n),
            waiting: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, row: NewRow) {
        self.waiting.push((self.out.len(), row));
        self.out.push(Ok(0));
    }

    fn refuse(&mut self, e: Error) {
        self.out.push(Err(e));
    }
}

/// How a store behaves; derived from `JournalConfig`.
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    pub read_only: bool,
    pub max_bytes: u64,
    pub min_free_disk_bytes: u64,
    pub when_full: WhenFull,
    pub synchronous: SyncMode,
    pub sweep_interval_ms: u64,
    pub quick_check: bool,
}

/// Entries and bytes per priority class.
#[derive(Debug, Clone, Copy, Default)]
struct Accounting {
    entries: [u64; 4],
    bytes: [u64; 4],
}

impl Accounting {
    fn add(&mut self, p: Priority, size: u64) {
        self.entries[p.index()] += 1;
        self.bytes[p.index()] += size;
    }

    fn remove(&mut self, p: Priority, size: u64) {
        let i = p.index();
        self.entries[i] = self.entries[i].saturating_sub(1);
        self.bytes[i] = self.bytes[i].saturating_sub(size);
    }

    fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }

    fn total_entries(&self) -> u64 {
        self.entries.iter().sum()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn bad_column(i: usize, t: Type, what: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, t, what.into())
}

fn priority_column(r: &Row<'_>, i: usize) -> Sql<Priority> {
    Priority::from_i64(r.get(i)?).ok_or_else(|| bad_column(i, Type::Integer, "bad priority"))
}

/// The journal database and its in-memory mirror of accounting and counters.
#[derive(Debug)]
pub(crate) struct Store {
    conn: Connection,
    path: PathBuf,
    dir: PathBuf,
    opts: StoreOptions,
    env: JournalEnv,
    acct: Accounting,
    counters: Counters,
    /// Counter increments of the open transaction, written at commit.
    pending: Counters,
    /// Accounting and counters at `begin`, restored on rollback.
    saved: (Accounting, Counters),
    last_sweep_ms: u64,
    /// (limit, reason) for this batch, computed at its first append.
    batch_limit: Option<(u64, QuotaReason)>,
    batch_swept: bool,
    pub(crate) writer: WriterStats,
    /// WAL flushes by the syncer (`synchronous = full`), read into the stats.
    pub(crate) writer_flushes: Option<Arc<FlushStats>>,
}

impl Store {
    /// Opens the journal, recomputes the accounting and sweeps expired entries.
    #[cfg(test)]
    pub(crate) fn open(path: &Path, opts: StoreOptions, env: JournalEnv) -> Result<Store> {
        let sync = opts.synchronous;
        Self::open_with(path, opts, env, sync, |_| Ok(())).map(|(store, ())| store)
    }

    /// Like [`Store::open`], with SQLite's own `synchronous` set to `sqlite_sync` (the
    /// journal thread flushes the WAL itself for `full`). `connected` runs once the file
    /// is open (and, if new, created), before this process writes or syncs anything else
    /// in it: the WAL flushers open their descriptors there, so that every later
    /// write-back error reaches them.
    /// A read-write open then checkpoints the whole WAL into the main file (checked, and
    /// synced by SQLite): after a failed flush in an earlier run the WAL may be whole only
    /// in the page cache, and this makes it whole on disk before anything is appended.
    pub(crate) fn open_with<R>(
        path: &Path,
        opts: StoreOptions,
        env: JournalEnv,
        sqlite_sync: SyncMode,
        connected: impl FnOnce(&Path) -> Result<R>,
    ) -> Result<(Store, R)> {
        let conn = sql::open(path, opts.read_only, sqlite_sync, opts.quick_check)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            dir,
            opts,
            env,
            acct: Accounting::default(),
            counters: Counters::default(),
            pending: Counters::default(),
            saved: Default::default(),
            last_sweep_ms: 0,
            batch_limit: None,
            batch_swept: false,
            writer: WriterStats::default(),
            writer_flushes: None,
        };
        let hooked = connected(&store.dir)?;
        let loaded = store.load().and_then(|()| {
            if !store.opts.read_only {
                sql::accept(&store.conn)?;
                sql::checkpoint_whole_wal(&store.conn)?;
            }
            store.begin()?;
            store.commit()
        });
        if let Err(e) = loaded {
            store.rollback();
            return Err(store.fail(e));
        }
        Ok((store, hooked))
    }

    fn load(&mut self) -> Sql<()> {
        let mut acct = Accounting::default();
        let mut stmt = self.conn.prepare(sql::ACCOUNT_BY_CLASS)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let p = priority_column(r, 0)?;
            acct.entries[p.index()] = to_u64(r.get(1)?);
            acct.bytes[p.index()] = to_u64(r.get(2)?);
        }
        let mut counters = Counters::default();
        let mut stmt = self.conn.prepare(sql::SELECT_COUNTERS)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let name: String = r.get(0)?;
            match Counter::from_name(&name) {
                Some(c) => counters.add(c, to_u64(r.get(1)?)),
                None => tracing::warn!(counter = %name, "unknown counter in journal, ignored"),
            }
        }
        self.acct = acct;
        self.counters = counters;
        Ok(())
    }

    /// The crate error for an SQLite failure, naming the file.
    pub(crate) fn fail(&self, e: rusqlite::Error) -> Error {
        classify(&self.path, e)
    }

    pub(crate) fn read_only(&self) -> bool {
        self.opts.read_only
    }

    /// Opens the batch transaction; sweeps expired entries when a sweep is due.
    pub(crate) fn begin(&mut self) -> Sql<()> {
        let begin = if self.opts.read_only {
            sql::BEGIN_DEFERRED
        } else {
            sql::BEGIN_IMMEDIATE
        };
        // Snapshot first: a failed BEGIN is rolled back (restored) like any other failure.
        self.saved = (self.acct, self.counters);
        self.pending = Counters::default();
        self.conn.execute_batch(begin)?;
        self.batch_limit = None;
        self.batch_swept = false;
        let now = self.env.clock.now_ms();
        let due = self
            .last_sweep_ms
            .saturating_add(self.opts.sweep_interval_ms);
        if !self.opts.read_only && now >= due {
            self.sweep(now)?;
            self.last_sweep_ms = now;
        }
        Ok(())
    }

    /// Writes the counter increments and commits.
    pub(crate) fn commit(&mut self) -> Sql<()> {
        if !self.opts.read_only {
            let mut stmt = self.conn.prepare_cached(sql::ADD_TO_COUNTER)?;
            for c in Counter::ALL {
                let n = self.pending.get(c);
                if n > 0 {
                    stmt.execute(params![c.name(), to_i64(n)])?;
                }
            }
        }
        self.conn.execute_batch(sql::COMMIT)?;
        self.pending = Counters::default();
        Ok(())
    }

    /// Rolls the batch back and restores the in-memory state of `begin`.
    pub(crate) fn rollback(&mut self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch(sql::ROLLBACK)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "journal rollback failed");
        }
        (self.acct, self.counters) = self.saved;
        self.pending = Counters::default();
    }

    fn count(&mut self, c: Counter, n: u64) {
        self.counters.add(c, n);
        self.pending.add(c, n);
    }

    fn read_only_error(&self) -> Error {
        Error::ReadOnly {
            path: self.path.clone(),
        }
    }

    /// Deletes expired entries; returns how many.
    fn sweep(&mut self, now: u64) -> Sql<u64> {
        let mut removed = Vec::new();
        {
            let mut stmt = self.conn.prepare_cached(sql::DELETE_EXPIRED)?;
            let mut rows = stmt.query([to_i64(now)])?;
            while let Some(r) = rows.next()? {
                removed.push((priority_column(r, 0)?, to_u64(r.get(1)?)));
            }
        }
        for (p, size) in &removed {
            self.acct.remove(*p, *size);
        }
        let n = removed.len() as u64;
        self.count(Counter::Expired, n);
        self.batch_swept = true;
        Ok(n)
    }

    /// The explicit sweep command.
    pub(crate) fn sweep_expired(&mut self) -> Sql<Result<u64>> {
        if self.opts.read_only {
            return Ok(Err(self.read_only_error()));
        }
        let now = self.env.clock.now_ms();
        let n = self.sweep(now)?;
        self.last_sweep_ms = now;
        Ok(Ok(n))
    }

    /// The byte limit for this batch and which limit it is.
    fn limit(&mut self) -> (u64, QuotaReason) {
        if let Some(l) = self.batch_limit {
            return l;
        }
        let max = self.opts.max_bytes;
        let mut limit = (max, QuotaReason::Bytes);
        if self.opts.min_free_disk_bytes > 0 {
            match self.env.disk.available_bytes(&self.dir) {
                Ok(avail) => {
                    // Each stored byte is written twice (WAL, then the main file).
                    let allowance = avail.saturating_sub(self.opts.min_free_disk_bytes) / 2;
                    let disk = self.acct.total_bytes().saturating_add(allowance);
                    if disk < max {
                        limit = (disk, QuotaReason::Disk);
                    }
                }
                Err(e) => tracing::warn!(
                    dir = %self.dir.display(), error = %e,
                    "cannot read free disk space; watermark not checked"
                ),
            }
        }
        self.batch_limit = Some(limit);
        limit
    }

    fn reject<T>(&mut self, reason: QuotaReason) -> Result<T> {
        let c = match reason {
            QuotaReason::Bytes => Counter::RejectedQuota,
            QuotaReason::Disk => Counter::RejectedDisk,
            QuotaReason::TooLarge => Counter::RejectedTooLarge,
        };
        self.count(c, 1);
        Err(Error::QuotaExceeded(reason))
    }

    /// Stores `recs` in order, applying the limits and the policy to each; returns each
    /// one's outcome. Accepted rows are inserted by multi-row statements (see
    /// [`InsertRows`]). The outer error aborts the batch.
    pub(crate) fn append_many(&mut self, recs: Vec<Record>) -> Sql<Vec<Result<u64>>> {
        let mut rows = InsertRows::with_capacity(recs.len());
        for rec in recs {
            match self.admit(rec, &mut rows)? {
                Ok(row) => rows.push(row),
                Err(e) => rows.refuse(e),
            }
        }
        self.insert(&mut rows)?;
        Ok(rows.out)
    }

    /// Applies the limits and the policy to `rec`; the row to insert if it is accepted.
    /// Rows accepted before it (`rows`) are inserted first when room must be made, so
    /// that the sweep and the eviction see them.
    fn admit(&mut self, rec: Record, rows: &mut InsertRows) -> Sql<Result<NewRow>> {
        if self.opts.read_only {
            return Ok(Err(self.read_only_error()));
        }
        if rec.size > self.opts.max_bytes {
            return Ok(self.reject(QuotaReason::TooLarge));
        }
        let now = self.env.clock.now_ms();
        let (limit, reason) = self.limit();
        let over = |acct: &Accounting| (acct.total_bytes() + rec.size).saturating_sub(limit);
        if over(&self.acct) > 0 {
            if self.opts.when_full == WhenFull::RejectNew {
                return Ok(self.reject(reason));
            }
            self.insert(rows)?;
            if !self.batch_swept {
                self.sweep(now)?;
            }
            let need = over(&self.acct);
            let droppable: u64 = self.acct.bytes[..=rec.priority.index()].iter().sum();
            if need > droppable {
                return Ok(self.reject(reason));
            }
            if need > 0 {
                self.evict(need, rec.priority, reason)?;
            }
        }
        let mut expires = rec.ttl.map(|d| now.saturating_add(millis(d)));
        if let Some(d) = rec.message_expiry {
            let e = now.saturating_add(millis(d));
            expires = Some(expires.map_or(e, |x| x.min(e)));
        }
        let props = if rec.user_properties.is_empty() {
            None
        } else {
            match serde_json::to_string(&rec.user_properties) {
                Ok(s) => Some(s),
                Err(e) => return Ok(Err(Error::InvalidEntry(e.to_string()))),
            }
        };
        self.acct.add(rec.priority, rec.size);
        self.count(Counter::Appended, 1);
        Ok(Ok(NewRow {
            received_ms: to_i64(now),
            expires_ms: expires.map(to_i64),
            props,
            rec,
        }))
    }

    /// Inserts the rows waiting in `rows`, largest statements first, and records each
    /// one's sequence number as its outcome.
    fn insert(&mut self, rows: &mut InsertRows) -> Sql<()> {
        let mut start = 0;
        while start < rows.waiting.len() {
            let left = rows.waiting.len() - start;
            let (which, n) = INSERT_SIZES
                .iter()
                .copied()
                .enumerate()
                .find(|(_, n)| *n <= left)
                .unwrap_or((INSERT_SIZES.len() - 1, 1));
            let sql = insert_sql(which).ok_or(rusqlite::Error::InvalidQuery)?;
            let chunk = &rows.waiting[start..start + n];
            let mut stmt = self.conn.prepare_cached(sql)?;
            for (i, (_, row)) in chunk.iter().enumerate() {
                let base = i * INSERT_COLUMNS;
                let r = &row.rec;
                stmt.raw_bind_parameter(base + 1, &r.topic)?;
                stmt.raw_bind_parameter(base + 2, &r.payload[..])?;
                stmt.raw_bind_parameter(base + 3, i64::from(r.qos.as_u8()))?;
                stmt.raw_bind_parameter(base + 4, r.retain)?;
                stmt.raw_bind_parameter(base + 5, r.priority.as_i64())?;
                stmt.raw_bind_parameter(base + 6, row.received_ms)?;
                stmt.raw_bind_parameter(base + 7, row.expires_ms)?;
                stmt.raw_bind_parameter(base + 8, row.props.as_deref())?;
                stmt.raw_bind_parameter(base + 9, to_i64(r.size))?;
            }
            stmt.raw_execute()?;
            // One statement's AUTOINCREMENT rowids are consecutive (this connection holds
            // the write lock), so the first row's is the last one's minus n - 1.
            let last = to_u64(self.conn.last_insert_rowid());
            let first = last.saturating_sub(n as u64 - 1);
            for (i, (slot, _)) in chunk.iter().enumerate() {
                rows.out[*slot] = Ok(first + i as u64);
            }
            start += n;
        }
        rows.waiting.clear();
        Ok(())
    }

    /// Drops at least `need` bytes: oldest first of the lowest class, up to class `upto`.
    fn evict(&mut self, need: u64, upto: Priority, reason: QuotaReason) -> Sql<()> {
        let counter = match reason {
            QuotaReason::Disk => Counter::DiskDropOldest,
            _ => Counter::QuotaDropOldest,
        };
        let mut freed = 0u64;
        for class in Priority::ALL.into_iter().filter(|p| *p <= upto) {
            while freed < need && self.acct.bytes[class.index()] > 0 {
                let rows: Vec<(i64, u64)> = {
                    let mut stmt = self.conn.prepare_cached(sql::SELECT_OLDEST_OF_CLASS)?;
                    let mapped = stmt.query_map(params![class.as_i64(), EVICT_CHUNK], |r| {
                        Ok((r.get::<_, i64>(0)?, to_u64(r.get(1)?)))
                    })?;
                    mapped.collect::<Sql<_>>()?
                };
                if rows.is_empty() {
                    tracing::warn!(class = class.as_str(), "journal accounting drift fixed");
                    self.acct.bytes[class.index()] = 0;
                    self.acct.entries[class.index()] = 0;
                    break;
                }
                let mut last = 0;
                let mut n = 0;
                for (seq, size) in rows {
                    if freed >= need {
                        break;
                    }
                    freed += size;
                    last = seq;
                    n += 1;
                    self.acct.remove(class, size);
                }
                self.conn
                    .prepare_cached(sql::DELETE_CLASS_UP_TO)?
                    .execute(params![class.as_i64(), last])?;
                self.count(counter, n);
            }
        }
        Ok(())
    }

    /// Deletes the confirmed entries; returns how many existed.
    pub(crate) fn confirm(&mut self, seqs: &[u64]) -> Sql<Result<u64>> {
        if self.opts.read_only {
            return Ok(Err(self.read_only_error()));
        }
        let mut n = 0;
        let mut stmt = self.conn.prepare_cached(sql::DELETE_ENTRY)?;
        for seq in seqs {
            let row = stmt
                .query_row([to_i64(*seq)], |r| Ok((priority_column(r, 0)?, r.get(1)?)))
                .optional()?;
            if let Some((p, size)) = row {
                self.acct.remove(p, to_u64(size));
                n += 1;
            }
        }
        drop(stmt);
        self.count(Counter::Confirmed, n);
        Ok(Ok(n))
    }

    /// Test hook: direct access to the connection.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}
