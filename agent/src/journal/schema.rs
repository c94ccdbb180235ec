//! The on-disk schema, every SQL statement the journal runs, and opening a database file
//! safely (recognise our files, refuse foreign or corrupt ones, never delete anything).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::config::SyncMode;
use crate::error::{Error, Result};

/// `PRAGMA application_id` of a journal file: "EAJL" (Edge Agent JournaL).
pub(crate) const APPLICATION_ID: i64 = 0x4541_4A4C;
/// `PRAGMA user_version` of the current schema.
pub(crate) const SCHEMA_VERSION: i64 = 1;
/// The WAL file is truncated to this size after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// Prepared statements kept by the connection.
const STATEMENT_CACHE: usize = 32;
/// How long a statement waits for a lock held by another process (the CLI).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema version 1. `seq` is AUTOINCREMENT so a sequence number is never reused, even
/// after the newest entries were confirmed and the agent restarted.
pub(crate) const CREATE_SCHEMA: &str = "
CREATE TABLE entries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    topic           TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    qos             INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
    retain          INTEGER NOT NULL CHECK (retain IN (0, 1)),
    priority        INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 3),
    received_ms     INTEGER NOT NULL,
    expires_ms      INTEGER,
    user_properties TEXT,
    size            INTEGER NOT NULL CHECK (size >= 0)
);
CREATE INDEX entries_by_priority ON entries (priority, seq);
CREATE INDEX entries_by_expiry ON entries (expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE counters (
    name  TEXT    PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
PRAGMA application_id = 1161906764;
PRAGMA user_version = 1;
";

pub(crate) const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";
pub(crate) const BEGIN_DEFERRED: &str = "BEGIN DEFERRED";
pub(crate) const COMMIT: &str = "COMMIT";
pub(crate) const ROLLBACK: &str = "ROLLBACK";

/// The head of an INSERT of entries; the store appends one `(?, ...)` group of nine
/// parameters per row (see `store::insert_sql`).
pub(crate) const INSERT_ENTRIES: &str = "INSERT INTO entries \
    (topic, payload, qos, retain, priority, received_ms, expires_ms, user_properties, size) \
    VALUES ";
pub(crate) const DELETE_ENTRY: &str = "DELETE FROM entries WHERE seq = ?1 RETURNING priority, size";
pub(crate) const DELETE_EXPIRED: &str =
    "DELETE FROM entries WHERE expires_ms <= ?1 RETURNING priority, size";
pub(crate) const SELECT_OLDEST_OF_CLASS: &str =
    "SELECT seq, size FROM entries WHERE priority = ?1 ORDER BY seq LIMIT ?2";
pub(crate) const DELETE_CLASS_UP_TO: &str = "DELETE FROM entries WHERE priority = ?1 AND seq <= ?2";

/// Reads in sequence order (the columns are those of `Entry`, in this order).
pub(crate) const SELECT_FIFO: &str = "SELECT seq, topic, payload, qos, retain, priority, \
    received_ms, expires_ms, user_properties FROM entries \
    WHERE seq > ?1 AND (expires_ms IS NULL OR expires_ms > ?2) ORDER BY seq LIMIT ?3";
/// Reads one priority class in sequence order (same columns as `SELECT_FIFO`).
pub(crate) const SELECT_CLASS: &str = "SELECT seq, topic, payload, qos, retain, priority, \
    received_ms, expires_ms, user_properties FROM entries \
    WHERE priority = ?1 AND seq > ?2 AND (expires_ms IS NULL OR expires_ms > ?3) \
    ORDER BY seq LIMIT ?4";
pub(crate) const ACCOUNT_BY_CLASS: &str =
    "SELECT priority, COUNT(*), COALESCE(SUM(size), 0) FROM entries GROUP BY priority";
pub(crate) const SELECT_COUNTERS: &str = "SELECT name, value FROM counters";
pub(crate) const ADD_TO_COUNTER: &str = "INSERT INTO counters (name, value) VALUES (?1, ?2) \
    ON CONFLICT (name) DO UPDATE SET value = value + excluded.value";
pub(crate) const SELECT_OLDEST: &str = "SELECT seq, received_ms FROM entries ORDER BY seq LIMIT 1";
pub(crate) const SELECT_LAST_SEQ: &str = "SELECT seq FROM sqlite_sequence WHERE name = 'entries'";
pub(crate) const COUNT_EXPIRED: &str = "SELECT COUNT(*) FROM entries WHERE expires_ms <= ?1";
pub(crate) const INTEGRITY_CHECK: &str = "PRAGMA integrity_check";
const CHECKPOINT_TRUNCATE: &str = "PRAGMA wal_checkpoint(TRUNCATE)";
const QUICK_CHECK: &str = "PRAGMA quick_check";
const COUNT_SCHEMA_OBJECTS: &str = "SELECT COUNT(*) FROM sqlite_master";
const COUNT_JOURNAL_TABLES: &str = "SELECT COUNT(*) FROM sqlite_master \
    WHERE type = 'table' AND name IN ('entries', 'counters')";

/// Maps an SQLite error at run time to the crate error, naming the file.
pub(crate) fn classify(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Error::DiskFull {
            path: path.to_path_buf(),
        },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Error::Corrupt {
            path: path.to_path_buf(),
            details: e.to_string(),
        },
        _ => Error::Sqlite {
            path: path.to_path_buf(),
            source: Arc::new(e),
        },
    }
}

/// Like [`classify`], for failures while opening.
fn classify_open(path: &Path, e: rusqlite::Error) -> Error {
    match classify(path, e) {
        Error::Sqlite { path, source } => match Arc::try_unwrap(source) {
            Ok(source) => Error::Open { path, source },
            Err(source) => Error::Sqlite { path, source },
        },
        other => other,
    }
}

/// Marks an opened file as accepted: from now on closing checkpoints the WAL as usual.
pub(crate) fn accept(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)
        .map(|_| ())
}

