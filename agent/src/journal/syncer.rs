//! The WAL syncer: makes committed batches durable off the journal thread
//! (`synchronous = full`).
//!
//! The journal's connection then runs SQLite's `synchronous = NORMAL`: a commit writes its
//! WAL frames but does not wait for them to reach the disk. The journal thread hands each
//! committed batch's replies to the syncer and goes on with the next batch. A flusher
//! thread `fdatasync`s the `-wal` file; the replies of a batch that appended or deleted
//! entries leave once a flush that started after its commit has completed (those of
//! other batches once the earlier appends' flush has; see [`Changes`]). So the promise is that of SQLite's FULL (an
//! acknowledged message is in a flushed WAL frame), but the journal thread inserts the
//! next batch while the disk flushes, and one flush covers every batch committed before
//! it started. ([`FLUSHERS`] says why there is one flusher; the syncer can run more.)
//!
//! Why this is as durable as FULL, for appends:
//! - WAL recovery keeps every frame up to the last valid commit frame (frames carry a
//!   checksum chained from the WAL header), and `fdatasync` returns once every byte
//!   written to the file before it was called is durable, including pages another
//!   flusher's flush is writing (it waits for them). So a batch whose commit returned
//!   before a flush started survives a power cut once that flush returns.
//! - SQLite at NORMAL still flushes the WAL before every checkpoint, the database after
//!   it, and the new WAL header when the WAL restarts; checkpoints are not changed.
//! - Each flusher opens the `-wal` file itself when the journal is opened, before this
//!   process writes or syncs anything in it beyond creating a new file, and reopens it (with a flush of its
//!   directory) if SQLite ever replaced it; the check is one `stat` per flush. Linux
//!   reports a write-back error to the next flush of every descriptor open when it
//!   happened, so a flusher sees an error even if SQLite's own checkpoint consumed it
//!   on its descriptor first.
//! - A failed flush poisons the syncer: after a failed `fdatasync` the kernel may have
//!   dropped the unwritten pages (marked clean, still in the page cache), so no later
//!   flush proves anything about earlier commits. Every append not yet answered fails,
//!   and from then on the journal stores nothing, hands out no entry and takes no
//!   confirm (the writer checks [`Syncer::failure`]); only its figures are served, so
//!   health checks can say why. Restarting the agent recovers: opening checkpoints the
//!   whole WAL into the main file, checked and synced, before anything is appended.
//! - No reply (a read included) leaves before the appends committed before it are
//!   flushed, so none reveals an entry that a power cut could still take back.
//! - Confirms (deletions) are flushed before they are answered too: the uplink holds an
//!   entry's window slot until then, so a power cut sends again at most a window of
//!   entries the bridge already has. Later batches do not wait for a confirm's flush: a
//!   read that shows an entry gone a little early costs, at worst, one more delivery.
//!   Sweeps are not flushed for (a lost one is swept again).
//!
//! Written by hand: it is a small ticket queue under a mutex, and no crate does this for
//! SQLite.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::env::WalSync;
use crate::error::{Error, Result};

/// Committed batches waiting for their flush; the journal thread waits when it is full.
const QUEUE: usize = 64;
/// Flusher threads the journal runs. A second one lets a commit start its flush while
/// another is under way; measured here it gained nothing (2 × 3 rounds of the ingest
/// bench, within the noise), as the disk carries out cache flushes one at a time. The
/// syncer supports more for disks that do not.
pub(crate) const FLUSHERS: usize = 1;

/// Flushes done, the time they took, and whether one failed (read into the journal's
/// stats).
#[derive(Debug, Default)]
pub(crate) struct FlushStats {
    pub count: AtomicU64,
    pub micros: AtomicU64,
    pub failed: AtomicBool,
}

/// Answers a batch once it may leave: its payload and the flush failure, if any.
pub(crate) type Deliver<T> = fn(T, Option<&Error>);

/// What a committed batch changed, which decides when it may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Changes {
    /// Nothing that must survive a power cut (reads, sweeps): answered once the entries
    /// appended before it are flushed.
    Volatile,
    /// Only the journal's figures (stats, integrity check): like `Volatile`, but also
    /// answered after a failed flush (they hand out no entry), so health checks say why.
    Figures,
    /// Deletions (confirms): answered once flushed; later batches do not wait for it.
    Deletions,
    /// New entries: answered once flushed, and every later batch waits for that flush.
    Entries,
}

