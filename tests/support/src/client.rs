//! One rumqttc test client for both MQTT versions: it connects, hands every incoming
//! packet to a channel (`None` when the connection ended) and waits for the packets a
//! test expects. [`Version`] is what differs between rumqttc's 3.1.1 and 5 APIs; [`v4`]
//! and [`v5`] name the client and the packet types of each.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::WAIT;

/// What the client needs of one of rumqttc's two APIs.
pub trait Version: Send + 'static {
    type Options;
    type AsyncClient: Send + Sync + 'static;
    type EventLoop: Send + 'static;
    type Packet: Send + fmt::Debug + 'static;
    type Publish;
    type QoS;

    /// Options for client id `id` at `addr`, keep-alive 30 s.
    fn options(addr: SocketAddr, id: &str) -> Self::Options;
    fn client(options: Self::Options, cap: usize) -> (Self::AsyncClient, Self::EventLoop);
    /// The next incoming packet (outgoing events skipped); `None` when the connection
    /// failed or ended.
    fn incoming(ev: &mut Self::EventLoop) -> impl Future<Output = Option<Self::Packet>> + Send;
    fn into_publish(p: Self::Packet) -> Option<Self::Publish>;
    fn is_suback(p: &Self::Packet) -> bool;
    fn subscribe(
        c: &Self::AsyncClient,
        filter: &str,
        qos: Self::QoS,
    ) -> impl Future<Output = ()> + Send;
    /// Sends DISCONNECT (errors ignored: the connection may be gone).
    fn disconnect(c: &Self::AsyncClient) -> impl Future<Output = ()> + Send;
}

/// A connected client; its event loop runs in a task until the client is dropped, killed
/// or disconnected.
pub struct Client<V: Version> {
    pub client: V::AsyncClient,
    pub rx: mpsc::Receiver<Option<V::Packet>>,
    task: JoinHandle<()>,
}

impl<V: Version> fmt::Debug for Client<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl<V: Version> Client<V> {
    /// Connects; returns the client and its CONNACK.
    pub async fn connect(o: V::Options) -> (Self, V::Packet) {
        let (client, mut ev) = V::client(o, 256);
        let (tx, mut rx) = mpsc::channel(4096);
        let task = tokio::spawn(async move {
            loop {
                let p = V::incoming(&mut ev).await;
                let end = p.is_none();
                if tx.send(p).await.is_err() || end {
                    return;
                }
            }
        });
        let connack = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("CONNACK in time")
            .flatten()
            .expect("CONNACK");
        (Client { client, rx, task }, connack)
    }

    /// The next packet, `None` when the connection ended or nothing came in `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<V::Packet> {
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .ok()
            .flatten()
            .flatten()
    }

    /// The next PUBLISH (other packets are skipped).
    pub async fn publish(&mut self, wait: Duration) -> Option<V::Publish> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Some(p) = V::into_publish(self.next(left).await?) {
                return Some(p);
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: V::QoS) {
        V::subscribe(&self.client, filter, qos).await;
        self.wait_for(V::is_suback).await;
    }

    /// Waits for a packet matching `f`; panics if none comes.
    pub async fn wait_for(&mut self, f: impl Fn(&V::Packet) -> bool) -> V::Packet {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let p = self.next(left).await.expect("expected packet");
            if f(&p) {
                return p;
            }
        }
    }

    /// Drops the connection without DISCONNECT (abnormal end: the will fires).
    pub fn kill(self) {
        self.task.abort();
    }

    /// Sends DISCONNECT, gives the server a moment, and ends the event loop.
    pub async fn disconnect(mut self) {
        V::disconnect(&self.client).await;
        let _ = self.next(Duration::from_millis(300)).await;
        self.task.abort();
    }
}

/// The [`Version`] impl of one rumqttc API, written once: the names in the body
/// (`MqttOptions`, `AsyncClient`, `Event`, `Packet`, ...) resolve to the imports of the
/// module that invokes it, rumqttc's 3.1.1 or its MQTT 5 API, whose methods are alike.
macro_rules! rumqttc_version {
    ($version:ident) => {
        pub type Client = super::Client<$version>;

        pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
            <$version as super::Version>::options(addr, id)
        }

        impl super::Version for $version {
            type Options = MqttOptions;
            type AsyncClient = AsyncClient;
            type EventLoop = EventLoop;
            type Packet = Packet;
            type Publish = Publish;
            type QoS = QoS;

            fn options(addr: SocketAddr, id: &str) -> MqttOptions {
                let mut o = MqttOptions::new(id, "127.0.0.1", addr.port());
                o.set_keep_alive(Duration::from_secs(30));
                o
            }

            fn client(options: MqttOptions, cap: usize) -> (AsyncClient, EventLoop) {
                AsyncClient::new(options, cap)
            }

            async fn incoming(ev: &mut EventLoop) -> Option<Packet> {
                loop {
                    match ev.poll().await {
                        Ok(Event::Incoming(p)) => return Some(p),
                        Ok(Event::Outgoing(_)) => {}
                        Err(_) => return None,
                    }
                }
            }

            fn into_publish(p: Packet) -> Option<Publish> {
                match p {
                    Packet::Publish(p) => Some(p),
                    _ => None,
                }
            }

            fn is_suback(p: &Packet) -> bool {
                matches!(p, Packet::SubAck(_))
            }

            async fn subscribe(c: &AsyncClient, filter: &str, qos: QoS) {
                c.subscribe(filter, qos).await.expect("subscribe");
            }

            async fn disconnect(c: &AsyncClient) {
                let _ = c.disconnect().await;
            }
        }
    };
}

/// MQTT 3.1.1 with rumqttc's `rumqttc` API.
pub mod v4 {
    use std::net::SocketAddr;
    use std::time::Duration;

    use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions};
    pub use rumqttc::{Packet, Publish, QoS};

    /// The 3.1.1 [`Version`](super::Version).
    #[derive(Debug)]
    pub enum V4 {}

    rumqttc_version!(V4);
}

/// MQTT 5 with rumqttc's `rumqttc::v5` API.
pub mod v5 {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    /// The MQTT 5 [`Version`](super::Version).
    #[derive(Debug)]
    pub enum V5 {}

    rumqttc_version!(V5);

    /// Will properties with only a Will Delay Interval of `secs`.
    pub fn will_delay(secs: u32) -> rumqttc::v5::mqttbytes::v5::LastWillProperties {
        rumqttc::v5::mqttbytes::v5::LastWillProperties {
            delay_interval: Some(secs),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }
    }
}