/// Copies the whole WAL into the main file and empties it (`wal_checkpoint(TRUNCATE)`);
/// SQLite syncs the WAL before and the main file after. A checkpoint kept from
/// completing (a reader of the CLI in the middle of the WAL) is logged and left for the
/// automatic ones; a failed one is an error.
pub(crate) fn checkpoint_whole_wal(conn: &Connection) -> rusqlite::Result<()> {
    let (busy, log, done): (i64, i64, i64) = conn.query_row(CHECKPOINT_TRUNCATE, [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    if busy != 0 {
        tracing::warn!(
            wal_frames = log,
            checkpointed = done,
            "journal WAL checkpoint at open incomplete: a reader holds it"
        );
    }
    Ok(())
}

/// Runs `PRAGMA quick_check` or `integrity_check`; returns the problems (empty = healthy).
pub(crate) fn check(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut problems = Vec::new();
    for row in rows {
        let line = row?;
        if line != "ok" {
            problems.push(line);
        }
    }
    Ok(problems)
}

/// Opens (and, read-write, creates) the journal at `path`. The connection does not
/// checkpoint on close until [`accept`] is called, so a file refused later is untouched.
pub(crate) fn open(
    path: &Path,
    read_only: bool,
    sync: SyncMode,
    quick_check: bool,
) -> Result<Connection> {
    if read_only {
        if !path.is_file() {
            return Err(Error::NotFound {
                path: path.to_path_buf(),
            });
        }
    } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| classify_open(path, e))?;
    let err = |e| classify_open(path, e);
    // Until the file is accepted, closing must not checkpoint the WAL into it: a refused
    // journal is left exactly as it was found, WAL included.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    // Room for every statement the journal runs (the multi-row INSERTs are 7 of them).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The first statement reads the header: a file that is not a database fails here.
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(err)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    let objects: i64 = conn
        .query_row(COUNT_SCHEMA_OBJECTS, [], |r| r.get(0))
        .map_err(err)?;
    let foreign = |details: String| Error::NotAJournal {
        path: path.to_path_buf(),
        details,
    };
    let fresh = app_id == 0 && version == 0 && objects == 0;
    if !fresh && app_id != APPLICATION_ID {
        return Err(foreign(format!("application_id is {app_id:#x}")));
    }
    if !fresh && version != SCHEMA_VERSION {
        return Err(foreign(format!(
            "schema version {version}, this build reads {SCHEMA_VERSION}"
        )));
    }
    if !fresh {
        let tables: i64 = conn
            .query_row(COUNT_JOURNAL_TABLES, [], |r| r.get(0))
            .map_err(err)?;
        if tables != 2 {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                details: "journal tables are missing".to_owned(),
            });
        }
    }
    if fresh && read_only {
        return Err(foreign("empty database".to_owned()));
    }
    if !read_only {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(foreign(format!("cannot switch to WAL mode (got {mode})")));
        }
        conn.pragma_update(None, "synchronous", sync.pragma_value())
            .map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(err)?;
    }
    if quick_check {
        let problems = check(&conn, QUICK_CHECK).map_err(err)?;
        if !problems.is_empty() {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                details: format!("quick_check: {}", problems.join("; ")),
            });
        }
    }
    if fresh {
        let script = format!("{BEGIN_IMMEDIATE};{CREATE_SCHEMA}{COMMIT};");
        if let Err(e) = conn.execute_batch(&script) {
            // Best effort: the transaction may already be gone.
            let _ = conn.execute_batch(ROLLBACK);
            return Err(err(e));
        }
    }
    Ok(conn)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn application_id_matches_the_schema_script() {
        assert!(CREATE_SCHEMA.contains(&format!("application_id = {APPLICATION_ID};")));
        assert!(CREATE_SCHEMA.contains(&format!("user_version = {SCHEMA_VERSION};")));
    }

    #[test]
    fn create_reopen_and_refuse_foreign_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/journal.db");
        drop(open(&path, false, SyncMode::Full, true).expect("create"));
        drop(open(&path, false, SyncMode::Normal, true).expect("reopen"));
        drop(open(&path, true, SyncMode::Full, true).expect("read-only"));

        let other = dir.path().join("other.db");
        let conn = Connection::open(&other).expect("plain db");
        conn.execute_batch("CREATE TABLE t (x)").expect("table");
        drop(conn);
        let e = open(&other, false, SyncMode::Full, true).expect_err("foreign accepted");
        assert!(matches!(e, Error::NotAJournal { .. }), "{e}");

        let text = dir.path().join("text.db");
        std::fs::write(&text, vec![b'x'; 4096]).expect("write");
        let e = open(&text, false, SyncMode::Full, true).expect_err("garbage accepted");
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("text.db"), "{e}");
        assert_eq!(std::fs::read(&text).expect("read"), vec![b'x'; 4096]);

        let missing = dir.path().join("missing.db");
        let e = open(&missing, true, SyncMode::Full, true).expect_err("missing accepted");
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }
}
