//! The journal thread: a [`sqlite_worker`] that owns the SQLite connection and carries
//! out commands in batches. It blocks for the first command, then takes whatever else is
//! already queued (up to `max_batch`), runs all of them in one transaction and commits
//! once, then answers every caller. So N concurrent appends cost one fsync, and no reply
//! (in particular no `append` Ok) leaves before the commit that made it durable.
//!
//! With `synchronous = full` the replies of a committed batch go through the
//! [syncer](super::syncer), which flushes the WAL before they leave, while this thread
//! already runs the next batch.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::config::SyncMode;
use super::entry::{Cursor, Entry};
use super::env::JournalEnv;
use super::stats::Stats;
use super::store::{Record, Sql, Store, StoreOptions};
use super::syncer::{Changes, FlushStats, Syncer};
use crate::error::{Error, Result};
use crate::sqlite_worker::{self, Batches};

/// A request to the journal thread, with the channel for its answer.
#[derive(Debug)]
pub(crate) enum Command {
    /// Store one entry.
    Append(Record, oneshot::Sender<Result<u64>>),
    /// Several appends with one reply: each entry's own outcome, in order.
    AppendMany(Vec<Record>, oneshot::Sender<Result<Vec<Result<u64>>>>),
    /// Carry out another operation in the next batch.
    Run(Op),
    /// Stop after this batch; answered once the connection is closed.
    Close(oneshot::Sender<()>),
}

impl Command {
    /// Whether it only reads the journal's figures (stats, integrity check).
    fn is_figures(&self) -> bool {
        matches!(self, Command::Run(op) if op.is_figures())
    }
}

/// An operation other than an append, and the channel for its answer.
#[derive(Debug)]
pub(crate) enum Op {
    Confirm(Vec<u64>, oneshot::Sender<Result<u64>>),
    Sweep(oneshot::Sender<Result<u64>>),
    NextBatch(Cursor, usize, oneshot::Sender<Result<Vec<Entry>>>),
    Stats(oneshot::Sender<Result<Stats>>),
    IntegrityCheck(oneshot::Sender<Result<Vec<String>>>),
}

impl Op {
    /// Whether it only reads the journal's figures (stats, integrity check).
    fn is_figures(&self) -> bool {
        matches!(self, Op::Stats(_) | Op::IntegrityCheck(_))
    }
}

/// A caller waiting for the end of the batch, with its result.
enum Reply {
    Count(oneshot::Sender<Result<u64>>, Result<u64>),
    Many(oneshot::Sender<Result<Vec<Result<u64>>>>, Vec<Result<u64>>),
    Entries(oneshot::Sender<Result<Vec<Entry>>>, Vec<Entry>),
    Stats(oneshot::Sender<Result<Stats>>, Box<Stats>),
    Check(oneshot::Sender<Result<Vec<String>>>, Vec<String>),
}

impl Reply {
    fn send(self, failure: Option<&Error>) {
        // A caller that went away does not care about the answer.
        match (self, failure) {
            (Reply::Count(tx, r), None) => drop(tx.send(r)),
            (Reply::Many(tx, r), None) => drop(tx.send(Ok(r))),
            (Reply::Many(tx, _), Some(e)) => drop(tx.send(Err(e.duplicate()))),
            (Reply::Entries(tx, r), None) => drop(tx.send(Ok(r))),
            (Reply::Stats(tx, r), None) => drop(tx.send(Ok(*r))),
            (Reply::Check(tx, r), None) => drop(tx.send(Ok(r))),
            (Reply::Count(tx, _), Some(e)) => drop(tx.send(Err(e.duplicate()))),
            (Reply::Entries(tx, _), Some(e)) => drop(tx.send(Err(e.duplicate()))),
            (Reply::Stats(tx, _), Some(e)) => drop(tx.send(Err(e.duplicate()))),
            (Reply::Check(tx, _), Some(e)) => drop(tx.send(Err(e.duplicate()))),
        }
    }
}

