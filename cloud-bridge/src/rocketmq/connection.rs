//! One multiplexed TCP connection to a RocketMQ server.
//!
//! Many callers pipeline requests over one connection; responses come back in any order
//! and are matched to their request by `opaque`. Two tasks own the socket halves:
//! - the writer takes encoded-later commands from a bounded channel, encodes a batch of
//!   them into one reused buffer and writes it with one syscall;
//! - the reader decodes frames and completes the waiting caller through a oneshot taken
//!   from the `opaque -> waiter` map.
//!
//! Invariants:
//! - At most `max_in_flight` requests wait for a response (a semaphore permit is held from
//!   before the request is queued until its response arrives or its deadline passes).
//! - No lock is held across an await: the waiter map is a std mutex taken for one insert
//!   or remove.
//! - A caller is registered in the map before its request can be written, so a response
//!   never arrives before its waiter. Registration fails once the connection is closed,
//!   and closing drains the map, so no caller waits on a dead connection past the close.
//! - A request known not to have been handed to the writer is given back to the caller
//!   ([`Failure::NotSent`]) so it can be sent on a new connection without any risk of
//!   sending it twice.
//! - Any read or write error, a malformed frame, or cancellation closes the connection for
//!   good; the [`Client`](super::Client) opens a new one on next use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::command::{FLAG_ONEWAY, FLAG_RESPONSE, RemotingCodec, RemotingCommand};
use crate::Error;

/// Largest number of commands the writer encodes before writing them out.
const WRITE_BATCH: usize = 128;
/// Initial size of the read and write buffers.
const BUFFER_SIZE: usize = 64 * 1024;
/// A write buffer grown past this by a large message is replaced by a small one.
const MAX_IDLE_WRITE_BUFFER: usize = 1024 * 1024;

type Waiter = oneshot::Sender<Result<RemotingCommand, Error>>;

/// Why a request did not produce a response.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection was closed before the request was handed to the writer: it was
    /// certainly not sent, and here it is back.
    NotSent(RemotingCommand),
    /// Anything else (the request may or may not have reached the server).
    Error(Error),
}

/// Told once a request has been handed to the connection's writer (with the broker's
/// address): requests handed over one after another are written to the socket in that
/// order. It may also carry where the previous request of the same order was queued: a
/// request for another broker must wait until that one was answered, as two connections
/// keep no order between them. The default one tells nobody and waits for nothing.
#[derive(Default)]
pub struct OnQueued {
    tx: Option<oneshot::Sender<Arc<str>>>,
    fired: bool,
    /// The previous request's broker, and a future that completes once it was answered.
    after: Option<(Arc<str>, BoxFuture<'static, ()>)>,
}

impl std::fmt::Debug for OnQueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnQueued")
            .field("wanted", &self.tx.is_some())
            .field("fired", &self.fired)
            .field("after", &self.after.as_ref().map(|(b, _)| b))
            .finish()
    }
}

impl OnQueued {
    /// A notifier that completes `tx` with the broker's address.
    pub fn new(tx: oneshot::Sender<Arc<str>>) -> Self {
        Self {
            tx: Some(tx),
            fired: false,
            after: None,
        }
    }

    /// The previous request of the same order was queued on `broker` and `answered`
    /// completes once its answer came.
    pub fn after(mut self, broker: Arc<str>, answered: BoxFuture<'static, ()>) -> Self {
        self.after = Some((broker, answered));
        self
    }

    /// Before sending to `addr`: waits until the previous request was answered when it
    /// was queued on another broker (at once otherwise, and on later calls: a failover
    /// to another broker after a first attempt on the same one waits too).
    pub async fn wait_unless_on(&mut self, addr: &str) {
        if self
            .after
            .as_ref()
            .is_some_and(|(broker, _)| **broker != *addr)
            && let Some((_, answered)) = self.after.take()
        {
            answered.await;
        }
    }

    /// Whether someone waits to be told.
    pub fn is_wanted(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether someone was told.
    pub fn fired(&self) -> bool {
        self.fired
    }

    /// Tells the waiting side, once, that the request is queued on broker `addr`.
    pub fn fire(&mut self, addr: &str) {
        if let Some(tx) = self.tx.take() {
            self.fired = true;
            let _ = tx.send(Arc::from(addr));
        }
    }
}

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    pub max_frame_len: usize,
}

