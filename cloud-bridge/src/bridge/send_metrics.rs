//! RocketMQ send figures, updated around every send of a publish (`Bridge::store`):
//! a latency histogram of the sends that succeeded, and counters of the outcomes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::{Deserialize, Serialize};

/// Live send figures; one per bridge.
#[derive(Debug)]
pub struct SendMetrics {
    /// Seconds from the first send attempt to SEND_OK (busy retries included).
    pub latency: Histogram,
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    /// Sends that let the next send of their topic go before their answer.
    pipelined: AtomicU64,
    /// Sum of the successful sends' latencies, microseconds (the histogram's sum is not
    /// readable outside prometheus-client's encoder).
    micros: AtomicU64,
}

impl Default for SendMetrics {
    fn default() -> Self {
        Self {
            // 0.5 ms .. 4 s, doubling.
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            ok: AtomicU64::default(),
            failed: AtomicU64::default(),
            timed_out: AtomicU64::default(),
            pipelined: AtomicU64::default(),
            micros: AtomicU64::default(),
        }
    }
}

/// How one send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The broker answered SEND_OK.
    Ok,
    /// The broker refused it or the connection failed.
    Failed,
    /// No answer within `rocketmq.send_timeout_ms`.
    TimedOut,
}

impl SendMetrics {
    /// Records one send that took `took`.
    pub fn record(&self, outcome: SendOutcome, took: Duration) {
        let c = match outcome {
            SendOutcome::Ok => {
                self.latency.observe(took.as_secs_f64());
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                self.micros.fetch_add(micros, Ordering::Relaxed);
                &self.ok
            }
            SendOutcome::Failed => &self.failed,
            SendOutcome::TimedOut => &self.timed_out,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a send queued in order on its broker connection (`Producer::send_queued`).
    pub fn record_pipelined(&self) {
        self.pipelined.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot of the counters.
    pub fn values(&self) -> SendValues {
        SendValues {
            sent: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            pipelined: self.pipelined.load(Ordering::Relaxed),
            latency_sum_seconds: self.micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// Send counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SendValues {
    /// Messages stored (SEND_OK).
    pub sent: u64,
    /// Sends refused or failed.
    pub failed: u64,
    /// Sends without an answer in time.
    pub timed_out: u64,
    /// Sends queued in order, letting the next of their topic go before their answer.
    #[serde(default)]
    pub pipelined: u64,
    /// Sum of the successful sends' latencies.
    pub latency_sum_seconds: f64,
}

impl SendValues {
    /// Average latency of the successful sends, seconds.
    pub fn average_seconds(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.latency_sum_seconds / self.sent as f64
        }
    }
}