/// Wraps the outcome of one operation; on an SQLite failure answers the caller with the
/// batch error at once (its sender is consumed here) and returns that error.
fn finish<T, R>(
    store: &Store,
    tx: oneshot::Sender<Result<T>>,
    result: Sql<R>,
    wrap: impl FnOnce(oneshot::Sender<Result<T>>, R) -> Reply,
) -> Result<Reply> {
    match result {
        Ok(r) => Ok(wrap(tx, r)),
        Err(e) => {
            let err = store.fail(e);
            let _ = tx.send(Err(err.duplicate()));
            Err(err)
        }
    }
}

/// Carries out one operation inside the open transaction. An `Err` fails the batch.
fn execute(store: &mut Store, op: Op) -> Result<Reply> {
    match op {
        Op::Confirm(seqs, tx) => {
            let r = store.confirm(&seqs);
            finish(store, tx, r, Reply::Count)
        }
        Op::Sweep(tx) => {
            let r = store.sweep_expired();
            finish(store, tx, r, Reply::Count)
        }
        Op::NextBatch(cursor, limit, tx) => {
            let r = store.next_batch(cursor, limit);
            finish(store, tx, r, Reply::Entries)
        }
        Op::Stats(tx) => {
            let r = store.stats().map(Box::new);
            finish(store, tx, r, Reply::Stats)
        }
        Op::IntegrityCheck(tx) => {
            let r = store.integrity_check();
            finish(store, tx, r, Reply::Check)
        }
    }
}

/// `Store::append_many` answers every record; this stands for an answer it did not give.
fn missing_outcome() -> Result<u64> {
    Err(Error::InvalidEntry(
        "the journal gave no outcome for this entry".to_owned(),
    ))
}

/// The caller of one append command gathered into an [`Appends`] run.
enum Waiter {
    One(oneshot::Sender<Result<u64>>),
    Many(oneshot::Sender<Result<Vec<Result<u64>>>>, usize),
}

/// Consecutive append commands of a batch (from every connection), stored by one
/// `append_many` so that their rows share multi-row INSERTs; same order, same outcomes
/// as one command at a time.
#[derive(Default)]
struct Appends {
    records: Vec<Record>,
    waiters: Vec<Waiter>,
}

impl Appends {
    fn push(&mut self, rec: Record, tx: oneshot::Sender<Result<u64>>) {
        self.records.push(rec);
        self.waiters.push(Waiter::One(tx));
    }

    fn push_many(&mut self, recs: Vec<Record>, tx: oneshot::Sender<Result<Vec<Result<u64>>>>) {
        self.waiters.push(Waiter::Many(tx, recs.len()));
        self.records.extend(recs);
    }

    /// Stores the run; its replies, or the error that fails the batch (its callers are
    /// answered with it at once).
    fn store(&mut self, store: &mut Store, replies: &mut Vec<Reply>) -> Result<()> {
        if self.waiters.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.records);
        let waiters = std::mem::take(&mut self.waiters);
        match store.append_many(records) {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for w in waiters {
                    replies.push(match w {
                        Waiter::One(tx) => {
                            let r = outcomes.next().unwrap_or_else(missing_outcome);
                            Reply::Count(tx, r)
                        }
                        Waiter::Many(tx, n) => Reply::Many(tx, outcomes.by_ref().take(n).collect()),
                    });
                }
                Ok(())
            }
            Err(e) => {
                let err = store.fail(e);
                for w in waiters {
                    match w {
                        Waiter::One(tx) => drop(tx.send(Err(err.duplicate()))),
                        Waiter::Many(tx, _) => drop(tx.send(Err(err.duplicate()))),
                    }
                }
                Err(err)
            }
        }
    }
}

/// Fails a command that could not be carried out because its batch failed.
fn fail(cmd: Command, e: &Error) {
    match cmd {
        Command::Append(_, tx) => drop(tx.send(Err(e.duplicate()))),
        Command::AppendMany(_, tx) => drop(tx.send(Err(e.duplicate()))),
        Command::Run(op) => fail_op(op, e),
        // Not reached: a close is taken before failures are looked at.
        Command::Close(_) => {}
    }
}