/// A committed batch: its ticket (commit order), payload, whether it must be flushed,
/// and the ticket a completed flush must cover before it is answered.
struct Job<T> {
    ticket: u64,
    payload: T,
    durable: bool,
    needs: u64,
    figures: bool,
}

/// What the journal thread and the flushers share, under one mutex.
struct State<T> {
    /// Submitted, not yet answered, in commit order.
    queue: VecDeque<Job<T>>,
    /// The last ticket handed out.
    last: u64,
    /// The last ticket of a batch that must be flushed.
    durable_last: u64,
    /// The last ticket of a batch of new entries (every later batch waits for it).
    entries_last: u64,
    /// Everything up to this ticket is covered by a flush that has started.
    flush_started: u64,
    /// Everything up to this ticket is covered by a flush that has completed.
    flushed: u64,
    /// The first flush failure; once set, appends fail (see the module doc).
    poison: Option<Error>,
    closed: bool,
}

impl<T> State<T> {
    /// Takes the batches that may be answered now (in commit order among themselves).
    fn ready(&mut self) -> Vec<(T, Option<Error>)> {
        let mut out = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for job in self.queue.drain(..) {
            let failure = match (&self.poison, job.durable) {
                (_, false) if job.needs <= self.flushed => None,
                // After a failure nothing more is proven: a batch whose own changes, or
                // the appends before it, were not flushed fails (a read would hand out
                // an entry that may be gone).
                (Some(e), true) if job.ticket > self.flushed => Some(e.duplicate()),
                (Some(e), false) if job.needs > self.flushed && !job.figures => Some(e.duplicate()),
                (Some(_), _) => None,
                (None, _) if job.needs <= self.flushed => None,
                (None, _) => {
                    kept.push_back(job);
                    continue;
                }
            };
            out.push((job.payload, failure));
        }
        self.queue = kept;
        out
    }

    /// Whether a durable batch is not covered by any started flush (after a failure
    /// there is nothing left to prove).
    fn needs_flush(&self) -> bool {
        self.poison.is_none() && self.durable_last > self.flush_started
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when there is something to flush, or at close.
    work: Condvar,
    /// Signalled when the queue has room.
    room: Condvar,
    deliver: Deliver<T>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the queue half-updated: every
        // update is a few plain assignments. Go on with the state as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn answer(&self, ready: Vec<(T, Option<Error>)>) {
        for (payload, failure) in ready {
            (self.deliver)(payload, failure.as_ref());
        }
    }
}

/// The handle of the syncer; dropping it flushes and answers what is queued.
pub(crate) struct Syncer<T> {
    shared: Arc<Shared<T>>,
    threads: Vec<JoinHandle<()>>,
}

/// One flusher's `-wal` file, opened on its first flush.
struct Wal {
    path: PathBuf,
    dir: PathBuf,
    sync: Arc<dyn WalSync>,
    /// The open file and its (device, inode).
    open: Option<(File, (u64, u64))>,
}

fn wal_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// (device, inode) of the file at `path`.
fn identity(path: &Path) -> Result<(u64, u64)> {
    std::fs::metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| wal_error(path, e))
}

/// Opens the WAL at `path`, and flushes its directory (SQLite created the file: its
/// directory entry must be durable too).
fn open_wal(path: &Path, dir: &Path) -> Result<(File, (u64, u64))> {
    let file = File::open(path).map_err(|e| wal_error(path, e))?;
    let id = file
        .metadata()
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| wal_error(path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| wal_error(dir, e))?;
    Ok((file, id))
}

impl Wal {
    /// A flusher's WAL, opened now if SQLite has created it (else at the first flush).
    fn new(path: PathBuf, dir: PathBuf, sync: Arc<dyn WalSync>) -> Result<Wal> {
        let open = match open_wal(&path, &dir) {
            Ok(open) => Some(open),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Wal {
            path,
            dir,
            sync,
            open,
        })
    }

