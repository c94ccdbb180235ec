//! What the journal asks of the outside world: the time, the free disk space and the
//! flush of its WAL to stable storage. All are injectable so that tests can expire
//! entries, fill the disk and hold back or fail a flush at will.

use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to (tests, simulations). Clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now_ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set_ms(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Free space of the file system holding a directory.
pub trait DiskSpace: Send + Sync + Debug {
    /// Bytes available to an unprivileged writer in the file system holding `dir`.
    fn available_bytes(&self, dir: &Path) -> io::Result<u64>;
}

/// `statvfs(2)` of the journal's directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatvfsDisk;

impl DiskSpace for StatvfsDisk {
    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        let st = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// A disk whose free space is set by hand (tests). Clones share the value.
#[derive(Debug, Clone)]
pub struct FixedDisk(Arc<AtomicU64>);

impl FixedDisk {
    /// A disk with `available` bytes free.
    pub fn new(available: u64) -> Self {
        FixedDisk(Arc::new(AtomicU64::new(available)))
    }

    /// Changes the free space.
    pub fn set(&self, available: u64) {
        self.0.store(available, Ordering::SeqCst);
    }
}

impl DiskSpace for FixedDisk {
    fn available_bytes(&self, _dir: &Path) -> io::Result<u64> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

/// Flushes the journal's `-wal` file to stable storage (`synchronous = full`).
pub trait WalSync: Send + Sync + Debug {
    /// Makes every byte written to `wal` so far durable.
    fn sync(&self, wal: &File) -> io::Result<()>;
}

/// `fdatasync(2)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fdatasync;

impl WalSync for Fdatasync {
    fn sync(&self, wal: &File) -> io::Result<()> {
        wal.sync_data()
    }
}

/// The clock, disk and flush a journal uses.
#[derive(Debug, Clone)]
pub struct JournalEnv {
    /// Source of "now" for receipt times and expiry.
    pub clock: Arc<dyn Clock>,
    /// Source of the free-space figure for the watermark.
    pub disk: Arc<dyn DiskSpace>,
    /// The flush of the WAL before appends are answered (`synchronous = full`).
    pub wal_sync: Arc<dyn WalSync>,
}

impl Default for JournalEnv {
    fn default() -> Self {
        JournalEnv {
            clock: Arc::new(SystemClock),
            disk: Arc::new(StatvfsDisk),
            wal_sync: Arc::new(Fdatasync),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_reports_something_for_the_temp_dir() {
        let free = StatvfsDisk
            .available_bytes(&std::env::temp_dir())
            .expect("statvfs");
        assert!(free > 0);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5);
        let c2 = c.clone();
        c.advance_ms(10);
        assert_eq!(c2.now_ms(), 15);
        c2.set_ms(1);
        assert_eq!(c.now_ms(), 1);
        assert!(SystemClock.now_ms() > 1_600_000_000_000);
    }
}