/// Fails an operation that could not be carried out because its batch failed.
fn fail_op(op: Op, e: &Error) {
    match op {
        Op::Confirm(_, tx) | Op::Sweep(tx) => drop(tx.send(Err(e.duplicate()))),
        Op::NextBatch(_, _, tx) => drop(tx.send(Err(e.duplicate()))),
        Op::Stats(tx) => drop(tx.send(Err(e.duplicate()))),
        Op::IntegrityCheck(tx) => drop(tx.send(Err(e.duplicate()))),
    }
}

/// The replies of one batch, and the error that failed it (if it did).
pub(crate) struct Answers {
    replies: Vec<Reply>,
    failure: Option<Error>,
}

impl Answers {
    /// Answers every caller: with the batch's failure, else with the flush's, else with
    /// its result.
    fn send(self, flush: Option<&Error>) {
        let failure = self.failure.as_ref().or(flush);
        for reply in self.replies {
            reply.send(failure);
        }
    }
}

/// Where the replies of a finished batch go.
pub(crate) enum Outbox {
    /// Straight to the callers (`synchronous` below `full`: the commit is as durable as
    /// it gets; and read-only handles).
    Direct,
    /// Through the syncer, which flushes the WAL first.
    Flushed(Syncer<Answers>),
}

impl Outbox {
    /// Once a WAL flush failed: the error every command that writes or reads entries
    /// gets from then on (see the syncer's module doc).
    fn refusal(&self) -> Option<Error> {
        match self {
            Outbox::Direct => None,
            Outbox::Flushed(syncer) => syncer.failure().map(|e| {
                Error::Internal(format!(
                    "the journal refuses work after a failed WAL flush (restart the agent): {e}"
                ))
            }),
        }
    }

    /// Hands over the answers of a batch, which made `changes`.
    fn post(&self, answers: Answers, changes: Changes) {
        match self {
            Outbox::Direct => answers.send(None),
            Outbox::Flushed(syncer) => {
                let changes = if answers.failure.is_none() {
                    changes
                } else {
                    Changes::Volatile
                };
                syncer.submit(answers, changes);
            }
        }
    }
}

/// Runs one batch in one transaction; returns the close request if there was one.
/// Commands queued behind a close are dropped, so their callers see `Error::Closed`.
pub(crate) fn run_batch(
    store: &mut Store,
    batch: &mut Vec<Command>,
    outbox: &Outbox,
) -> Option<oneshot::Sender<()>> {
    let started = std::time::Instant::now();
    let refusal = outbox.refusal();
    let mut close = None;
    let mut replies = Vec::with_capacity(batch.len());
    let mut failure = store.begin().err().map(|e| store.fail(e));
    let mut appends = 0;
    let mut confirms = false;
    let mut figures_only = true;
    let mut commands = 0;
    let mut run = Appends::default();
    for cmd in batch.drain(..) {
        if close.is_some() {
            continue;
        }
        let op = match (cmd, &failure) {
            (Command::Close(tx), _) => {
                close = Some(tx);
                continue;
            }
            (cmd, Some(e)) => {
                fail(cmd, e);
                continue;
            }
            // After a failed flush only the figures are served: nothing is stored, and no
            // entry that might not be on disk is handed out or confirmed.
            (cmd, None) if refusal.is_some() && !cmd.is_figures() => {
                if let Some(e) = &refusal {
                    fail(cmd, e);
                }
                continue;
            }
            (Command::Append(rec, tx), None) => {
                commands += 1;
                figures_only = false;
                appends += 1;
                run.push(rec, tx);
                continue;
            }
            (Command::AppendMany(recs, tx), None) => {
                commands += 1;
                figures_only = false;
                appends += recs.len() as u64;
                run.push_many(recs, tx);
                continue;
            }
            (Command::Run(op), None) => {
                commands += 1;
                confirms |= matches!(op, Op::Confirm(..));
                figures_only &= op.is_figures();
                op
            }
        };
        // The appends before this operation are stored first: the order is kept.
        if let Err(e) = run.store(store, &mut replies) {
            fail_op(op, &e);
            failure = Some(e);
            continue;
        }
        match execute(store, op) {
            Ok(reply) => replies.push(reply),
            Err(e) => failure = Some(e),
        }
    }
    if failure.is_none()
        && let Err(e) = run.store(store, &mut replies)
    {
        failure = Some(e);
    }
    if failure.is_none()
        && let Err(e) = store.commit()
    {
        failure = Some(store.fail(e));
    }
    match &failure {
        Some(e) => {
            tracing::warn!(error = %e, commands, "journal batch rolled back");
            store.rollback();
        }
        None => {
            let w = &mut store.writer;
            w.batches += 1;
            w.commands += commands;
            w.appends += appends;
            w.max_batch = w.max_batch.max(commands);
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            w.batch_micros = w.batch_micros.saturating_add(micros);
        }
    }
    let changes = if appends > 0 {
        Changes::Entries
    } else if confirms {
        Changes::Deletions
    } else if figures_only {
        Changes::Figures
    } else {
        Changes::Volatile
    };
    outbox.post(Answers { replies, failure }, changes);
    close
}

