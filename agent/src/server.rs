//! Starting and stopping the agent: journal, broker database, listeners, sweepers.
//!
//! Shutdown (`Agent::stop`, on SIGTERM/SIGINT from `main`): the token is cancelled, so
//! listeners stop accepting and every connection ends (MQTT 5 clients get DISCONNECT
//! 0x8B); pending delayed wills are published; the session pipelines answer what they
//! had queued; persistent sessions' in-memory queues are written to `broker.db`. Then
//! the journal thread finishes its queue and closes the file. Every task is in one
//! `TaskTracker`, so "stopped" means stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mqtt::budget::StoreBudget;
use mqtt::connection::{ConnectionConfig, Shared};
use mqtt::listener;
use mqtt::metrics::{ServerCounters, endpoint};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::{BrokerStore, CounterValues, LocalBroker, store};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::journal::{self, Journal, JournalEnv};
use crate::metrics::{AgentExporter, ListenerInfo, SensorValues};
use crate::sensors::Sensors;
use crate::uplink::UplinkStatus;

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    addrs: Vec<(String, SocketAddr)>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    journal: Journal,
    broker: LocalBroker,
    state_dir: PathBuf,
    sensors: Sensors,
    uplink: Arc<UplinkStatus>,
    metrics: AgentExporter,
    metrics_addr: Option<SocketAddr>,
}

impl Agent {
    /// Opens the state in `state_dir` (created if missing), binds every listener and
    /// starts serving. Fails on a bad TLS file, a busy port or an unusable journal.
    pub async fn start(config: Config, state_dir: &Path) -> Result<Self> {
        Self::start_with_env(config, state_dir, JournalEnv::default()).await
    }

