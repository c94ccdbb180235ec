//! Starting and stopping the bridge: RocketMQ client, meta refresher, state tables,
//! will sweeper, and its backend on `mqtt::server`'s scaffold (listeners, metrics
//! endpoint, `stop(grace)`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mqtt::admission::AdmissionConfig;
use mqtt::connection::{ConnectionConfig, Shared};
use mqtt::metrics::{ServerCounterValues, ServerCounters};
use mqtt::server::{self as scaffold, Tasks};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bridge::Bridge;
use crate::config::Config;
use crate::error::Error;
use crate::meta::Meta;
use crate::meta::Tables;
use crate::meta::wills;
use crate::metrics::BridgeExporter;
use crate::rocketmq::{Client, ClientConfig, NameServer, Producer, ProducerConfig};

/// A running bridge.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<(String, SocketAddr)>,
    tasks: Tasks,
    metrics_addr: Option<SocketAddr>,
    counters: Arc<ServerCounters>,
}

impl Server {
    /// Binds every listener and starts serving. Fails on a bad TLS file or a busy port.
    pub async fn start(config: Config) -> Result<Self, Error> {
        let config = Arc::new(config);
        // Every session long-polls its queues through one connection per broker.
        let client = Client::new(ClientConfig {
            max_in_flight: 1 << 17,
            ..ClientConfig::default()
        });
        let namesrv = Arc::new(NameServer::new(client, config.rocketmq.namesrv.clone())?);
        let producer = Producer::new(
            namesrv.clone(),
            ProducerConfig {
                send_timeout: config.send_timeout(),
                pipeline: config.rocketmq.pipeline_sends,
                route_ttl: config.route_refresh(),
                ..ProducerConfig::default()
            },
        );
        let meta = Arc::new(Meta::new(
            &config.topics.first_level,
            &config.topics.wildcards,
        ));
        if let Err(e) = meta.refresh(&namesrv).await {
            warn!(error = %e, "cannot read kvconfig yet; using the configured topics and wildcards");
        }

        let tasks = Tasks::new();
        let (shutdown, tracker) = (tasks.shutdown.clone(), tasks.tracker.clone());
        let metrics_addr = config.metrics_addr().map_err(|reason| Error::Config {
            origin: "metrics".to_owned(),
            reason,
        })?;
        let bound = scaffold::bind(&config.listeners, metrics_addr).await?;

        let tables = Tables::new(
            &config,
            namesrv.clone(),
            Arc::new(Producer::new(
                namesrv.clone(),
                ProducerConfig {
                    group: "cloud-bridge-state".to_owned(),
                    send_timeout: config.send_timeout(),
                    ..ProducerConfig::default()
                },
            )),
        );
        for table in tables.all() {
            tracker.spawn(table.clone().run(
                tracker.clone(),
                shutdown.clone(),
                Duration::from_secs(30),
            ));
        }
        let bridge = Bridge::new(
            config.clone(),
            meta.clone(),
            namesrv.clone(),
            producer,
            tables,
        );
        let limits = server_limits(&config.limits);
        let connection = limits.connection(ConnectionConfig {
            retain_available: true,
            max_inflight_deliveries: config.limits.max_inflight,
            // Sessions fill Delivery::subscription_ids; `$share/...` is refused (0x9E).
            subscription_identifiers_available: true,
            shared_subscriptions_available: false,
            ..ConnectionConfig::default()
        });
        let mut serving = bound.serve(
            Arc::new(bridge.clone()),
            connection,
            &limits,
            AdmissionConfig::default(),
            &tasks,
        )?;
        let shared = serving.shared.clone();
        tracker.spawn(sweeper(bridge.clone(), shared.clone(), shutdown.clone()));
        tracker.spawn(bridge.wildcards().clone().run(shutdown.clone()));
        let exporter = BridgeExporter {
            bridge,
            server: shared.counters.clone(),
            listeners: serving.addrs.clone(),
        };
        let metrics_addr = serving.serve_metrics(Arc::new(exporter), &tasks);
        tracker.spawn(meta.refresh_loop(
            namesrv,
            Duration::from_secs(config.rocketmq.meta_refresh_secs.max(1)),
            shutdown.clone(),
        ));
        Ok(Self {
            addrs: serving.addrs,
            tasks,
            metrics_addr,
            counters: shared.counters.clone(),
        })
    }

    /// The bound address of the metrics endpoint (`None` when turned off).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The connection and publish counters now (what `/metrics` exports).
    pub fn counters(&self) -> ServerCounterValues {
        self.counters.values()
    }

    /// The bound address of a listener.
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.tasks.shutdown.clone()
    }

    /// Stops accepting, closes connections (MQTT 5 clients get DISCONNECT 0x8B), publishes
    /// pending wills, and waits up to `grace` for all of it.
    pub async fn stop(self, grace: Duration) {
        if !self.tasks.stop(grace).await {
            warn!("some connections did not close within the shutdown grace period");
        }
    }

    /// Runs until `stop` is cancelled, then stops.
    pub async fn run_until(self, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = self.tasks.shutdown.cancelled() => {}
        }
        info!("shutting down");
        self.stop(Duration::from_secs(10)).await;
    }
}

/// The `[limits]` keys the bridge shares with the agent, for `mqtt::server`.
fn server_limits(l: &crate::config::Limits) -> scaffold::Limits {
    scaffold::Limits {
        max_connections: l.max_connections,
        max_packet_size: l.max_packet_size,
        connect_timeout_secs: l.connect_timeout_secs,
        receive_maximum: l.receive_maximum,
        publish_pipeline: l.publish_pipeline,
        max_storing_bytes: l.max_storing_bytes,
        max_keepalive: l.max_keepalive,
        topic_alias_maximum: l.topic_alias_maximum,
    }
}

/// How often a bridge writes its heartbeat and looks for orphaned wills.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A bridge whose heartbeat is older than this is taken for dead.
const STALE: Duration = Duration::from_secs(15);

/// Writes this bridge's heartbeat, publishes the wills of clients whose bridge died, and
/// closes connections whose persistent session was taken over on another bridge.
async fn sweeper(bridge: Bridge, shared: Arc<Shared<Bridge>>, shutdown: CancellationToken) {
    loop {
        match bridge.sessions_taken_elsewhere().await {
            Ok(ids) => {
                for client_id in ids {
                    if shared.registry.kick(&client_id) {
                        info!(client = %client_id, "session taken over on another bridge; closing here");
                    }
                }
            }
            Err(e) => warn!(error = %e, "session owners not checked"),
        }
        let now = crate::meta::sessions::now_ms();
        let ns = bridge.namesrv();
        if let Err(e) = wills::heartbeat(ns, bridge.instance(), now).await {
            warn!(error = %e, "heartbeat not written");
        }
        let wills = &bridge.tables().wills;
        match wills::take_orphans(wills, ns, now, STALE.as_millis() as u64).await {
            Ok(orphans) => {
                for (client_id, message) in orphans {
                    info!(client = %client_id, topic = %message.topic, "publishing the will of a client whose bridge is gone");
                    let identity: Arc<str> = Arc::from(client_id.as_str());
                    if let Err(refusal) = bridge.clone().store(identity, message).await {
                        warn!(client = %client_id, %refusal, "orphaned will not published");
                    }
                }
            }
            Err(e) => warn!(error = %e, "wills not swept"),
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    let _ = wills::retire(bridge.namesrv(), bridge.instance()).await;
}
