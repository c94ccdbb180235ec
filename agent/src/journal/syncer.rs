//! The WAL syncer: makes committed batches durable off the journal thread
//! (`synchronous = full`).
//!
//! The journal's connection then runs SQLite's `synchronous = NORMAL`: a commit writes its
//! WAL frames but does not wait for them to reach the disk. The journal thread hands each
//! committed batch's replies to this thread and goes on with the next batch; this thread
//! `fdatasync`s the `-wal` file and only then lets the replies of every batch committed
//! before that flush leave. So the promise is that of SQLite's FULL (an acknowledged
//! message is in a flushed WAL frame), but the journal thread inserts the next batch while
//! the disk flushes the last ones, and one flush covers every batch committed before it
//! started.
//!
//! Why this is as durable as FULL:
//! - WAL recovery keeps every frame up to the last valid commit frame (frames carry a
//!   checksum chained from the WAL header), and `fdatasync` makes durable every byte
//!   written to the file before it was called, so a batch whose commit returned before
//!   the flush started survives a power cut.
//! - SQLite at NORMAL still flushes the WAL before every checkpoint, the database after
//!   it, and the new WAL header when the WAL restarts; checkpoints are not changed.
//! - The `-wal` file is opened by path, and reopened (with a flush of its directory) if
//!   SQLite ever replaced it; the check is one `stat` per flush.
//! - Replies leave in commit order, reads included, so no reply reveals a commit that is
//!   not durable yet. A failed flush fails every reply it covered: those callers are told
//!   their message is not known to be on disk (it stays in the journal).
//!
//! Written by hand: it is one thread and a bounded channel, and no crate does this for
//! SQLite.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use super::env::WalSync;
use crate::error::{Error, Result};

/// Committed batches waiting for a flush; the journal thread waits when it is full.
const QUEUE: usize = 64;

/// Flushes done and the time they took (read into the journal's stats).
#[derive(Debug, Default)]
pub(crate) struct FlushStats {
    pub count: AtomicU64,
    pub micros: AtomicU64,
}

/// Answers a batch once it may leave: its payload and the flush failure, if any.
pub(crate) type Deliver<T> = fn(T, Option<&Error>);

/// A committed batch: its payload and whether it must be flushed before it is answered.
struct Job<T> {
    payload: T,
    durable: bool,
}

/// The handle of the syncer thread; dropping it flushes and answers what is queued.
pub(crate) struct Syncer<T> {
    tx: Option<SyncSender<Job<T>>>,
    thread: Option<JoinHandle<()>>,
    deliver: Deliver<T>,
}

/// The `-wal` file, opened on the first flush.
struct Wal {
    path: PathBuf,
    dir: PathBuf,
    sync: Arc<dyn WalSync>,
    /// The open file and its (device, inode).
    open: Option<(File, (u64, u64))>,
}

impl Wal {
    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Flushes the WAL, opening it first if needed (or if SQLite replaced it).
    fn flush(&mut self) -> Result<()> {
        let id = std::fs::metadata(&self.path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| self.io(e))?;
        if self.open.as_ref().map(|(_, open)| *open) != Some(id) {
            let file = File::open(&self.path).map_err(|e| self.io(e))?;
            let id = file
                .metadata()
                .map(|m| (m.dev(), m.ino()))
                .map_err(|e| self.io(e))?;
            // SQLite created this file: its directory entry must be durable too.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| Error::Io {
                    path: self.dir.clone(),
                    source,
                })?;
            self.open = Some((file, id));
        }
        match &self.open {
            Some((file, _)) => self.sync.sync(file).map_err(|e| self.io(e)),
            None => Ok(()),
        }
    }
}

impl<T: Send + 'static> Syncer<T> {
    /// Starts the thread that flushes `wal` (in `dir`) and then calls `deliver`;
    /// `flushes` counts the flushes and their time.
    pub(crate) fn spawn(
        wal: PathBuf,
        dir: &Path,
        sync: Arc<dyn WalSync>,
        flushes: Arc<FlushStats>,
        deliver: Deliver<T>,
    ) -> Result<Syncer<T>> {
        let (tx, rx) = sync_channel(QUEUE);
        let wal = Wal {
            path: wal,
            dir: dir.to_path_buf(),
            sync,
            open: None,
        };
        let thread = std::thread::Builder::new()
            .name("journal-sync".to_owned())
            .spawn(move || run(wal, &rx, &flushes, deliver))
            .map_err(|source| Error::Io {
                path: PathBuf::from("journal-sync thread"),
                source,
            })?;
        Ok(Syncer {
            tx: Some(tx),
            thread: Some(thread),
            deliver,
        })
    }

    /// Queues a committed batch (`durable`: it appended, so it waits for a flush); waits
    /// while the queue is full. If the thread is gone the batch is answered here with
    /// [`Error::Closed`].
    pub(crate) fn submit(&self, payload: T, durable: bool) {
        let job = Job { payload, durable };
        let job = match &self.tx {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => return,
                Err(TrySendError::Full(job)) => match tx.send(job) {
                    Ok(()) => return,
                    Err(e) => e.0,
                },
                Err(TrySendError::Disconnected(job)) => job,
            },
            None => job,
        };
        (self.deliver)(job.payload, Some(&Error::Closed));
    }
}

