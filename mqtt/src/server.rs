//! The scaffold both servers (edge-agent, cloud-bridge) run on: the `[limits]` keys they
//! share, binding every listener and the metrics endpoint before anything is served,
//! serving the listeners with one [`Shared`] state and one admission limit, the metrics
//! endpoint, and `stop(grace)`. Each binary's `server.rs` adds only its backend.
//!
//! # Invariants
//! - Start-up binds first ([`bind`]): a busy port or a bad TLS file fails start before
//!   any connection is accepted.
//! - Every task of a server (listeners, connections, delayed wills, the metrics endpoint,
//!   the backend's own) runs in one `TaskTracker` and ends when one `CancellationToken`
//!   fires ([`Tasks`]), so [`Tasks::stop`] returning `true` means everything stopped.
//! - The listeners of one server share one [`Admission`] (`max_connections` in total).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::admission::{Admission, AdmissionConfig};
use crate::broker::Broker;
use crate::budget::StoreBudget;
use crate::connection::{ConnectionConfig, Shared};
use crate::error::Error;
use crate::listener::{self, Listener, ListenerConfig};
use crate::metrics::{Exporter, ServerCounters, endpoint};

/// The `[limits]` keys both binaries have (each binary's `[limits]` adds its own keys,
/// and its config hands these over with their documented defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `max_connections`: connections across all listeners; more are closed at accept.
    pub max_connections: usize,
    /// `max_packet_size`: largest packet accepted, bytes.
    pub max_packet_size: usize,
    /// `connect_timeout_secs`: time allowed between accept and CONNECT, seconds.
    pub connect_timeout_secs: u64,
    /// `receive_maximum`: MQTT 5 Receive Maximum advertised to clients.
    pub receive_maximum: u16,
    /// `publish_pipeline`: stores in flight per connection.
    pub publish_pipeline: usize,
    /// `max_storing_bytes`: bytes of publishes being stored, over all connections.
    pub max_storing_bytes: usize,
    /// `max_keepalive`: longest keepalive granted, seconds (0 or 65535: no cap).
    pub max_keepalive: u16,
    /// `topic_alias_maximum`: topic aliases an MQTT 5 client may use.
    pub topic_alias_maximum: u16,
}

impl Limits {
    /// `base` with the connection settings these limits give.
    pub fn connection(&self, base: ConnectionConfig) -> ConnectionConfig {
        ConnectionConfig {
            max_packet_size: self.max_packet_size,
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            receive_maximum: self.receive_maximum,
            publish_pipeline: self.publish_pipeline,
            max_keepalive: self.max_keepalive,
            topic_alias_maximum: self.topic_alias_maximum,
            ..base
        }
    }
}

/// A server's tasks: the token that stops them and the tracker that waits for them.
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// Every task of the server.
    pub tracker: TaskTracker,
}

impl Tasks {
    /// Fresh tasks, none running.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every task and waits up to `grace` for them to end; `false` when some did
    /// not end in time.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// The sockets of a server, bound and not served yet.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<Listener>,
    metrics: Option<TcpListener>,
}

/// Loads the TLS files of every listener and binds it, and binds the metrics endpoint
/// (`None`: turned off). Fails on a bad TLS file or a busy port.
pub async fn bind(
    listeners: &[ListenerConfig],
    metrics: Option<SocketAddr>,
) -> Result<Bound, Error> {
    let listeners = listener::bind_all(listeners).await?;
    let metrics = match metrics {
        Some(addr) => Some(endpoint::bind(addr).await?),
        None => None,
    };
    Ok(Bound { listeners, metrics })
}

/// A server whose listeners are being served.
#[derive(Debug)]
pub struct Serving<B> {
    /// What its connections share (the backend, the registry, the counters).
    pub shared: Arc<Shared<B>>,
    /// Each listener's name and bound address.
    pub addrs: Vec<(String, SocketAddr)>,
    metrics: Option<TcpListener>,
}

impl Bound {
    /// Serves every listener with `broker` behind it, connections configured by
    /// `connection`, at most `max_connections` in total and `admission` per address.
    /// Every task runs in `tasks`.
    pub fn serve<B: Broker>(
        self,
        broker: Arc<B>,
        connection: ConnectionConfig,
        limits: &Limits,
        admission: AdmissionConfig,
        tasks: &Tasks,
    ) -> Result<Serving<B>, Error> {
        let shared = Arc::new(Shared {
            broker,
            config: connection,
            registry: Default::default(),
            shutdown: tasks.shutdown.clone(),
            tracker: tasks.tracker.clone(),
            counters: Arc::new(ServerCounters::default()),
            budget: StoreBudget::new(limits.max_storing_bytes),
        });
        let limit = Arc::new(Admission::new(limits.max_connections, admission));
        let mut addrs = Vec::with_capacity(self.listeners.len());
        for l in self.listeners {
            let addr = l.socket.local_addr().map_err(|source| Error::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
            info!(listener = %l.name, %addr, tls = l.tls.is_some(), websocket = l.websocket, "listening");
            addrs.push((l.name.clone(), addr));
            tasks
                .tracker
                .spawn(listener::run(l, shared.clone(), limit.clone()));
        }
        Ok(Serving {
            shared,
            addrs,
            metrics: self.metrics,
        })
    }
}

impl<B> Serving<B> {
    /// Serves `exporter` on the metrics endpoint, if one was bound; returns its address.
    pub fn serve_metrics<E: Exporter>(
        &mut self,
        exporter: Arc<E>,
        tasks: &Tasks,
    ) -> Option<SocketAddr> {
        let socket = self.metrics.take()?;
        let addr = socket.local_addr().ok();
        info!(addr = ?addr, "metrics endpoint listening");
        tasks.tracker.spawn(endpoint::run(
            socket,
            exporter,
            tasks.shutdown.clone(),
            tasks.tracker.clone(),
        ));
        addr
    }
}