/// Opens the store and, for `synchronous = full`, starts the syncer: the connection then
/// runs SQLite's NORMAL and the syncer flushes the WAL before replies leave.
fn open(path: &std::path::Path, opts: StoreOptions, env: JournalEnv) -> Result<(Store, Outbox)> {
    let flushed = !opts.read_only && opts.synchronous == SyncMode::Full;
    let sqlite_sync = if flushed {
        SyncMode::Normal
    } else {
        opts.synchronous
    };
    let wal_sync = env.wal_sync.clone();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let flushes = Arc::new(FlushStats::default());
    // The flushers open the WAL as soon as the file is open, before anything is written.
    let start = |dir: &std::path::Path| {
        if !flushed {
            return Ok(None);
        }
        Syncer::spawn(
            PathBuf::from(wal),
            dir,
            wal_sync,
            flushes.clone(),
            Answers::send,
            super::syncer::FLUSHERS,
        )
        .map(Some)
    };
    let (mut store, syncer) = Store::open_with(path, opts, env, sqlite_sync, start)?;
    match syncer {
        Some(syncer) => {
            store.writer_flushes = Some(flushes);
            Ok((store, Outbox::Flushed(syncer)))
        }
        None => Ok((store, Outbox::Direct)),
    }
}

/// The journal's side of its [`sqlite_worker`] thread: the store and where replies go.
struct JournalThread {
    store: Store,
    outbox: Outbox,
    /// The close request that stopped the thread, answered once the file is closed.
    close: Option<oneshot::Sender<()>>,
}

impl Batches for JournalThread {
    type Job = Command;

    fn run(&mut self, jobs: &mut Vec<Command>, _drained: bool) -> ControlFlow<()> {
        self.close = run_batch(&mut self.store, jobs, &self.outbox);
        if self.close.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn finish(self) {
        let JournalThread {
            store,
            outbox,
            close,
        } = self;
        // Every reply leaves (flushed) before the connection closes.
        drop(outbox);
        drop(store);
        if let Some(tx) = close {
            let _ = tx.send(());
        }
    }
}

/// Starts the journal thread; the returned receiver yields the outcome of opening
/// (whether the journal is read-only).
pub(crate) fn spawn(
    path: PathBuf,
    opts: StoreOptions,
    env: JournalEnv,
    queue_capacity: usize,
    max_batch: usize,
) -> Result<(mpsc::Sender<Command>, oneshot::Receiver<Result<bool>>)> {
    sqlite_worker::spawn("journal", queue_capacity, max_batch, move || {
        let (store, outbox) = open(&path, opts, env)?;
        let read_only = store.read_only();
        Ok((
            JournalThread {
                store,
                outbox,
                close: None,
            },
            read_only,
        ))
    })
}
