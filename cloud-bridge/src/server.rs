//! Starting and stopping the bridge: RocketMQ client, meta refresher, listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mqtt::budget::StoreBudget;
use mqtt::connection::{ConnectionConfig, Shared};
use mqtt::listener;
use mqtt::metrics::{ServerCounterValues, ServerCounters, endpoint};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::bridge::Bridge;
use crate::config::Config;
use crate::error::Error;
use crate::meta::Meta;
use crate::metrics::BridgeExporter;
use crate::rocketmq::{Client, ClientConfig, NameServer, Producer, ProducerConfig};
use crate::state_table::Tables;
use crate::will_store;

/// A running bridge.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<(String, SocketAddr)>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
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

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let listeners = listener::bind_all(&config.listeners).await?;
        let metrics_socket = match config.metrics_addr().map_err(|reason| Error::Config {
            origin: "metrics".to_owned(),
            reason,
        })? {
            Some(addr) => Some(endpoint::bind(addr).await?),
            None => None,
        };

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
        let shared = Arc::new(Shared {
            broker: Arc::new(bridge.clone()),
            config: ConnectionConfig {
                max_packet_size: config.limits.max_packet_size,
                connect_timeout: Duration::from_secs(config.limits.connect_timeout_secs),
                receive_maximum: config.limits.receive_maximum,
                publish_pipeline: config.limits.publish_pipeline,
                retain_available: true,
                max_inflight_deliveries: config.limits.max_inflight,
                max_keepalive: config.limits.max_keepalive,
                topic_alias_maximum: config.limits.topic_alias_maximum,
                // Sessions fill Delivery::subscription_ids; `$share/...` is refused (0x9E).
                subscription_identifiers_available: true,
                shared_subscriptions_available: false,
                ..ConnectionConfig::default()
            },
            registry: Default::default(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            counters: Arc::new(ServerCounters::default()),
            budget: StoreBudget::new(config.limits.max_storing_bytes),
        });
        tracker.spawn(sweeper(bridge.clone(), shared.clone(), shutdown.clone()));
        tracker.spawn(bridge.wildcards().clone().run(shutdown.clone()));
        let limit = Arc::new(mqtt::admission::Admission::new(
            config.limits.max_connections,
            mqtt::admission::AdmissionConfig::default(),
        ));
        let mut addrs = Vec::new();
        for l in listeners {
            let addr = l.socket.local_addr()?;
            info!(listener = %l.name, %addr, tls = l.tls.is_some(), websocket = l.websocket, "listening");
            addrs.push((l.name.clone(), addr));
            tracker.spawn(listener::run(l, shared.clone(), limit.clone()));
        }
        let mut metrics_addr = None;
        if let Some(socket) = metrics_socket {
            metrics_addr = socket.local_addr().ok();
            info!(addr = ?metrics_addr, "metrics endpoint listening");
            let exporter = BridgeExporter {
                bridge,
                server: shared.counters.clone(),
                listeners: addrs.clone(),
            };
            tracker.spawn(endpoint::run(
                socket,
                Arc::new(exporter),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        tracker.spawn(meta.refresh_loop(
            namesrv,
            Duration::from_secs(config.rocketmq.meta_refresh_secs.max(1)),
            shutdown.clone(),
        ));
        Ok(Self {
            addrs,
            shutdown,
            tracker,
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
        self.shutdown.clone()
    }

    /// Stops accepting, closes connections (MQTT 5 clients get DISCONNECT 0x8B), publishes
    /// pending wills, and waits up to `grace` for all of it.
    pub async fn stop(self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("some connections did not close within the shutdown grace period");
        }
    }

    /// Runs until `stop` is cancelled, then stops.
    pub async fn run_until(self, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = self.shutdown.cancelled() => {}
        }
        info!("shutting down");
        self.stop(Duration::from_secs(10)).await;
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
        let now = crate::session_store::now_ms();
        let ns = bridge.namesrv();
        if let Err(e) = will_store::heartbeat(ns, bridge.instance(), now).await {
            warn!(error = %e, "heartbeat not written");
        }
        let wills = &bridge.tables().wills;
        match will_store::take_orphans(wills, ns, now, STALE.as_millis() as u64).await {
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
    let _ = will_store::retire(bridge.namesrv(), bridge.instance()).await;
}
