//! Who is connected to this server under which client identifier, and which wills wait
//! for their delay to pass.
//!
//! MQTT allows one connection per client identifier: a second CONNECT takes the session
//! over and the first connection is closed (MQTT 5 reason 0x8E). A will with a delay is
//! cancelled when the client comes back before the delay ends.

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
    wills: Mutex<HashMap<String, CancellationToken>>,
    next: AtomicU64,
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

    /// Runs `publish` after `delay` unless the client reconnects first or `shutdown` fires
    /// (then the will is published at once, so it is not lost with the process).
    pub fn schedule_will<F>(
        &self,
        client_id: &str,
        delay: Duration,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
        publish: F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let previous = match self.wills.lock() {
            Ok(mut m) => m.insert(client_id.to_owned(), cancel.clone()),
            Err(poisoned) => poisoned
                .into_inner()
                .insert(client_id.to_owned(), cancel.clone()),
        };
        if let Some(previous) = previous {
            previous.cancel();
        }
        tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => publish.await,
                _ = shutdown.cancelled() => publish.await,
            }
        });
    }

    fn cancel_will(&self, client_id: &str) {
        let pending = match self.wills.lock() {
            Ok(mut m) => m.remove(client_id),
            Err(poisoned) => poisoned.into_inner().remove(client_id),
        };
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

    #[tokio::test(start_paused = true)]
    async fn reconnect_cancels_a_delayed_will() {
        let r = Registry::default();
        let tracker = TaskTracker::new();
        let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fired.clone();
        r.schedule_will(
            "c1",
            Duration::from_secs(10),
            &tracker,
            CancellationToken::new(),
            async move { f.store(true, Ordering::SeqCst) },
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        let _ = r.register("c1");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!fired.load(Ordering::SeqCst));

        let f = fired.clone();
        r.schedule_will(
            "c2",
            Duration::from_secs(10),
            &tracker,
            CancellationToken::new(),
            async move { f.store(true, Ordering::SeqCst) },
        );
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(fired.load(Ordering::SeqCst));
    }
}