    /// Like [`Agent::start`], with the journal's clock, disk and WAL flush injected
    /// (failure injection in tests).
    pub async fn start_with_env(config: Config, state_dir: &Path, env: JournalEnv) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(|source| Error::Io {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let listeners = listener::bind_all(&config.listeners).await?;
        let metrics_socket = match config.metrics_addr()? {
            Some(addr) => Some(endpoint::bind(addr).await?),
            None => None,
        };
        let journal =
            Journal::open_with_env(state_dir.join(journal::FILE_NAME), &config.journal, env)
                .await?;
        let (store, snapshot) = match BrokerStore::open(
            &state_dir.join(store::FILE_NAME),
            config.journal.synchronous,
            config.sessions.max_db_bytes,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                let _ = journal.close().await;
                return Err(e);
            }
        };
        // Sessions that were connected when the agent stopped count as disconnected now.
        for s in snapshot
            .sessions
            .iter()
            .filter(|s| s.disconnected_ms.is_none())
        {
            store
                .disconnected(&s.client_id, crate::broker::now_ms())
                .await?;
        }

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let broker = LocalBroker::new(&config, journal.clone(), store, snapshot, tracker.clone());
        // Sensor tasks open their devices themselves and retry: never a start failure.
        let sensors = Sensors::start(&config.sensors, &broker, &tracker, &shutdown);
        let uplink = crate::uplink::start(
            &config.uplink,
            &config.downlink,
            journal.clone(),
            broker.clone(),
            &tracker,
            shutdown.clone(),
        )?;
        let shared = Arc::new(Shared {
            broker: Arc::new(broker.clone()),
            config: ConnectionConfig {
                max_packet_size: config.limits.max_packet_size,
                connect_timeout: config.connect_timeout(),
                receive_maximum: config.limits.receive_maximum,
                publish_pipeline: config.limits.publish_pipeline,
                max_keepalive: config.limits.max_keepalive,
                topic_alias_maximum: config.limits.topic_alias_maximum,
                retain_available: true,
                // The broker fills Delivery::subscription_ids and serves `$share/...`.
                subscription_identifiers_available: true,
                shared_subscriptions_available: true,
                max_will_delay_secs: config.sessions.max_session_expiry_secs,
                wills: mqtt::registry::WillLimits {
                    count: config.sessions.max_pending_wills,
                    bytes: config.sessions.max_pending_will_bytes,
                },
                ..ConnectionConfig::default()
            },
            registry: Default::default(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            counters: Arc::new(ServerCounters::default()),
            budget: StoreBudget::new(config.limits.max_storing_bytes),
        });
        let limit = Arc::new(mqtt::admission::Admission::new(
            config.limits.max_connections,
            mqtt::admission::AdmissionConfig {
                per_address: config.limits.max_connections_per_address,
                rate_per_address: f64::from(config.limits.accept_rate_per_address),
            },
        ));
        for w in config.warnings() {
            warn!("{w}");
        }
        let mut addrs = Vec::new();
        for l in listeners {
            let addr = l.socket.local_addr().map_err(|source| Error::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
            info!(listener = %l.name, %addr, tls = l.tls.is_some(), websocket = l.websocket, "listening");
            addrs.push((l.name.clone(), addr));
            tracker.spawn(listener::run(l, shared.clone(), limit.clone()));
        }
        let metrics = AgentExporter {
            journal: journal.clone(),
            broker: broker.clone(),
            server: shared.counters.clone(),
            listeners: addrs
                .iter()
                .map(|(name, addr)| ListenerInfo {
                    name: name.clone(),
                    addr: *addr,
                })
                .collect(),
            uplink: Some({
                let u = uplink.clone();
                Arc::new(move || crate::metrics::UplinkValues::from(&*u))
            }),
            sensors: Some(Arc::new({
                let sensors = sensors.clone();
                move || sensors.stats().iter().map(SensorValues::from).collect()
            })),
        };
        let mut metrics_addr = None;
        if let Some(socket) = metrics_socket {
            metrics_addr = socket.local_addr().ok();
            info!(addr = ?metrics_addr, "metrics endpoint listening");
            tracker.spawn(endpoint::run(
                socket,
                Arc::new(metrics.clone()),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        let j = journal.clone();
        tracker.spawn({
            let cancel = shutdown.clone();
            async move { j.run_sweeper(Duration::from_secs(60), cancel).await }
        });
        let b = broker.clone();
        tracker.spawn({
            let cancel = shutdown.clone();
            async move { b.run_session_expiry(Duration::from_secs(60), cancel).await }
        });
        info!(state_dir = %state_dir.display(), "edge-agent running");
        Ok(Self {
            addrs,
            shutdown,
            tracker,
            journal,
            broker,
            state_dir: state_dir.to_path_buf(),
            sensors,
            uplink,
            metrics,
            metrics_addr,
        })
    }

    /// The bound address of the metrics endpoint (`None` when turned off).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Every figure the metrics endpoint and `edge-agent status` show, now.
    pub async fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        self.metrics.snapshot().await
    }

    /// The bound address of a listener.
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
    }

    /// The journal (for the uplink and for tests).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// What the uplink is doing.
    pub fn uplink(&self) -> &Arc<UplinkStatus> {
        &self.uplink
    }

    /// The local broker, for in-process publishers (sensors, the downlink).
    pub fn broker(&self) -> &LocalBroker {
        &self.broker
    }

    /// The sensors' counters (`Sensors::stats`).
    pub fn sensors(&self) -> &Sensors {
        &self.sensors
    }

    /// The broker's delivery counters.
    pub fn counters(&self) -> CounterValues {
        self.broker.counters()
    }

    /// The state directory in use.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A token that stops the agent when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops everything (see the module doc), waiting up to `grace` for connections.
    pub async fn stop(self, grace: Duration) -> Result<()> {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("some tasks did not stop within the shutdown grace period");
        }
        drop(self.broker);
        self.journal.close().await?;
        info!("edge-agent stopped");
        Ok(())
    }

    /// Runs until `stop` is cancelled, then stops.
    pub async fn run_until(self, stop: CancellationToken) -> Result<()> {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = self.shutdown.cancelled() => {}
        }
        info!("shutting down");
        self.stop(Duration::from_secs(10)).await
    }
}
