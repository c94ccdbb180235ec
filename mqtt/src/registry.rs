//! Who is connected to this server under which client identifier, and which wills wait
//! for their delay to pass.
//!
//! MQTT allows one connection per client identifier: a second CONNECT takes the session
//! over and the first connection is closed (MQTT 5 reason 0x8E). A will with a delay is
//! cancelled when the client comes back before the delay ends.
//!
//! Delayed wills are held in memory until their delay passes, so they are bounded: at
//! most `WillLimits::count` of them and `WillLimits::bytes` of topic + payload. A will
//! that does not fit is not held: [`Registry::schedule_will`] gives it back to be
//! published at once (counted by the caller). A will's entry goes when it fires or is
//! cancelled.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug)]
struct Entry {
    conn: u64,
    kick: CancellationToken,
}

/// The connected clients of one server, by client identifier.
#[derive(Debug, Default)]
pub struct Registry {
    clients: Mutex<HashMap<String, Entry>>,
    wills: std::sync::Arc<Mutex<Wills>>,
    next: AtomicU64,
}

/// How many delayed wills may be held, and their bytes (topic + payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WillLimits {
    /// Most delayed wills held at once.
    pub count: usize,
    /// Most bytes of delayed wills held at once.
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct Wills {
    /// Client identifier -> (the will's id, its cancel token, its bytes).
    pending: HashMap<String, (u64, CancellationToken, usize)>,
    bytes: usize,
    next: u64,
    /// Where the `wills_held` gauges are kept current.
    counters: Option<std::sync::Arc<crate::metrics::ServerCounters>>,
}

impl Wills {
    fn remove(&mut self, client_id: &str, id: Option<u64>) -> Option<CancellationToken> {
        if id.is_some_and(|id| self.pending.get(client_id).is_none_or(|w| w.0 != id)) {
            return None;
        }
        let (_, cancel, bytes) = self.pending.remove(client_id)?;
        self.bytes -= bytes;
        self.publish_gauges();
        Some(cancel)
    }

