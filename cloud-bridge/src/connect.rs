//! The bridge as the `mqtt::broker::Broker` that every MQTT connection drives: what a
//! CONNECT does (client id and credentials checked, `auth.rs`; room in the session table
//! for a persistent session; the connection's will kept in the will table, or an older
//! copy removed; the session opened, `subscribe/session.rs`), topic validation, and the
//! publication of a delayed will (through [`Bridge::store`], `publish/`).
//!
//! The top of the bridge's own modules: it refers to both paths, and nothing refers to it
//! (the server hands a [`Bridge`] to `mqtt::connection` as its broker).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use mqtt::broker::{Accepted, Broker, Peer, Refusal};
use mqtt::packet::{Connect, Message, Reason};
use tracing::warn;

use crate::auth;
use crate::bridge::Bridge;
use crate::error::Error;
use crate::meta::{sessions, wills};
use crate::subscribe::session::{BridgeSession, Opening};

impl Broker for Bridge {
    type Session = BridgeSession;

    fn connect(
        &self,
        connect: &Connect,
        peer: &Peer,
    ) -> BoxFuture<'static, Result<Accepted<BridgeSession>, Refusal>> {
        let result = mqtt::cloud_topic::check_client_id(
            &connect.client_id,
            self.config().limits.max_client_id_length,
        )
        .map_err(|e| Refusal::new(Reason::ClientIdentifierNotValid, format!("client id {e}")))
        .and_then(|()| auth::authenticate(&self.config().auth, connect, peer));
        let client_id = connect.client_id.clone();
        let clean_start = connect.clean_start;
        let will = connect.will.clone();
        let opening = Opening {
            persistent: connect.session_expiry_interval > 0,
            expiry_secs: connect.session_expiry_interval,
            window: self.config().limits.max_inflight,
            has_will: false,
        };
        let bridge = self.clone();
        Box::pin(async move {
            let identity: Arc<str> = Arc::from(result?.as_str());
            let tables = bridge.tables();
            if opening.persistent
                && sessions::load_local(&tables.sessions, &client_id).is_none()
                && let Err(q) = tables.sessions.reserve(&client_id, 0, None)
            {
                return Err(bridge.quota_refusal("sessions", q.name()));
            }
            let kept = match &will {
                Some(will) => wills::put(&tables.wills, &client_id, bridge.instance(), will).await,
                // A new connection replaces the session's will: an older copy (a taken-over
                // connection's, maybe on another bridge) must not be published later.
                None => wills::delete(&tables.wills, &client_id, None).await,
            };
            match kept {
                Ok(()) => {}
                Err(Error::QuotaExceeded(table, q)) => {
                    return Err(bridge.quota_refusal(table, q.name()));
                }
                Err(e) => {
                    warn!(client = %client_id, error = %e, "will table not updated; only this bridge holds the will");
                }
            }
            let opening = Opening {
                has_will: will.is_some(),
                ..opening
            };
            let (session, session_present, deliveries) =
                BridgeSession::open(bridge, identity, client_id.clone(), clean_start, opening)
                    .await
                    .map_err(|e| {
                        Refusal::new(
                            Reason::ServerUnavailable,
                            format!("session not opened: {e}"),
                        )
                    })?;
            Ok(Accepted {
                session,
                session_present,
                client_id,
                deliveries: Some(deliveries),
            })
        })
    }

    fn validate_topic(&self, topic: &str) -> Result<(), Refusal> {
        mqtt::cloud_topic::check_topic(topic)
            .map_err(|e| Refusal::new(Reason::TopicNameInvalid, format!("topic {e}")))
    }

    fn publish_will(&self, client_id: &str, message: Message) -> BoxFuture<'static, ()> {
        let bridge = self.clone();
        let identity: Arc<str> = Arc::from(client_id);
        Box::pin(async move {
            if let Err(refusal) = bridge.store(identity.clone(), message).await {
                warn!(client = %identity, %refusal, "delayed will not published");
            }
        })
    }
}
