//! The one error type of the edge-agent crate.
//!
//! Every variant that concerns a file names that file, so that a person at the gateway
//! knows what to look at. Hot-path errors (`QuotaExceeded`, `DiskFull`, `Closed`) are
//! plain variants without allocation beyond the path.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why an append was refused by the journal's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaReason {
    /// The byte quota (`max_bytes`) is reached: policy `reject-new`, or policy
    /// `drop-oldest` when only entries of a higher priority than the new one could have
    /// been dropped.
    Bytes,
    /// The free-disk watermark (`min_free_disk_bytes`) is reached, same policies as above.
    Disk,
    /// The message alone is larger than the whole byte quota.
    TooLarge,
}

impl std::fmt::Display for QuotaReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuotaReason::Bytes => "byte quota reached",
            QuotaReason::Disk => "free-disk watermark reached",
            QuotaReason::TooLarge => "message larger than the whole quota",
        })
    }
}

/// Everything that can go wrong inside edge-agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The journal refused a new message because of its limits; nothing was stored.
    /// An MQTT 5 broker answers PUBACK/PUBREC reason 0x97 (quota exceeded).
    #[error("journal quota exceeded: {0}")]
    QuotaExceeded(QuotaReason),

    /// SQLite reported `SQLITE_FULL`: the disk (or the page limit) is full. The batch the
    /// message was part of was rolled back; everything committed before is intact.
    #[error("journal {path}: disk full, message not stored")]
    DiskFull {
        /// The journal database file.
        path: PathBuf,
    },

    /// The journal database could not be opened (missing directory, permissions, locked).
    #[error("cannot open journal {path}: {source}")]
    Open {
        /// The journal database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },

    /// The journal file is damaged beyond what SQLite's WAL recovery repairs. The file is
    /// left untouched: move it aside to start a new journal, or salvage it with `sqlite3`.
    #[error("journal {path} is corrupt ({details}); it was left untouched")]
    Corrupt {
        /// The journal database file.
        path: PathBuf,
        /// What SQLite reported.
        details: String,
    },

    /// The file is an SQLite database, but not an edge-agent journal (or of a newer
    /// schema version than this build understands).
    #[error("{path} is not an edge-agent journal this version can use: {details}")]
    NotAJournal {
        /// The database file.
        path: PathBuf,
        /// What did not match.
        details: String,
    },

    /// A read-only open (the `journal` CLI) found no journal file.
    #[error("no journal at {path}")]
    NotFound {
        /// The path that was looked at.
        path: PathBuf,
    },

    /// A write was attempted on a journal opened read-only.
    #[error("journal {path} is open read-only")]
    ReadOnly {
        /// The journal database file.
        path: PathBuf,
    },

    /// An SQLite call failed at run time. The batch it belonged to was rolled back.
    #[error("journal {path}: {source}")]
    Sqlite {
        /// The journal database file.
        path: PathBuf,
        /// What SQLite said (shared: one failure answers every caller of the batch).
        source: Arc<rusqlite::Error>,
    },

    /// The journal's thread has stopped (closed, or it failed earlier).
    #[error("journal is closed")]
    Closed,

    /// A message handed to the journal is not acceptable (for example QoS out of range).
    #[error("invalid journal entry: {0}")]
    InvalidEntry(String),

    /// A configuration value is invalid.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The configuration key, dotted (`journal.rules[2].filter`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A configuration file (or the built-in defaults) is unreadable or invalid: the
    /// file, then the key and what is wrong with it.
    #[error("configuration {origin}: {reason}")]
    ConfigFile {
        /// The file, or "built-in defaults".
        origin: String,
        /// The dotted key and what is wrong (`limits.max_connections: must be greater
        /// than 0`), or why the file cannot be read.
        reason: String,
    },

    /// No usable state directory could be determined.
    #[error("no state directory: {0}")]
    StateDir(String),

    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// An internal invariant did not hold (a bug); the operation was not carried out.
    #[error("internal error: {0}")]
    Internal(String),

    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: io::Error,
    },

    /// The MQTT layer failed (TLS files of a listener, for example).
    #[error(transparent)]
    Mqtt(#[from] mqtt::Error),

    /// A sensor's hardware failed (open, bus transfer, wrong chip, bad data). The
    /// sensor task counts it by kind, reports it and retries; it never stops the agent.
    #[error("sensor fault ({kind}): {message}")]
    Sensor {
        /// What kind of fault (the `kind` label of the error counter).
        kind: crate::fault_kind::FaultKind,
        /// What the driver or the OS said, with the device.
        message: String,
    },

    /// Writing the export stream failed.
    #[error("export failed: {0}")]
    Export(#[source] io::Error),
}

impl Error {
    /// `true` for refusals by the journal's limits (MQTT 5 reason code 0x97).
    pub fn is_quota_exceeded(&self) -> bool {
        matches!(self, Error::QuotaExceeded(_))
    }

    /// A copy of a batch-level failure, sent to every caller whose command was in the
    /// failed batch. Only the variants a batch can fail with are copied exactly.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::DiskFull { path } => Error::DiskFull { path: path.clone() },
            Error::Sqlite { path, source } => Error::Sqlite {
                path: path.clone(),
                source: Arc::clone(source),
            },
            Error::Corrupt { path, details } => Error::Corrupt {
                path: path.clone(),
                details: details.clone(),
            },
            Error::QuotaExceeded(r) => Error::QuotaExceeded(*r),
            Error::Closed => Error::Closed,
            other => Error::Internal(other.to_string()),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
