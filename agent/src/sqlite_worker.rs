//! One SQLite worker: a dedicated OS thread that owns a database connection and carries
//! out the requests of async callers in batches (group commit). The journal
//! (`journal/writer.rs`) and the sessions database (`broker/sessions_db.rs`) each run one.
//!
//! # Invariants
//! - Requests go over a bounded tokio channel (`capacity`): callers wait when it is
//!   full, which is the back-pressure; nothing queues without bound.
//! - The thread blocks for the first request, then takes whatever else is already queued
//!   (up to `max_batch`) and hands the whole batch, in queue order, to its [`Batches`]:
//!   one transaction, one commit, and only then the replies (so a reply means
//!   "committed", and N concurrent callers share one fsync). How a batch commits, flushes
//!   and answers (and whether a failed flush poisons the database) is the database's own
//!   and stated in its module doc.
//! - Clean shutdown: the worker stops when [`Batches::run`] says so (a close request) or
//!   when every sender is gone. Then the channel is closed (requests still queued are
//!   dropped, so their callers see their reply channel closed), [`Batches::finish`] runs
//!   on the thread, and the connection is closed with it.
//! - Opening runs on the thread too; its outcome is the first thing the caller gets.

use std::ops::ControlFlow;
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// What a worker thread does with its requests.
pub(crate) trait Batches: 'static {
    /// One request.
    type Job: Send + 'static;

    /// A batch's first request arrived; the rest are taken after this returns.
    fn starting(&mut self) {}

    /// Carries out `jobs` (in queue order; the vector is to be emptied) as one batch.
    /// `drained`: whether the queue was empty when the batch was taken (the batch holds
    /// every request queued before it started). `Break` stops the worker.
    fn run(&mut self, jobs: &mut Vec<Self::Job>, drained: bool) -> ControlFlow<()>;

    /// The worker stops: the last work, on the thread; the connection closes when `self`
    /// is dropped at its end.
    fn finish(self);
}

/// A started worker: where to queue its jobs, and the answer of its `open`.
pub(crate) type Started<J, R> = (mpsc::Sender<J>, oneshot::Receiver<Result<R>>);

/// Starts a worker thread named `name`. `open` runs on it first; its `Ok` value is
/// handed to the caller through the returned receiver along with the thread's
/// [`Batches`] (which it keeps), its error ends the thread.
pub(crate) fn spawn<B, R>(
    name: &str,
    capacity: usize,
    max_batch: usize,
    open: impl FnOnce() -> Result<(B, R)> + Send + 'static,
) -> Result<Started<B::Job, R>>
where
    B: Batches,
    R: Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<B::Job>(capacity.max(1));
    let (ready_tx, ready_rx) = oneshot::channel();
    let max_batch = max_batch.max(1);
    let thread = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut batches = match open() {
                Ok((batches, ready)) => {
                    drop(ready_tx.send(Ok(ready)));
                    batches
                }
                Err(e) => {
                    drop(ready_tx.send(Err(e)));
                    return;
                }
            };
            tracing::debug!(thread = %thread, "sqlite worker running");
            let mut batch = Vec::with_capacity(max_batch);
            while let Some(first) = rx.blocking_recv() {
                batches.starting();
                batch.push(first);
                let mut drained = false;
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => {
                            drained = true;
                            break;
                        }
                    }
                }
                if batches.run(&mut batch, drained).is_break() {
                    break;
                }
            }
            rx.close();
            batches.finish();
            tracing::debug!(thread = %thread, "sqlite worker stopped");
        })
        .map_err(|source| Error::Io {
            path: PathBuf::from(format!("{name} thread")),
            source,
        })?;
    Ok((tx, ready_rx))
}
