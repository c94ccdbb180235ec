//! The one error type of the mqtt crate.

use std::io;

/// Why a connection or a listener failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid MQTT packet.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// A valid packet that breaks the protocol's rules.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// CONNECT with a protocol level we do not speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocol(u8),
    /// A packet over the configured maximum size.
    #[error("packet of {0} bytes exceeds the maximum packet size")]
    PacketTooLarge(usize),
    /// An outgoing PUBLISH larger than the client's Maximum Packet Size (nothing was
    /// written: the message is discarded for that client).
    #[error("packet of {0} bytes exceeds the client's maximum packet size")]
    TooLargeForClient(usize),
    /// No CONNECT arrived in time.
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    /// Nothing arrived within 1.5 times the keepalive.
    #[error("keepalive timeout")]
    KeepAliveTimeout,
    /// TLS setup or handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// The WebSocket upgrade failed.
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// A certificate or key file could not be used.
    #[error("TLS file {path}: {reason}")]
    TlsFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An HTTP exchange of the metrics endpoint or its client failed.
    #[error("HTTP: {0}")]
    Http(String),
}
