//! The client: one multiplexed connection per server address, opened on first use and
//! reopened on the next use after it failed.
//!
//! The pool is a `HashMap` of per-address slots under a short std mutex. The hot path
//! (a live connection exists) takes two uncontended std locks and clones an `Arc`; only
//! opening a connection awaits under a lock, an async mutex per address, so that a burst
//! of callers on a cold address opens one connection, not one each.
//!
//! [`Client::close`] cancels every connection task and waits for all of them to end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::command::{DEFAULT_MAX_FRAME_LEN, RemotingCommand};
use super::connection::{Connection, Failure, Limits, OnQueued};
use crate::Error;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Longest wait for a TCP connection to be established.
    pub connect_timeout: Duration,
    /// Deadline of requests that do not set their own.
    pub request_timeout: Duration,
    /// Most requests awaiting a response on one connection; more callers wait for a slot
    /// (within their deadline).
    pub max_in_flight: usize,
    /// Largest frame sent or accepted, in bytes.
    pub max_frame_len: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(3),
            max_in_flight: 4096,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// A RocketMQ remoting client: a pool of multiplexed connections by server address.
/// Clones share the pool.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

#[derive(Debug, Default)]
struct Slot {
    current: Mutex<Option<Connection>>,
    connecting: tokio::sync::Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Client {
    /// A client with no connection yet.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                slots: Mutex::new(HashMap::new()),
                cancel: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// This client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Sends `request` to the server at `addr` (`host:port`) and waits for its response,
    /// at most `timeout` in all (waiting for an in-flight slot and connecting included).
    ///
    /// Any response code is returned as is: see [`RemotingCommand::into_success`]. When
    /// the connection turns out to be closed before the request was written, the request
    /// is sent once more on a new connection; it is never sent twice.
    pub async fn invoke(
        &self,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, Error> {
        self.invoke_queued(addr, request, timeout, &mut OnQueued::default())
            .await
    }

    /// [`Client::invoke`], firing `on_queued` once the request is queued for writing on
    /// the connection (requests queued one after another are written in that order).
    pub async fn invoke_queued(
        &self,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
        on_queued: &mut OnQueued,
    ) -> Result<RemotingCommand, Error> {
        let deadline = Instant::now() + timeout;
        let mut request = request;
        for _ in 0..2 {
            let conn = self.connection(addr, deadline).await?;
            match conn.request(request, deadline, on_queued).await {
                Ok(response) => return Ok(response),
                Err(Failure::Error(e)) => return Err(e),
                Err(Failure::NotSent(back)) => request = back,
            }
        }
        Err(not_sent(addr))
    }

    /// Sends a one-way request (no response expected) to `addr`.
    pub async fn invoke_oneway(
        &self,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut request = request;
        for _ in 0..2 {
            let conn = self.connection(addr, deadline).await?;
            match conn.send_oneway(request, deadline).await {
                Ok(()) => return Ok(()),
                Err(Failure::Error(e)) => return Err(e),
                Err(Failure::NotSent(back)) => request = back,
            }
        }
        Err(not_sent(addr))
    }

    /// Closes the connection to `addr`, if any (the next request opens a new one).
    pub fn disconnect(&self, addr: &str) {
        let slot = lock(&self.inner.slots).get(addr).cloned();
        if let Some(conn) = slot.and_then(|slot| lock(&slot.current).take()) {
            conn.close();
        }
    }

    /// Closes every connection and waits until all their tasks have ended. Requests made
    /// afterwards fail with [`Error::ConnectionClosed`].
    pub async fn close(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Some(conn) = lock(&slot.current).take() {
                conn.close();
            }
        }
        self.inner.tracker.wait().await;
    }

    /// The live connection to `addr`, opened if needed.
    async fn connection(&self, addr: &str, deadline: Instant) -> Result<Connection, Error> {
        let slot = {
            let mut slots = lock(&self.inner.slots);
            match slots.get(addr) {
                Some(slot) => slot.clone(),
                None => slots.entry(addr.to_owned()).or_default().clone(),
            }
        };
        if let Some(conn) = live(&slot) {
            return Ok(conn);
        }
        let _connecting = timeout_at(deadline, slot.connecting.lock())
            .await
            .map_err(|_| Error::Timeout)?;
        if let Some(conn) = live(&slot) {
            return Ok(conn);
        }
        if self.inner.cancel.is_cancelled() {
            return Err(Error::ConnectionClosed);
        }
        let config = &self.inner.config;
        let limits = Limits {
            connect_timeout: config.connect_timeout,
            max_in_flight: config.max_in_flight.max(1),
            max_frame_len: config.max_frame_len,
        };
        let conn = Connection::connect(
            addr,
            limits,
            deadline,
            &self.inner.tracker,
            self.inner.cancel.child_token(),
        )
        .await?;
        *lock(&slot.current) = Some(conn.clone());
        Ok(conn)
    }
}

fn live(slot: &Slot) -> Option<Connection> {
    lock(&slot.current)
        .as_ref()
        .filter(|conn| conn.is_open())
        .cloned()
}

fn not_sent(addr: &str) -> Error {
    Error::Connect {
        addr: addr.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "connection closed before the request was written",
        ),
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