/// A handle on one connection; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    queue: mpsc::Sender<RemotingCommand>,
}

#[derive(Debug)]
struct Shared {
    addr: String,
    waiters: Mutex<Waiters>,
    next_opaque: AtomicI32,
    in_flight: Semaphore,
    cancel: CancellationToken,
}

#[derive(Debug, Default)]
struct Waiters {
    closed: bool,
    map: HashMap<i32, Waiter>,
}

impl Connection {
    /// Connects to `addr` and starts the reader and writer tasks on `tracker`. The tasks
    /// stop when `cancel` is cancelled or when every handle is dropped.
    pub(crate) async fn connect(
        addr: &str,
        limits: Limits,
        deadline: Instant,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Self, Error> {
        let connect_error = |source| Error::Connect {
            addr: addr.to_owned(),
            source,
        };
        let deadline = deadline.min(Instant::now() + limits.connect_timeout);
        let stream = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(connect_error(e)),
            Err(_) => return Err(connect_error(std::io::ErrorKind::TimedOut.into())),
        };
        stream.set_nodelay(true).map_err(connect_error)?;
        let (read_half, write_half) = stream.into_split();
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            waiters: Mutex::new(Waiters::default()),
            next_opaque: AtomicI32::new(1),
            in_flight: Semaphore::new(limits.max_in_flight),
            cancel,
        });
        let (queue, rx) = mpsc::channel(limits.max_in_flight.max(1));
        let codec = RemotingCodec::new(limits.max_frame_len);
        tracker.spawn(read_loop(shared.clone(), read_half, codec));
        tracker.spawn(write_loop(shared.clone(), rx, write_half, codec));
        tracing::debug!(addr, "connected to RocketMQ server");
        Ok(Self { shared, queue })
    }

    /// Whether the connection still works (as far as is known).
    pub(crate) fn is_open(&self) -> bool {
        !self.shared.cancel.is_cancelled()
    }

    /// Closes the connection; callers waiting for responses get [`Error::ConnectionClosed`].
    pub(crate) fn close(&self) {
        self.shared.close();
    }

    /// Sends a request and waits for its response until `deadline`; `on_queued` is fired
    /// once the request is in the writer's queue.
    pub(crate) async fn request(
        &self,
        mut cmd: RemotingCommand,
        deadline: Instant,
        on_queued: &mut OnQueued,
    ) -> Result<RemotingCommand, Failure> {
        let permit = match timeout_at(deadline, self.shared.in_flight.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(Failure::NotSent(cmd)),
            Err(_) => return Err(Failure::Error(Error::Timeout)),
        };
        let opaque = self.shared.next_opaque.fetch_add(1, Ordering::Relaxed);
        cmd.opaque = opaque;
        cmd.flag &= !(FLAG_RESPONSE | FLAG_ONEWAY);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.shared.lock_waiters();
            if waiters.closed {
                return Err(Failure::NotSent(cmd));
            }
            waiters.map.insert(opaque, tx);
        }
        // Removes the waiter if this future is dropped or gives up before the response.
        let mut registered = Registered {
            shared: &self.shared,
            opaque,
            armed: true,
        };
        match timeout_at(deadline, self.queue.send(cmd)).await {
            Ok(Ok(())) => on_queued.fire(&self.shared.addr),
            Ok(Err(mpsc::error::SendError(cmd))) => return Err(Failure::NotSent(cmd)),
            Err(_) => return Err(Failure::Error(Error::Timeout)),
        }
        let result = match timeout_at(deadline, rx).await {
            Ok(Ok(result)) => {
                registered.armed = false; // the reader removed it
                result.map_err(Failure::Error)
            }
            Ok(Err(_dropped)) => Err(Failure::Error(Error::ConnectionClosed)),
            Err(_) => {
                tracing::debug!(addr = %self.shared.addr, opaque, "RocketMQ request timed out");
                Err(Failure::Error(Error::Timeout))
            }
        };
        drop(registered);
        drop(permit);
        result
    }

    /// Queues a one-way request (no response) until `deadline`.
    pub(crate) async fn send_oneway(
        &self,
        mut cmd: RemotingCommand,
        deadline: Instant,
    ) -> Result<(), Failure> {
        cmd.opaque = self.shared.next_opaque.fetch_add(1, Ordering::Relaxed);
        cmd.flag = (cmd.flag & !FLAG_RESPONSE) | FLAG_ONEWAY;
        match timeout_at(deadline, self.queue.send(cmd)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(mpsc::error::SendError(cmd))) => Err(Failure::NotSent(cmd)),
            Err(_) => Err(Failure::Error(Error::Timeout)),
        }
    }
}