    /// Flushes the WAL, opening it first if needed (or if SQLite replaced it).
    fn flush(&mut self) -> Result<()> {
        let id = identity(&self.path)?;
        if !matches!(&self.open, Some((_, open)) if *open == id) {
            self.open = None;
        }
        let file = match &mut self.open {
            Some((file, _)) => &*file,
            slot @ None => &slot.insert(open_wal(&self.path, &self.dir)?).0,
        };
        self.sync.sync(file).map_err(|e| wal_error(&self.path, e))
    }
}

impl<T: Send + 'static> Syncer<T> {
    /// Starts `flushers` threads that flush `wal` (in `dir`); `deliver` answers each
    /// batch, and `flushes` counts the flushes and their time.
    pub(crate) fn spawn(
        wal: PathBuf,
        dir: &Path,
        sync: Arc<dyn WalSync>,
        flushes: Arc<FlushStats>,
        deliver: Deliver<T>,
        flushers: usize,
    ) -> Result<Syncer<T>> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(QUEUE),
                last: 0,
                durable_last: 0,
                entries_last: 0,
                flush_started: 0,
                flushed: 0,
                poison: None,
                closed: false,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
            deliver,
        });
        let mut syncer = Syncer {
            shared: shared.clone(),
            threads: Vec::with_capacity(flushers),
        };
        for i in 0..flushers.max(1) {
            // Each flusher's descriptor is open from here on (see the module doc).
            let wal = Wal::new(wal.clone(), dir.to_path_buf(), sync.clone())?;
            let shared = shared.clone();
            let flushes = flushes.clone();
            let thread = std::thread::Builder::new()
                .name(format!("journal-sync-{i}"))
                .spawn(move || run(wal, &shared, &flushes))
                .map_err(|source| Error::Io {
                    path: PathBuf::from("journal-sync thread"),
                    source,
                })?;
            // On an error above, dropping `syncer` stops the threads already started.
            syncer.threads.push(thread);
        }
        Ok(syncer)
    }

    /// Queues a committed batch (see [`Changes`] for when it is answered); waits while the
    /// queue is full. After close the batch is answered with [`Error::Closed`].
    pub(crate) fn submit(&self, payload: T, changes: Changes) {
        let durable = matches!(changes, Changes::Deletions | Changes::Entries);
        let mut st = self.shared.lock();
        while st.queue.len() >= QUEUE && !st.closed {
            st = self.shared.room.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.closed {
            drop(st);
            (self.shared.deliver)(payload, Some(&Error::Closed));
            return;
        }
        st.last += 1;
        let ticket = st.last;
        if durable {
            st.durable_last = ticket;
        }
        let needs = if durable { ticket } else { st.entries_last };
        if changes == Changes::Entries {
            st.entries_last = ticket;
        }
        st.queue.push_back(Job {
            ticket,
            payload,
            durable,
            needs,
            figures: changes == Changes::Figures,
        });
        // A read behind no unflushed append leaves at once.
        let ready = st.ready();
        drop(st);
        if durable {
            self.shared.work.notify_one();
        }
        self.shared.answer(ready);
    }
}

impl<T> Syncer<T> {
    /// The flush failure that poisoned the syncer, if one did.
    pub(crate) fn failure(&self) -> Option<Error> {
        self.shared.lock().poison.as_ref().map(Error::duplicate)
    }
}

impl<T> Drop for Syncer<T> {
    /// Lets the flushers flush what was submitted, stops them, and answers the rest.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        self.shared.room.notify_all();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("journal-sync thread panicked");
            }
        }
        let mut st = self.shared.lock();
        let mut left = st.ready();
        left.extend(
            st.queue
                .drain(..)
                .map(|job| (job.payload, Some(Error::Closed))),
        );
        drop(st);
        self.shared.answer(left);
    }
}