    fn publish_gauges(&self) {
        if let Some(c) = &self.counters {
            c.set_wills_held(self.pending.len(), self.bytes);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registered connection; `kicked` fires when another connection takes the session over.
#[derive(Debug)]
pub struct Registration {
    /// Identifier of this connection.
    pub conn: u64,
    /// Cancelled when a newer connection with the same client identifier arrives.
    pub kicked: CancellationToken,
}

impl Registry {
    /// Registers a connection, kicking any older one with the same client identifier and
    /// cancelling its pending delayed will.
    pub fn register(&self, client_id: &str) -> Registration {
        let conn = self.next.fetch_add(1, Ordering::Relaxed);
        let kicked = CancellationToken::new();
        let entry = Entry {
            conn,
            kick: kicked.clone(),
        };
        let old = match self.clients.lock() {
            Ok(mut m) => m.insert(client_id.to_owned(), entry),
            Err(poisoned) => poisoned.into_inner().insert(client_id.to_owned(), entry),
        };
        if let Some(old) = old {
            old.kick.cancel();
        }
        self.cancel_will(client_id);
        Registration { conn, kicked }
    }

    /// Removes a connection if it is still the registered one for its client identifier.
    pub fn unregister(&self, client_id: &str, conn: u64) {
        let mut m = match self.clients.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if m.get(client_id).is_some_and(|e| e.conn == conn) {
            m.remove(client_id);
        }
    }

    /// Closes the connection of `client_id`, if there is one here, as taken over (its
    /// session moved to a connection elsewhere).
    pub fn kick(&self, client_id: &str) -> bool {
        let m = match self.clients.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        match m.get(client_id) {
            Some(e) => {
                e.kick.cancel();
                true
            }
            None => false,
        }
    }

    /// Number of connected clients.
    pub fn len(&self) -> usize {
        match self.clients.lock() {
            Ok(m) => m.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// Whether nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Delayed wills held now: (count, bytes).
    pub fn wills_held(&self) -> (usize, usize) {
        let w = lock(&self.wills);
        (w.pending.len(), w.bytes)
    }

    /// Runs `publish` after `delay` unless the client reconnects first or `shutdown` fires
    /// (then the will is published at once, so it is not lost with the process). A will
    /// of `bytes` that does not fit in `limits` is not held: `Err(publish)` gives it back.
    #[allow(clippy::too_many_arguments)]
    pub fn schedule_will<F>(
        &self,
        client_id: &str,
        delay: Duration,
        bytes: usize,
        limits: WillLimits,
        counters: &std::sync::Arc<crate::metrics::ServerCounters>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
        publish: F,
    ) -> Result<(), F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let id = {
            let mut w = lock(&self.wills);
            w.counters.get_or_insert_with(|| counters.clone());
            if let Some(previous) = w.remove(client_id, None) {
                previous.cancel();
            }
            if w.pending.len() >= limits.count || w.bytes + bytes > limits.bytes {
                return Err(publish);
            }
            w.next += 1;
            let id = w.next;
            w.bytes += bytes;
            w.pending
                .insert(client_id.to_owned(), (id, cancel.clone(), bytes));
            w.publish_gauges();
            id
        };
        let wills = self.wills.clone();
        let client_id = client_id.to_owned();
        tracker.spawn(async move {
            let fire = tokio::select! {
                _ = cancel.cancelled() => false,
                _ = tokio::time::sleep(delay) => true,
                _ = shutdown.cancelled() => true,
            };
            lock(&wills).remove(&client_id, Some(id));
            if fire {
                publish.await;
            }
        });
        Ok(())
    }

    fn cancel_will(&self, client_id: &str) {
        let pending = lock(&self.wills).remove(client_id, None);
        if let Some(pending) = pending {
            pending.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_connection_kicks_the_first() {
        let r = Registry::default();
        let a = r.register("c1");
        let b = r.register("c1");
        assert!(a.kicked.is_cancelled());
        assert!(!b.kicked.is_cancelled());
        r.unregister("c1", a.conn);
        assert_eq!(r.len(), 1);
        r.unregister("c1", b.conn);
        assert!(r.is_empty());
    }

    const LIMITS: WillLimits = WillLimits {
        count: 2,
        bytes: 100,
    };

    #[tokio::test(start_paused = true)]
    async fn reconnect_cancels_a_delayed_will() {
        let r = Registry::default();
        let counters = std::sync::Arc::new(crate::metrics::ServerCounters::default());
        let tracker = TaskTracker::new();
        let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fired.clone();
        let held = r.schedule_will(
            "c1",
            Duration::from_secs(10),
            4,
            LIMITS,
            &counters,
            &tracker,
            CancellationToken::new(),
            async move { f.store(true, Ordering::SeqCst) },
        );
        assert!(held.is_ok());
        assert_eq!(r.wills_held(), (1, 4));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let _ = r.register("c1");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!fired.load(Ordering::SeqCst));

        assert_eq!(r.wills_held(), (0, 0));
        let f = fired.clone();
        let held = r.schedule_will(
            "c2",
            Duration::from_secs(10),
            4,
            LIMITS,
            &counters,
            &tracker,
            CancellationToken::new(),
            async move { f.store(true, Ordering::SeqCst) },
        );
        assert!(held.is_ok());
        // Over the bytes bound: given back, not held.
        let refused = r.schedule_will(
            "c3",
            Duration::from_secs(10),
            LIMITS.bytes,
            LIMITS,
            &counters,
            &tracker,
            CancellationToken::new(),
            async {},
        );
        assert!(refused.is_err());
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(fired.load(Ordering::SeqCst));
        assert_eq!(r.wills_held(), (0, 0));
        assert_eq!(counters.values().wills_held, 0);
    }
}
