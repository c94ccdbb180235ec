//! Reads the journal for one connection of the uplink and hands entries, in sending
//! order, to the link through a bounded channel (so at most `capacity` entries are in
//! memory, however large the backlog). It starts at the beginning of the journal: what
//! a previous connection sent but did not get acknowledged is sent again. New entries
//! wake it through [`Journal::committed_seq`] (and a one-second poll, for appends made
//! by other processes). The optional rate cap uses `governor`'s token bucket. Each
//! journal read is timed in [`UplinkStatus::journal_read`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{mpsc, watch};

use super::config::DrainPolicy;
use super::status::UplinkStatus;
use crate::error::Error;
use crate::journal::{Cursor, Entry, Journal, ReadOrder};

/// Entries read per journal call while live traffic or a FIFO backlog flows.
const READ_BATCH: usize = 512;
/// Backlog entries read per call under `live-first` (small, so live traffic waits little).
const BACKLOG_BATCH: usize = 64;
/// Entries handed on ahead of the link under `live-first`: a live entry waits behind at
/// most these (and the window in flight), instead of a whole window of backlog.
const LIVE_FIRST_READ_AHEAD: usize = 16;
/// Poll interval when idle (appends from other processes do not wake the watch).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Starts a feeder task; it ends when the receiver is dropped or the journal closes.
pub(crate) fn spawn(
    journal: Journal,
    policy: DrainPolicy,
    max_rate: u32,
    capacity: usize,
    status: Arc<UplinkStatus>,
) -> (mpsc::Receiver<Entry>, tokio::task::JoinHandle<()>) {
    let capacity = match policy {
        DrainPolicy::Fifo => capacity,
        DrainPolicy::LiveFirst => capacity.min(LIVE_FIRST_READ_AHEAD),
    };
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let limiter = NonZeroU32::new(max_rate).map(|r| RateLimiter::direct(Quota::per_second(r)));
    let task = tokio::spawn(async move {
        let mut feeder = Feeder {
            commits: journal.committed_seq(),
            journal,
            tx,
            limiter,
            status,
        };
        let result = match policy {
            DrainPolicy::Fifo => feeder.fifo().await,
            DrainPolicy::LiveFirst => feeder.live_first().await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "uplink: journal reader stopped");
        }
    });
    (rx, task)
}

struct Feeder {
    journal: Journal,
    commits: watch::Receiver<u64>,
    tx: mpsc::Sender<Entry>,
    limiter: Option<DefaultDirectRateLimiter>,
    status: Arc<UplinkStatus>,
}

/// Why the feeder stopped: the link went away (normal) or the journal failed.
enum Stop {
    LinkGone,
    Journal(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Journal(e)
    }
}

impl Feeder {
    async fn fifo(&mut self) -> Result<(), Error> {
        let mut cursor = Cursor::start(ReadOrder::Fifo);
        loop {
            match self.step(&mut cursor, READ_BATCH, u64::MAX).await {
                Ok(true) => {}
                Ok(false) => {
                    if !self.idle().await {
                        return Ok(());
                    }
                }
                Err(Stop::LinkGone) => return Ok(()),
                Err(Stop::Journal(e)) => return Err(e),
            }
        }
    }

    async fn live_first(&mut self) -> Result<(), Error> {
        // Everything up to `boundary` is backlog; what is appended after it is live.
        let boundary = self.journal.stats().await?.last_seq;
        let mut live = Cursor::fifo_after(boundary);
        let mut backlog = Cursor::start(ReadOrder::Fifo);
        let mut backlog_left = boundary > 0;
        loop {
            let sent = match self.step(&mut live, READ_BATCH, u64::MAX).await {
                Ok(true) => true,
                Ok(false) if backlog_left => {
                    match self.step(&mut backlog, BACKLOG_BATCH, boundary).await {
                        Ok(more) => {
                            backlog_left = more;
                            more
                        }
                        Err(Stop::LinkGone) => return Ok(()),
                        Err(Stop::Journal(e)) => return Err(e),
                    }
                }
                Ok(false) => false,
                Err(Stop::LinkGone) => return Ok(()),
                Err(Stop::Journal(e)) => return Err(e),
            };
            if !sent && !self.idle().await {
                return Ok(());
            }
        }
    }