/// A flusher: waits for a batch no flush covers yet, flushes everything submitted so far,
/// then answers what that made ready.
fn run<T>(mut wal: Wal, shared: &Shared<T>, flushes: &FlushStats) {
    let mut st = shared.lock();
    loop {
        if !st.needs_flush() {
            if st.closed {
                return;
            }
            st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        let target = st.last;
        st.flush_started = target;
        drop(st);
        let started = Instant::now();
        let result = wal.flush();
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        flushes.count.fetch_add(1, Ordering::Relaxed);
        flushes.micros.fetch_add(micros, Ordering::Relaxed);
        st = shared.lock();
        match result {
            Ok(()) => st.flushed = st.flushed.max(target),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "journal WAL flush failed: appends fail from now on; restart the agent \
                     to recover the journal from what is on disk"
                );
                flushes.failed.store(true, Ordering::Relaxed);
                st.poison.get_or_insert(e);
            }
        }
        let ready = st.ready();
        drop(st);
        shared.room.notify_all();
        shared.answer(ready);
        st = shared.lock();
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

    fn spawn(
        wal: &Path,
        sync: Arc<dyn WalSync>,
        flushes: &Arc<FlushStats>,
        flushers: usize,
    ) -> Syncer<Out> {
        let dir = wal.parent().expect("dir");
        Syncer::spawn(
            wal.to_path_buf(),
            dir,
            sync,
            flushes.clone(),
            deliver,
            flushers,
        )
        .expect("spawn")
    }

    type Fixture = (
        tempfile::TempDir,
        Syncer<Out>,
        std::sync::mpsc::Sender<(u32, bool)>,
        std::sync::mpsc::Receiver<(u32, bool)>,
    );

    /// A syncer with the journal's flushers on a fresh WAL file, a sender to submit
    /// with, and where the answers go.
    fn fixture(sync: Arc<dyn WalSync>) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("j.db-wal");
        std::fs::write(&wal, b"abc").expect("write");
        let syncer = spawn(&wal, sync, &Arc::new(FlushStats::default()), FLUSHERS);
        let (tx, rx) = channel();
        (dir, syncer, tx, rx)
    }

    #[test]
    fn batches_are_answered_in_order_after_a_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("j.db-wal");
        std::fs::write(&wal, b"abc").expect("write");
        let rec = Arc::new(Recorder::default());
        let flushes = Arc::new(FlushStats::default());
        let syncer = spawn(&wal, rec.clone(), &flushes, FLUSHERS);
        let (tx, rx) = channel();
        for i in 0..100 {
            let changes = if i % 3 == 0 {
                Changes::Volatile
            } else {
                Changes::Entries
            };
            syncer.submit((i, tx.clone()), changes);
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
        let syncer = spawn(
            &wal,
            rec.clone(),
            &Arc::new(FlushStats::default()),
            FLUSHERS,
        );
        let (tx, rx) = channel();
        let wait = Duration::from_secs(5);
        syncer.submit((1, tx.clone()), Changes::Entries);
        assert_eq!(rx.recv_timeout(wait), Ok((1, false)));
        std::fs::remove_file(&wal).expect("remove");
        std::fs::write(&wal, b"abcdef").expect("rewrite");
        syncer.submit((2, tx.clone()), Changes::Entries);
        assert_eq!(rx.recv_timeout(wait), Ok((2, false)));
        assert_eq!(*rec.0.lock().expect("lock"), vec![3, 6]);
    }

    #[test]
    fn a_failed_flush_fails_every_later_append_and_reads_behind_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("j.db-wal");
        let rec = Arc::new(Recorder::default());
        let syncer = spawn(
            &wal,
            rec.clone(),
            &Arc::new(FlushStats::default()),
            FLUSHERS,
        );
        let (tx, rx) = channel();
        let wait = Duration::from_secs(5);
        // No WAL file: the flush fails.
        syncer.submit((1, tx.clone()), Changes::Entries);
        assert_eq!(rx.recv_timeout(wait), Ok((1, true)));
        syncer.submit((2, tx.clone()), Changes::Volatile);
        assert_eq!(rx.recv_timeout(wait), Ok((2, true)));
        // The file is there now, but nothing proves what became of the earlier pages.
        std::fs::write(&wal, b"abc").expect("write");
        syncer.submit((3, tx.clone()), Changes::Entries);
        assert_eq!(rx.recv_timeout(wait), Ok((3, true)));
        assert!(rec.0.lock().expect("lock").is_empty());
    }

    /// A flush that waits until the test lets it go.
    #[derive(Debug, Default)]
    struct Held {
        state: Mutex<(u64, bool)>,
        changed: std::sync::Condvar,
    }

    impl WalSync for Held {
        fn sync(&self, _wal: &File) -> io::Result<()> {
            let mut st = self
                .state
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?;
            st.0 += 1;
            self.changed.notify_all();
            let (_st, _) = self
                .changed
                .wait_timeout_while(st, Duration::from_secs(20), |st| !st.1)
                .map_err(|_| io::Error::other("poisoned"))?;
            Ok(())
        }
    }

    impl Held {
        /// Waits (bounded) until `n` flushes have started.
        fn started(&self, n: u64) -> u64 {
            let st = self.state.lock().expect("lock");
            let (st, _) = self
                .changed
                .wait_timeout_while(st, Duration::from_secs(5), |st| st.0 < n)
                .expect("lock");
            st.0
        }

        fn release(&self) {
            self.state.lock().expect("lock").1 = true;
            self.changed.notify_all();
        }
    }

    #[test]
    fn with_two_flushers_a_commit_during_a_flush_starts_its_own_flush_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("j.db-wal");
        std::fs::write(&wal, b"abc").expect("write");
        let held = Arc::new(Held::default());
        let syncer = spawn(&wal, held.clone(), &Arc::new(FlushStats::default()), 2);
        let (tx, rx) = channel();
        syncer.submit((1, tx.clone()), Changes::Entries);
        assert_eq!(held.started(1), 1);
        // The first flush is held; the next commit does not wait for it to end.
        syncer.submit((2, tx.clone()), Changes::Entries);
        assert_eq!(held.started(2), 2);
        // A read behind them waits for them (commit order).
        syncer.submit((3, tx.clone()), Changes::Volatile);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        held.release();
        let wait = Duration::from_secs(5);
        let got: Vec<_> = (0..3).filter_map(|_| rx.recv_timeout(wait).ok()).collect();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![(1, false), (2, false), (3, false)]);
        drop(syncer);
    }

    #[test]
    fn a_deletion_waits_for_its_flush_but_later_reads_do_not_wait_for_it() {
        let held = Arc::new(Held::default());
        let (_dir, syncer, tx, rx) = fixture(held.clone());
        let wait = Duration::from_secs(5);
        syncer.submit((1, tx.clone()), Changes::Deletions);
        assert_eq!(held.started(1), 1);
        // The deletion's flush is held: a read committed after it leaves at once...
        syncer.submit((2, tx.clone()), Changes::Volatile);
        assert_eq!(rx.recv_timeout(wait), Ok((2, false)));
        assert!(
            rx.try_recv().is_err(),
            "a deletion answered before its flush"
        );
        // ...but not one committed after new entries, which wait for their own flush.
        syncer.submit((3, tx.clone()), Changes::Entries);
        syncer.submit((4, tx.clone()), Changes::Volatile);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        held.release();
        let got: Vec<_> = (0..3).filter_map(|_| rx.recv_timeout(wait).ok()).collect();
        assert_eq!(got, vec![(1, false), (3, false), (4, false)]);
        drop(syncer);
    }

    /// A flush that waits until the test lets it go, then fails.
    #[derive(Debug, Default)]
    struct HeldThenFails(Held);

    impl WalSync for HeldThenFails {
        fn sync(&self, wal: &File) -> io::Result<()> {
            self.0.sync(wal)?;
            Err(io::Error::other("injected EIO"))
        }
    }

    #[test]
    fn a_read_behind_an_append_whose_flush_fails_fails_too() {
        let held = Arc::new(HeldThenFails::default());
        let (_dir, syncer, tx, rx) = fixture(held.clone());
        let wait = Duration::from_secs(5);
        syncer.submit((1, tx.clone()), Changes::Entries);
        assert_eq!(held.0.started(1), 1);
        syncer.submit((2, tx.clone()), Changes::Volatile);
        held.0.release();
        let got: Vec<_> = (0..2).filter_map(|_| rx.recv_timeout(wait).ok()).collect();
        assert_eq!(got, vec![(1, true), (2, true)]);
        drop(syncer);
    }
}