impl<T> Drop for Syncer<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("journal-sync thread panicked");
        }
    }
}

/// The thread: takes every queued batch, flushes once if any of them appended, answers
/// them all in order.
fn run<T>(mut wal: Wal, rx: &Receiver<Job<T>>, flushes: &FlushStats, deliver: Deliver<T>) {
    let mut jobs = Vec::with_capacity(QUEUE);
    while let Ok(first) = rx.recv() {
        jobs.push(first);
        while jobs.len() < QUEUE {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let failure = if jobs.iter().any(|j| j.durable) {
            let started = Instant::now();
            let result = wal.flush();
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            flushes.count.fetch_add(1, Ordering::Relaxed);
            flushes.micros.fetch_add(micros, Ordering::Relaxed);
            result.err()
        } else {
            None
        };
        if let Some(e) = &failure {
            tracing::error!(error = %e, batches = jobs.len(), "journal WAL flush failed");
        }
        for job in jobs.drain(..) {
            deliver(job.payload, failure.as_ref());
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::io;
    use std::sync::Mutex;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::*;

    /// Records the length of the file at each flush.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<u64>>);

    impl WalSync for Recorder {
        fn sync(&self, wal: &File) -> io::Result<()> {
            let len = wal.metadata()?.len();
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .push(len);
            Ok(())
        }
    }

    type Out = (u32, std::sync::mpsc::Sender<(u32, bool)>);

    fn deliver(out: Out, failure: Option<&Error>) {
        let _ = out.1.send((out.0, failure.is_some()));
    }

    fn spawn(wal: &Path, rec: &Arc<Recorder>, flushes: &Arc<FlushStats>) -> Syncer<Out> {
        let dir = wal.parent().expect("dir");
        Syncer::spawn(
            wal.to_path_buf(),
            dir,
            rec.clone(),
            flushes.clone(),
            deliver,
        )
        .expect("spawn")
    }

    #[test]
    fn batches_are_answered_in_order_after_a_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("j.db-wal");
        std::fs::write(&wal, b"abc").expect("write");
        let rec = Arc::new(Recorder::default());
        let flushes = Arc::new(FlushStats::default());
        let syncer = spawn(&wal, &rec, &flushes);
        let (tx, rx) = channel();
        for i in 0..100 {
            syncer.submit((i, tx.clone()), i % 3 != 0);
        }
        // Dropping the handle flushes and answers everything queued.
        drop(syncer);
        let got: Vec<(u32, bool)> = rx.try_iter().collect();
        assert_eq!(got, (0..100).map(|i| (i, false)).collect::<Vec<_>>());
        let n = flushes.count.load(Ordering::Relaxed);
        assert!((1..=66).contains(&n), "{n} flushes");
        assert_eq!(rec.0.lock().expect("lock").len() as u64, n);
    }

    #[test]
    fn a_replaced_wal_is_reopened_before_its_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("j.db-wal");
        std::fs::write(&wal, b"abc").expect("write");
        let rec = Arc::new(Recorder::default());
        let syncer = spawn(&wal, &rec, &Arc::new(FlushStats::default()));
        let (tx, rx) = channel();
        let wait = Duration::from_secs(5);
        syncer.submit((1, tx.clone()), true);
        assert_eq!(rx.recv_timeout(wait), Ok((1, false)));
        std::fs::remove_file(&wal).expect("remove");
        std::fs::write(&wal, b"abcdef").expect("rewrite");
        syncer.submit((2, tx.clone()), true);
        assert_eq!(rx.recv_timeout(wait), Ok((2, false)));
        assert_eq!(*rec.0.lock().expect("lock"), vec![3, 6]);
    }

    #[test]
    fn a_failed_flush_fails_only_the_batches_that_needed_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("missing-wal");
        let rec = Arc::new(Recorder::default());
        let syncer = spawn(&wal, &rec, &Arc::new(FlushStats::default()));
        let (tx, rx) = channel();
        let wait = Duration::from_secs(5);
        syncer.submit((1, tx.clone()), true);
        assert_eq!(rx.recv_timeout(wait), Ok((1, true)));
        syncer.submit((2, tx.clone()), false);
        assert_eq!(rx.recv_timeout(wait), Ok((2, false)));
        assert!(rec.0.lock().expect("lock").is_empty());
    }
}
