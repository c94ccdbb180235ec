//! The reading side of the store: entries for the uplink, statistics, integrity.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, params};

use super::{MAX_READ, Sql, Store, bad_column, priority_column, to_i64, to_u64};
use crate::journal::config::Priority;
use crate::journal::entry::{Cursor, Entry, Qos, ReadOrder};
use crate::journal::schema as sql;
use crate::journal::stats::{PriorityStats, Stats, WriterStats};

fn entry_from_row(r: &Row<'_>) -> Sql<Entry> {
    let qos = u8::try_from(r.get::<_, i64>(3)?)
        .ok()
        .and_then(Qos::from_u8)
        .ok_or_else(|| bad_column(3, Type::Integer, "bad qos"))?;
    let props: Option<String> = r.get(8)?;
    let user_properties = match props {
        None => Vec::new(),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(8, Type::Text, Box::new(e)))?,
    };
    Ok(Entry {
        seq: to_u64(r.get(0)?),
        topic: r.get(1)?,
        payload: Bytes::from(r.get::<_, Vec<u8>>(2)?),
        qos,
        retain: r.get(4)?,
        priority: priority_column(r, 5)?,
        received_ms: to_u64(r.get(6)?),
        expires_ms: r.get::<_, Option<i64>>(7)?.map(to_u64),
        user_properties,
    })
}

impl Store {
    /// Unexpired entries after `cursor`, at most `limit` (capped at `MAX_READ`).
    pub(crate) fn next_batch(&self, cursor: Cursor, limit: usize) -> Sql<Vec<Entry>> {
        let limit = limit.min(MAX_READ);
        let now = to_i64(self.env.clock.now_ms());
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        match cursor.order() {
            ReadOrder::Fifo => {
                let mut stmt = self.conn.prepare_cached(sql::SELECT_FIFO)?;
                let rows = stmt.query_map(
                    params![to_i64(cursor.last_seq()), now, limit as i64],
                    entry_from_row,
                )?;
                for row in rows {
                    out.push(row?);
                }
            }
            ReadOrder::PriorityFirst => {
                let top = cursor.last_priority().unwrap_or(Priority::Critical);
                let mut stmt = self.conn.prepare_cached(sql::SELECT_CLASS)?;
                for class in Priority::ALL.into_iter().rev().filter(|p| *p <= top) {
                    let after = if class == top { cursor.last_seq() } else { 0 };
                    let left = (limit - out.len()) as i64;
                    let rows = stmt.query_map(
                        params![class.as_i64(), to_i64(after), now, left],
                        entry_from_row,
                    )?;
                    for row in rows {
                        out.push(row?);
                    }
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The figures for `journal stats`.
    pub(crate) fn stats(&self) -> Sql<Stats> {
        let now = self.env.clock.now_ms();
        let flushes = self.writer_flushes.as_deref();
        let expired: i64 = self
            .conn
            .prepare_cached(sql::COUNT_EXPIRED)?
            .query_row([to_i64(now)], |r| r.get(0))?;
        let oldest: Option<(i64, i64)> = self
            .conn
            .prepare_cached(sql::SELECT_OLDEST)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let last_seq: Option<i64> = self
            .conn
            .query_row(sql::SELECT_LAST_SEQ, [], |r| r.get(0))
            .optional()?;
        let file_len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Ok(Stats {
            path: self.path.clone(),
            file_bytes: file_len(&self.path) + file_len(Path::new(&wal)),
            entries: self.acct.total_entries(),
            bytes: self.acct.total_bytes(),
            max_bytes: self.opts.max_bytes,
            expired_pending: to_u64(expired),
            oldest_seq: oldest.map(|(s, _)| to_u64(s)),
            oldest_age_ms: oldest.map(|(_, r)| now.saturating_sub(to_u64(r))),
            last_seq: last_seq.map_or(0, to_u64),
            per_priority: Priority::ALL
                .into_iter()
                .map(|p| PriorityStats {
                    priority: p,
                    entries: self.acct.entries[p.index()],
                    bytes: self.acct.bytes[p.index()],
                })
                .collect(),
            counters: self.counters,
            writer: WriterStats {
                wal_flushes: flushes.map_or(0, |f| f.count.load(Relaxed)),
                wal_flush_micros: flushes.map_or(0, |f| f.micros.load(Relaxed)),
                wal_flush_failed: flushes.is_some_and(|f| f.failed.load(Relaxed)),
                ..self.writer
            },
            synchronous: self.opts.synchronous,
            when_full: self.opts.when_full,
            read_only: self.opts.read_only,
        })
    }

    /// `PRAGMA integrity_check`: the problems found (empty = healthy).
    pub(crate) fn integrity_check(&self) -> Sql<Vec<String>> {
        sql::check(&self.conn, sql::INTEGRITY_CHECK)
    }
}
