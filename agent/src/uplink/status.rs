//! What the uplink is doing, for logs, metrics and `edge-agent status`: a cheap shared
//! handle of atomics that the link updates and anyone may read.
//!
//! Besides counters it times the stages of a drain (issue #17), so a slow one can be
//! explained stage by stage: the journal reads ([`UplinkStatus::journal_read`]), a
//! PUBLISH's wait for its PUBACK ([`UplinkStatus::puback`]) and a PUBACK's wait for the
//! journal's answer to its confirm ([`UplinkStatus::confirm`]), as [`StageTimes`]
//! histograms, and how much of the window is held ([`UplinkStatus::window`]).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;

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
    /// Journal reads of the feeder (a batch each): their time.
    pub journal_read: StageTimes,
    /// Entries those reads returned.
    pub journal_read_entries: AtomicU64,
    /// From a PUBLISH's hand-over to the socket to its PUBACK.
    pub puback: StageTimes,
    /// From a PUBACK to the journal's answer to the confirm of its entry (the deletion
    /// committed, and flushed with `synchronous = full`): when its window slot returns.
    pub confirm: StageTimes,
    last_error: Mutex<Option<String>>,
    /// The window's size and its slots (set once the uplink starts).
    window: OnceLock<(u64, Arc<Semaphore>)>,
}

/// Upper bounds of the [`StageTimes`] buckets, microseconds: 50 µs doubling to 6.55 s.
pub const STAGE_BUCKETS_MICROS: [u64; 18] = {
    let mut b = [50u64; 18];
    let mut i = 1;
    while i < b.len() {
        b[i] = b[i - 1] * 2;
        i += 1;
    }
    b
};

/// A latency histogram that any task updates without a lock: a count per bucket of
/// [`STAGE_BUCKETS_MICROS`] (and one above them all) and the sum. Hand-written rather
/// than `prometheus_client`'s `Histogram` because the figures must also be read into the
/// serializable snapshot behind `/status` and `edge-agent status`, and that histogram
/// can only be read by its encoder.
#[derive(Debug, Default)]
pub struct StageTimes {
    counts: [AtomicU64; STAGE_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl StageTimes {
    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = STAGE_BUCKETS_MICROS.partition_point(|&le| le < micros);
        if let Some(c) = self.counts.get(bucket) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations per bucket (not cumulative), the one above every bound last.
    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Sum of the observations, microseconds.
    pub fn sum_micros(&self) -> u64 {
        self.sum_micros.load(Ordering::Relaxed)
    }
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

    /// The window (`[uplink] window`) and the slots held now: by entries sent and not
    /// yet acknowledged, or acknowledged and not yet confirmed in the journal.
    pub fn window(&self) -> (u64, u64) {
        match self.window.get() {
            Some((size, slots)) => {
                let free = slots.available_permits() as u64;
                (*size, size.saturating_sub(free))
            }
            None => (0, 0),
        }
    }

    pub(crate) fn set_window(&self, size: usize, slots: Arc<Semaphore>) {
        let _ = self.window.set((size as u64, slots));
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_times_count_each_observation_in_its_bucket() {
        let t = StageTimes::default();
        t.observe(Duration::from_micros(10));
        t.observe(Duration::from_micros(50));
        t.observe(Duration::from_micros(51));
        t.observe(Duration::from_millis(3));
        t.observe(Duration::from_secs(100));
        let counts = t.counts();
        assert_eq!(counts.len(), STAGE_BUCKETS_MICROS.len() + 1);
        assert_eq!(counts[0], 2, "<= 50 µs");
        assert_eq!(counts[1], 1, "<= 100 µs");
        // 3 ms: in (1.6 ms, 3.2 ms].
        assert_eq!(STAGE_BUCKETS_MICROS[6], 3200);
        assert_eq!(counts[6], 1);
        assert_eq!(counts[STAGE_BUCKETS_MICROS.len()], 1, "above every bound");
        assert_eq!(counts.iter().sum::<u64>(), 5);
        assert_eq!(t.sum_micros(), 10 + 50 + 51 + 3000 + 100_000_000);
    }

    #[test]
    fn window_used_is_what_the_slots_lack() {
        let s = UplinkStatus::default();
        assert_eq!(s.window(), (0, 0));
        let slots = Arc::new(Semaphore::new(8));
        s.set_window(8, slots.clone());
        let held = slots.clone().try_acquire_many_owned(3).unwrap();
        assert_eq!(s.window(), (8, 3));
        drop(held);
        assert_eq!(s.window(), (8, 0));
    }
}
