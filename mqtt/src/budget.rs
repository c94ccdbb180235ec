//! The server-wide budget of bytes held by received publishes while they are being stored.
//!
//! Each connection already stores at most `publish_pipeline` publishes at once, but that
//! alone bounds memory by connections × pipeline × maximum packet size: gigabytes for a
//! bridge with thousands of connections, or an agent whose devices send large messages.
//! A publish therefore takes its size (topic and payload bytes) from this budget before its
//! store starts and gives it back when the store completes. A connection whose publish does
//! not fit waits, and reads nothing from its socket meanwhile, like a full pipeline. The
//! budget is a `tokio` semaphore (fair: waiters are served in order, so a large publish is
//! not starved by small ones); a publish larger than the whole budget takes all of it.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of publishes being stored, shared by every connection of a server.
#[derive(Debug, Clone)]
pub struct StoreBudget {
    bytes: Arc<Semaphore>,
    total: u32,
}

/// A publish's share of the budget, given back when dropped.
pub type BudgetShare = OwnedSemaphorePermit;

impl StoreBudget {
    /// A budget of `bytes`: at least 1, and at most what a semaphore holds (512 MiB − 1
    /// on 32-bit targets such as armv7, 4 GiB − 1 elsewhere); larger values are clamped.
    pub fn new(bytes: usize) -> StoreBudget {
        let most = u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX);
        let total = u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, most);
        StoreBudget {
            bytes: Arc::new(Semaphore::new(usize::try_from(total).unwrap_or(1))),
            total,
        }
    }

    fn share_of(&self, bytes: usize) -> u32 {
        u32::try_from(bytes).unwrap_or(u32::MAX).min(self.total)
    }

    /// Takes `bytes` at once if they are free (and nobody waits before).
    pub fn try_take(&self, bytes: usize) -> Option<BudgetShare> {
        self.bytes
            .clone()
            .try_acquire_many_owned(self.share_of(bytes))
            .ok()
    }

    /// Waits for `bytes` to be free, then takes them. Cancel-safe: dropping the future
    /// gives up its place in the queue. `None` only if the budget was closed (never).
    pub fn take(&self, bytes: usize) -> impl Future<Output = Option<BudgetShare>> + 'static {
        let share = self.share_of(bytes);
        let sem = self.bytes.clone();
        async move { sem.acquire_many_owned(share).await.ok() }
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// The whole budget, bytes.
    pub fn total(&self) -> usize {
        self.total as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shares_come_back_when_dropped_and_oversize_takes_everything() {
        let b = StoreBudget::new(100);
        let a = b.try_take(60).expect("fits");
        assert!(b.try_take(50).is_none(), "only 40 left");
        let c = b.try_take(40).expect("fits exactly");
        assert_eq!(b.available(), 0);
        drop((a, c));
        assert_eq!(b.available(), 100);
        let all = b
            .try_take(1_000_000)
            .expect("a publish larger than the budget takes it all");
        assert_eq!(b.available(), 0);
        let waiting = tokio::spawn(b.take(10));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(all);
        let share = waiting.await.expect("task").expect("share");
        assert_eq!(b.available(), 90);
        drop(share);
        assert_eq!(b.total(), 100);
    }

    #[test]
    fn any_size_is_accepted_and_clamped() {
        assert_eq!(StoreBudget::new(0).total(), 1);
        let huge = StoreBudget::new(usize::MAX);
        assert!(huge.total() <= Semaphore::MAX_PERMITS);
        assert_eq!(huge.available(), huge.total());
    }
}