    /// Reads up to `limit` entries after `cursor` (none beyond `until`) and hands them
    /// on. Ok(false): nothing (more) to read.
    async fn step(&mut self, cursor: &mut Cursor, limit: usize, until: u64) -> Result<bool, Stop> {
        self.commits.borrow_and_update();
        let started = Instant::now();
        let batch = self.journal.next_batch(*cursor, limit).await?;
        self.status.journal_read.observe(started.elapsed());
        UplinkStatus::add(&self.status.journal_read_entries, batch.len() as u64);
        cursor.advance_past(&batch);
        let mut any = false;
        for entry in batch.into_iter().take_while(|e| e.seq <= until) {
            if let Some(l) = &self.limiter {
                l.until_ready().await;
            }
            self.tx.send(entry).await.map_err(|_| Stop::LinkGone)?;
            any = true;
        }
        Ok(any)
    }

    /// Waits for a new commit (or the idle poll). False: the link is gone.
    async fn idle(&mut self) -> bool {
        tokio::select! {
            _ = self.tx.closed() => false,
            changed = self.commits.changed() => {
                if changed.is_err() {
                    // The journal is closing: no more wake-ups, poll until the link ends.
                    tokio::time::sleep(IDLE_POLL).await;
                }
                true
            }
            _ = tokio::time::sleep(IDLE_POLL) => true,
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::journal::{JournalConfig, NewEntry, Qos};

    async fn journal_with_backlog(dir: &std::path::Path, n: usize) -> Journal {
        let j = Journal::open(dir.join("journal.db"), &JournalConfig::default())
            .await
            .unwrap();
        for i in 0..n {
            j.append(NewEntry::new("old", format!("{i}"), Qos::AtLeastOnce))
                .await
                .unwrap();
        }
        j
    }

    async fn take(rx: &mut mpsc::Receiver<Entry>, n: usize) -> Vec<Entry> {
        let mut got = Vec::new();
        while got.len() < n {
            let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("entries keep coming")
                .expect("feeder alive");
            got.push(e);
        }
        got
    }

    #[tokio::test]
    async fn live_first_sends_new_entries_before_the_rest_of_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal_with_backlog(dir.path(), 300).await;
        let (mut rx, _task) = spawn(j.clone(), DrainPolicy::LiveFirst, 0, 8, Arc::default());
        let mut got = take(&mut rx, 1).await;
        for i in 0..5 {
            j.append(NewEntry::new("new", format!("{i}"), Qos::AtLeastOnce))
                .await
                .unwrap();
        }
        got.extend(take(&mut rx, 304).await);
        let first_new = got.iter().position(|e| e.topic == "new").unwrap();
        let last_old = got.iter().rposition(|e| e.topic == "old").unwrap();
        assert!(first_new < last_old, "live entries overtook the backlog");
        for topic in ["old", "new"] {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|e| e.topic == topic)
                .map(|e| e.seq)
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{topic} in order");
        }
        assert_eq!(got.iter().filter(|e| e.topic == "old").count(), 300);
    }

    #[tokio::test]
    async fn fifo_keeps_journal_order_and_wakes_on_new_commits() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal_with_backlog(dir.path(), 100).await;
        let (mut rx, _task) = spawn(j.clone(), DrainPolicy::Fifo, 0, 8, Arc::default());
        let mut got = take(&mut rx, 1).await;
        j.append(NewEntry::new("new", "x", Qos::AtLeastOnce))
            .await
            .unwrap();
        got.extend(take(&mut rx, 100).await);
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(got.last().map(|e| e.topic.as_str()), Some("new"));
    }

    #[tokio::test]
    async fn every_journal_read_is_timed() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal_with_backlog(dir.path(), 700).await;
        let status = Arc::new(UplinkStatus::default());
        let (mut rx, _task) = spawn(j.clone(), DrainPolicy::Fifo, 0, 8, status.clone());
        take(&mut rx, 700).await;
        // 700 entries take two reads of at most 512; both returned before the last entry.
        let reads: u64 = status.journal_read.counts().iter().sum();
        assert!(reads >= 2, "{reads} reads");
        assert_eq!(UplinkStatus::get(&status.journal_read_entries), 700);
        assert!(status.journal_read.sum_micros() > 0);
    }
}