/// A waiter in the map, removed on drop unless disarmed.
struct Registered<'a> {
    shared: &'a Shared,
    opaque: i32,
    armed: bool,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.forget(self.opaque);
        }
    }
}

impl Shared {
    fn lock_waiters(&self) -> MutexGuard<'_, Waiters> {
        // A panic while holding this lock cannot leave the map inconsistent: keep going.
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn forget(&self, opaque: i32) {
        self.lock_waiters().map.remove(&opaque);
    }

    /// Hands a response to its waiter (if it still waits).
    fn complete(&self, cmd: RemotingCommand) {
        if !cmd.is_response() {
            tracing::debug!(addr = %self.addr, code = cmd.code, "ignoring request from server");
            return;
        }
        let waiter = self.lock_waiters().map.remove(&cmd.opaque);
        match waiter {
            Some(waiter) => {
                let _gone = waiter.send(Ok(cmd));
            }
            None => tracing::debug!(addr = %self.addr, opaque = cmd.opaque, "late response"),
        }
    }

    /// Fails one waiter (its request could not be encoded).
    fn fail(&self, opaque: i32, error: Error) {
        let waiter = self.lock_waiters().map.remove(&opaque);
        if let Some(waiter) = waiter {
            let _gone = waiter.send(Err(error));
        }
    }

    /// Marks the connection closed, stops both tasks and fails every waiter.
    fn close(&self) {
        let drained = {
            let mut waiters = self.lock_waiters();
            if waiters.closed {
                return;
            }
            waiters.closed = true;
            std::mem::take(&mut waiters.map)
        };
        self.cancel.cancel();
        self.in_flight.close();
        for (_, waiter) in drained {
            let _gone = waiter.send(Err(Error::ConnectionClosed));
        }
    }
}

async fn read_loop(shared: Arc<Shared>, mut socket: OwnedReadHalf, mut codec: RemotingCodec) {
    let mut buf = BytesMut::with_capacity(BUFFER_SIZE);
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(cmd)) => shared.complete(cmd),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(addr = %shared.addr, error = %e, "dropping RocketMQ connection");
                    shared.close();
                    return;
                }
            }
        }
        let read = tokio::select! {
            () = shared.cancel.cancelled() => break,
            read = socket.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                tracing::debug!(addr = %shared.addr, "RocketMQ server closed the connection");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(addr = %shared.addr, error = %e, "RocketMQ read failed");
                break;
            }
        }
    }
    shared.close();
}

async fn write_loop(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<RemotingCommand>,
    mut socket: OwnedWriteHalf,
    mut codec: RemotingCodec,
) {
    let mut buf = BytesMut::with_capacity(BUFFER_SIZE);
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let received = tokio::select! {
            () = shared.cancel.cancelled() => break,
            n = queue.recv_many(&mut batch, WRITE_BATCH) => n,
        };
        if received == 0 {
            break; // every handle dropped
        }
        for cmd in batch.drain(..) {
            if let Err(e) = codec.encode(&cmd, &mut buf) {
                shared.fail(cmd.opaque, e);
            }
        }
        let written = tokio::select! {
            () = shared.cancel.cancelled() => break,
            written = socket.write_all(&buf) => written,
        };
        if let Err(e) = written {
            tracing::debug!(addr = %shared.addr, error = %e, "RocketMQ write failed");
            break;
        }
        if buf.capacity() > MAX_IDLE_WRITE_BUFFER {
            buf = BytesMut::with_capacity(BUFFER_SIZE);
        } else {
            buf.clear();
        }
    }
    shared.close();
    let _ = socket.shutdown().await;
}
