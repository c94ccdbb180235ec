//! Accept loops: TCP or TLS, a bounded number of connections, clean shutdown.
//!
//! Every accepted socket runs `connection::serve` in a task tracked by the server's
//! `TaskTracker`; a socket past `max_connections`, or past its source address's bounds
//! (`admission.rs`), is closed at once. The TLS handshake must finish within the connect
//! timeout.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::Admission;
use crate::broker::{Broker, Peer};
use crate::connection::{Shared, serve};
use crate::error::Error;
use crate::quickack::QuickAck;
use crate::tls::certificate_identity;

/// The largest `max_connections` a server accepts in its config. The accept loop counts
/// connections with a semaphore, which holds at most 2^29 − 1 permits on 32-bit targets
/// (armv7 gateways); a million is far past any file-descriptor limit anyway.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// One listener as configured (`[[listener]]` in both binaries' TOML).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name for logs.
    pub name: String,
    /// Address to bind.
    pub bind: std::net::SocketAddr,
    /// TLS files; plain TCP without.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsFiles>,
    /// Speak MQTT over WebSocket (subprotocol `mqtt`; wss with `tls`).
    #[serde(default)]
    pub websocket: bool,
}

/// Loads the TLS files of every configured listener and binds it. Fails on a bad TLS file
/// or a busy port, before anything is served.
pub async fn bind_all(configs: &[ListenerConfig]) -> Result<Vec<Listener>, Error> {
    let mut listeners = Vec::with_capacity(configs.len());
    for l in configs {
        let tls = match &l.tls {
            None => None,
            Some(files) => Some(crate::tls::server_config(files)?),
        };
        let socket = TcpListener::bind(l.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: l.bind,
                source,
            })?;
        listeners.push(Listener {
            name: l.name.clone(),
            socket,
            tls,
            websocket: l.websocket,
        });
    }
    Ok(listeners)
}

/// A bound listener, ready to run.
#[derive(Debug)]
pub struct Listener {
    /// Name used in logs and in [`Peer::listener`].
    pub name: String,
    /// The bound socket.
    pub socket: TcpListener,
    /// TLS, when this listener speaks it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// MQTT over WebSocket (inside TLS when `tls` is set).
    pub websocket: bool,
}

/// Accepts connections until `shared.shutdown` fires. Connections count against `limit`,
/// which listeners of one server share.
pub async fn run<B: Broker>(listener: Listener, shared: Arc<Shared<B>>, limit: Arc<Admission>) {
    let acceptor = listener.tls.clone().map(TlsAcceptor::from);
    let name: Arc<str> = Arc::from(listener.name.as_str());
    let websocket = listener.websocket;
    loop {
        let accepted = tokio::select! {
            r = listener.socket.accept() => r,
            _ = shared.shutdown.cancelled() => break,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = limit.admit(addr.ip(), &shared.counters) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // ACK what is read at once: a PUBACK waits for the store (see `quickack.rs`).
        let stream = QuickAck::new(stream);
        let open = shared.counters.accepted();
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let name = name.clone();
        shared.tracker.clone().spawn(async move {
            let mut peer = Peer {
                addr,
                listener: name.to_string(),
                tls_identity: None,
            };
            let result = match acceptor {
                None => serve_maybe_ws(stream, peer, shared, websocket).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        shared.config.connect_timeout,
                        acceptor.accept(stream),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            peer.tls_identity = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| certificate_identity(c));
                            serve_maybe_ws(tls, peer, shared, websocket).await
                        }
                        Ok(Err(e)) => {
                            info!(listener = %name, peer = %addr, error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            info!(listener = %name, peer = %addr, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = result {
                debug!(listener = %name, peer = %addr, error = %e, "connection ended");
            }
            drop((open, permit));
        });
    }
}

/// Serves a connection, after the WebSocket upgrade when the listener speaks WebSocket
/// (the upgrade must finish within the connect timeout).
async fn serve_maybe_ws<B, S>(
    stream: S,
    peer: Peer,
    shared: Arc<Shared<B>>,
    websocket: bool,
) -> Result<(), Error>
where
    B: Broker,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !websocket {
        return serve(stream, peer, shared).await;
    }
    let upgrade = tokio::time::timeout(
        shared.config.connect_timeout,
        crate::websocket::accept(stream, shared.config.max_packet_size),
    )
    .await
    .map_err(|_| Error::ConnectTimeout)??;
    serve(upgrade, peer, shared).await
}
