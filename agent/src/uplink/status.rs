//! What the uplink is doing, for logs, metrics and `edge-agent status`: a cheap shared
//! handle of atomics that the link updates and anyone may read.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Connection state of the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    /// No `[uplink] bridge` configured.
    Disabled = 0,
    /// Connecting (TCP, TLS, CONNECT).
    Connecting = 1,
    /// Connected: sending and receiving.
    Connected = 2,
    /// Waiting before the next attempt after a failure.
    Backoff = 3,
    /// The bridge refused the credentials or the TLS handshake failed on a certificate;
    /// retried at the longest backoff.
    Refused = 4,
    /// Stopped (agent shutting down).
    Stopped = 5,
}

impl LinkState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Disabled => "disabled",
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Backoff => "backoff",
            LinkState::Refused => "refused",
            LinkState::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> LinkState {
        match v {
            1 => LinkState::Connecting,
            2 => LinkState::Connected,
            3 => LinkState::Backoff,
            4 => LinkState::Refused,
            5 => LinkState::Stopped,
            _ => LinkState::Disabled,
        }
    }
}

/// Shared uplink status.
#[derive(Debug, Default)]
pub struct UplinkStatus {
    state: AtomicU8,
    /// Publishes sent and not yet acknowledged.
    pub inflight: AtomicU64,
    /// Publishes sent (resends included).
    pub sent: AtomicU64,
    /// Publishes the bridge acknowledged (and that were then confirmed in the journal).
    pub acked: AtomicU64,
    /// Messages the bridge refused for good (not authorized, invalid topic), removed.
    pub rejected: AtomicU64,
    /// Journal entries no topic rule maps to the cloud, removed unsent.
    pub unmapped: AtomicU64,
    /// Cloud messages handed to local subscribers.
    pub downlink: AtomicU64,
    /// Successful connections.
    pub connects: AtomicU64,
    /// Failed connection attempts and lost connections.
    pub failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl UplinkStatus {
    /// The current state.
    pub fn state(&self) -> LinkState {
        LinkState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub(crate) fn set_state(&self, s: LinkState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// The last failure, if any since the last successful connection.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub(crate) fn set_error(&self, e: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = e;
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
