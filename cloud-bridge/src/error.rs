//! The one error type of the cloud-bridge crate.

use std::io;

/// Everything that can go wrong inside cloud-bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket or file operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// The configuration is unreadable or invalid.
    #[error("configuration {origin}: {reason}")]
    Config {
        /// The file (or "built-in defaults").
        origin: String,
        /// What is wrong.
        reason: String,
    },

    /// A write would exceed a `[quotas]` bound of a state table.
    #[error("quota exceeded: {0} table, {quota}", quota = .1.name())]
    QuotaExceeded(&'static str, Quota),

    /// An argument or request that makes no sense (for example an unregistered filter).
    #[error("{0}")]
    Invalid(String),

    /// MQTT listener setup failed (TLS files).
    #[error(transparent)]
    Mqtt(#[from] mqtt::Error),

    /// A RocketMQ server (name server or broker) could not be reached: the TCP connection
    /// was refused or not established in time. The request was certainly not sent, so it
    /// is safe to send it elsewhere.
    #[error("cannot connect to RocketMQ server {addr}: {source}")]
    Connect {
        /// The `host:port` that was tried.
        addr: String,
        /// Why the connection failed.
        source: io::Error,
    },

    /// The connection to a RocketMQ server broke while a request was in flight. The server
    /// may or may not have processed the request.
    #[error("RocketMQ connection closed")]
    ConnectionClosed,

    /// No response from a RocketMQ server before the request's deadline. The server may
    /// still process the request: do not resend blindly.
    #[error("RocketMQ request timed out")]
    Timeout,

    /// A remoting frame was malformed or too large (the connection is dropped).
    #[error("malformed RocketMQ frame: {0}")]
    Frame(String),

    /// A well-formed response whose content could not be understood (missing header field,
    /// undecodable route JSON or message body).
    #[error("unexpected RocketMQ response: {0}")]
    Protocol(String),

    /// The RocketMQ server answered a request with a non-success response code.
    #[error("RocketMQ error code {code}: {remark}")]
    Remoting {
        /// The `ResponseCode` of the Java server (1 system error, 2 busy, 16 no permission, ...).
        code: i32,
        /// The server's explanation, empty when it sent none.
        remark: String,
    },

    /// The name servers know no route for this topic, or the route has no writable queue.
    #[error("no route for RocketMQ topic {0}")]
    RouteNotFound(String),

    /// The broker stored the message but could not flush it to disk in time
    /// (SendStatus FLUSH_DISK_TIMEOUT, response code 10).
    #[error("RocketMQ flush disk timeout for message {msg_id}")]
    FlushDiskTimeout {
        /// The message's UNIQ_KEY.
        msg_id: String,
    },

    /// The broker stored the message but its slave did not confirm it in time
    /// (SendStatus FLUSH_SLAVE_TIMEOUT, response code 12).
    #[error("RocketMQ flush slave timeout for message {msg_id}")]
    FlushSlaveTimeout {
        /// The message's UNIQ_KEY.
        msg_id: String,
    },

    /// The broker stored the message but has no slave to replicate it to
    /// (SendStatus SLAVE_NOT_AVAILABLE, response code 11).
    #[error("RocketMQ slave not available for message {msg_id}")]
    SlaveNotAvailable {
        /// The message's UNIQ_KEY.
        msg_id: String,
    },

    /// A message property name or value cannot be encoded (it is empty or contains the
    /// separators U+0001 / U+0002), or the properties are longer than 32767 bytes.
    #[error("invalid RocketMQ message property: {0}")]
    InvalidProperty(String),
}

/// Which limit of a state table (`meta/table.rs`) a write would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// `TableLimits::entries`.
    Entries,
    /// `TableLimits::bytes`.
    Bytes,
    /// `TableLimits::entries_per_owner`.
    EntriesPerOwner,
    /// `TableLimits::bytes_per_owner`.
    BytesPerOwner,
    /// `TableLimits::entry_bytes`.
    EntryBytes,
}

impl Quota {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Entries => "entries",
            Self::Bytes => "bytes",
            Self::EntriesPerOwner => "entries_per_client",
            Self::BytesPerOwner => "bytes_per_client",
            Self::EntryBytes => "entry_bytes",
        }
    }
}
