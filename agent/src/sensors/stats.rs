//! Per-sensor counters and state, kept in atomics (and one `Mutex` for the last error
//! text) so the sensor task updates them without waiting, and the metrics exporter or
//! `edge-agent status` copies them out with [`crate::sensors::Sensors::stats`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use super::config::SensorKind;
use crate::fault_kind::FaultKind;

/// Where a sensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorState {
    /// Not opened yet (the first attempt is under way).
    Starting,
    /// The last attempt produced a sample.
    Ok,
    /// The last attempt failed; retrying with backoff.
    Failing,
}

impl SensorState {
    /// `starting`, `ok` or `failing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ok => "ok",
            Self::Failing => "failing",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Ok,
            2 => Self::Failing,
            _ => Self::Starting,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Starting => 0,
            Self::Ok => 1,
            Self::Failing => 2,
        }
    }
}

/// A copy of one sensor's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorStats {
    /// The sensor's `id`.
    pub id: String,
    /// Its `type`.
    pub kind: SensorKind,
    /// Its state now.
    pub state: SensorState,
    /// Reading messages the local broker accepted (one per value).
    pub readings_published: u64,
    /// Status messages the local broker accepted.
    pub status_published: u64,
    /// Faults, by kind: every kind of [`FaultKind::ALL`], in that order, zeros included
    /// (so a counter exists from the start).
    pub errors: Vec<(FaultKind, u64)>,
    /// The text of the last fault, if there was one.
    pub last_error: Option<String>,
}

impl SensorStats {
    /// Faults of one kind.
    pub fn errors_of(&self, kind: FaultKind) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// Faults of every kind.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }
}

/// The live counters of one sensor, shared by its task and the [`super::Sensors`] handle.
#[derive(Debug)]
pub(crate) struct Counters {
    id: String,
    kind: SensorKind,
    state: AtomicU8,
    published: AtomicU64,
    status: AtomicU64,
    errors: [AtomicU64; FaultKind::ALL.len()],
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn new(id: &str, kind: SensorKind) -> Self {
        Self {
            id: id.to_owned(),
            kind,
            state: AtomicU8::new(SensorState::Starting.to_u8()),
            published: AtomicU64::new(0),
            status: AtomicU64::new(0),
            errors: Default::default(),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn status_published(&self) {
        self.status.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_state(&self, s: SensorState) {
        self.state.store(s.to_u8(), Ordering::Relaxed);
    }

    pub(crate) fn state(&self) -> SensorState {
        SensorState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Counts a fault and keeps its text.
    pub(crate) fn fault(&self, kind: FaultKind, text: &str) {
        self.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(text.to_owned());
        }
    }

    pub(crate) fn snapshot(&self) -> SensorStats {
        SensorStats {
            id: self.id.clone(),
            kind: self.kind,
            state: self.state(),
            readings_published: self.published.load(Ordering::Relaxed),
            status_published: self.status.load(Ordering::Relaxed),
            errors: FaultKind::ALL
                .iter()
                .map(|k| (*k, self.errors[k.index()].load(Ordering::Relaxed)))
                .collect(),
            last_error: self.last_error.lock().ok().and_then(|l| l.clone()),
        }
    }
}
