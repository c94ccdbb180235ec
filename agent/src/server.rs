//! Starting and stopping the agent: journal, sessions database, broker, sensors, uplink
//! and sweepers, served on `mqtt::server`'s scaffold (listeners, metrics endpoint,
//! `stop(grace)`).
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

use mqtt::admission::AdmissionConfig;
use mqtt::connection::ConnectionConfig;
use mqtt::server::{self, Tasks};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::{self, CounterValues, LocalBroker, SessionsDb, sessions_db};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::journal::{self, Journal, JournalEnv};
use crate::metrics::{AgentExporter, ListenerInfo, SensorValues};
use crate::sensors::Sensors;
use crate::topic_map::TopicMap;
use crate::uplink::UplinkStatus;

/// What the broker takes from the configuration.
fn broker_settings(config: &Config) -> broker::Settings {
    let l = &config.limits;
    broker::Settings {
        sessions: config.sessions.clone(),
        auth: config.auth.clone(),
        acl: config.acl.clone(),
        uplink_topics: config.uplink.topics.clone(),
        topic_map: TopicMap::new(config.uplink.rules()),
        max_subscriptions: l.max_subscriptions,
        max_filter_length: l.max_filter_length,
        max_filter_depth: l.max_filter_depth,
        subscriber_queue: l.subscriber_queue,
        subscriber_queue_bytes: l.subscriber_queue_bytes,
        subscriber_wait: Duration::from_millis(l.subscriber_wait_ms),
        publish_pipeline: l.publish_pipeline,
    }
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    addrs: Vec<(String, SocketAddr)>,
    tasks: Tasks,
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
        let bound = server::bind(&config.listeners, config.metrics_addr()?).await?;
        let journal =
            Journal::open_with_env(state_dir.join(journal::FILE_NAME), &config.journal, env)
                .await?;
        let (sessions_db, snapshot) = match SessionsDb::open(
            &state_dir.join(sessions_db::FILE_NAME),
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
            sessions_db
                .disconnected(&s.client_id, crate::broker::now_ms())
                .await?;
        }

        let tasks = Tasks::new();
        let (shutdown, tracker) = (tasks.shutdown.clone(), tasks.tracker.clone());
        let broker = LocalBroker::new(
            broker_settings(&config),
            journal.clone(),
            sessions_db,
            snapshot,
            tracker.clone(),
        );
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
        let limits = config.limits.server();
        let connection = limits.connection(ConnectionConfig {
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
        });
        let admission = AdmissionConfig {
            per_address: config.limits.max_connections_per_address,
            rate_per_address: f64::from(config.limits.accept_rate_per_address),
        };
        for w in config.warnings() {
            warn!("{w}");
        }
        let mut serving = bound.serve(
            Arc::new(broker.clone()),
            connection,
            &limits,
            admission,
            &tasks,
        )?;
        let addrs = serving.addrs.clone();
        let metrics = AgentExporter {
            journal: journal.clone(),
            broker: broker.clone(),
            server: serving.shared.counters.clone(),
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
        let metrics_addr = serving.serve_metrics(Arc::new(metrics.clone()), &tasks);
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
            tasks,
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
        self.tasks.shutdown.clone()
    }

    /// Stops everything (see the module doc), waiting up to `grace` for connections.
    pub async fn stop(self, grace: Duration) -> Result<()> {
        if !self.tasks.stop(grace).await {
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
            _ = self.tasks.shutdown.cancelled() => {}
        }
        info!("shutting down");
        self.stop(Duration::from_secs(10)).await
    }
}
