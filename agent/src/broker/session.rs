//! One connection's view of the local broker: its ordered publish pipeline, its
//! subscriptions, acknowledgements, and what happens when it ends.
//!
//! # The publish pipeline
//! `publish` is called by the connection in packet order; it queues the message to the
//! session's pipeline task at once (a channel with room for more than the connection's
//! `publish_pipeline`, so the queueing itself never waits or reorders). The task takes
//! every publish queued (a burst), retains and delivers each message in order right
//! away (not waiting for any commit), lets the subscribers' connections write first (one
//! yield, when the burst delivered anything), submits the burst's uplink messages to
//! the journal as one command, and keeps the burst's commits (journal, and `broker.db` rows for
//! persistent subscribers) in flight; once they are known it answers the burst's
//! futures. One reply per burst instead of one per message, and one wake-up of the
//! connection for the burst's acks. The task ends when the session is closed and
//! everything queued is answered.

use std::sync::Arc;

use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use mqtt::broker::{Close, Refusal, Session};
use mqtt::packet::{Message, QoS, Reason, SubscribeOutcome, SubscriptionRequest, Version};
use tokio::sync::{mpsc, oneshot};

use super::router::{Client, SharedCopy, shared_parts};
use super::sessions_db::SubOptions;
use super::{Core, Routed, expiry_deadline, now_ms, refusal};
use crate::acl::{Access, Grants};

type Answer = oneshot::Sender<Result<Reason, Refusal>>;

/// One connected client's session on the local broker.
#[derive(Debug)]
pub struct LocalSession {
    core: Arc<Core>,
    client: Arc<Client>,
    generation: u64,
    /// What `[[acl]]` allows this client.
    grants: Grants,
    version: Version,
    pipeline: Option<mpsc::Sender<(Message, Answer)>>,
}

fn gone() -> Refusal {
    Refusal::new(Reason::ServerUnavailable, "the broker is shutting down")
}

impl LocalSession {
    pub(crate) fn start(
        core: Arc<Core>,
        client: Arc<Client>,
        generation: u64,
        grants: Grants,
        version: Version,
    ) -> Self {
        // +2: the connection keeps at most `pipeline` stores in flight, plus its will.
        let (tx, rx) = mpsc::channel(core.pipeline + 2);
        core.tracker
            .spawn(run_pipeline(core.clone(), client.id.clone(), rx));
        Self {
            core,
            client,
            generation,
            grants,
            version,
            pipeline: Some(tx),
        }
    }
}

/// A burst's answers, once its commits are known.
type Answered = BoxFuture<'static, Vec<(Answer, Result<Reason, Refusal>)>>;

async fn run_pipeline(
    core: Arc<Core>,
    publisher: Arc<str>,
    mut rx: mpsc::Receiver<(Message, Answer)>,
) {
    let limit = core.pipeline.max(1) + 2;
    let mut answering: FuturesUnordered<Answered> = FuturesUnordered::new();
    let mut burst = Vec::with_capacity(limit);
    let mut open = true;
    while open || !answering.is_empty() {
        let queued = tokio::select! {
            biased;
            Some(answers) = answering.next(), if !answering.is_empty() => {
                for (answer, result) in answers {
                    let _ = answer.send(result);
                }
                continue;
            }
            n = rx.recv_many(&mut burst, limit), if open => n,
        };
        if queued == 0 {
            open = false;
            continue;
        }
        let answered = run_burst(&core, &publisher, burst.drain(..)).await;
        answering.push(answered);
    }
}

/// Journals, retains and delivers a burst in order; returns the wait for its commits.
async fn run_burst(
    core: &Core,
    publisher: &str,
    burst: impl ExactSizeIterator<Item = (Message, Answer)>,
) -> Answered {
    // Local deliveries first: a subscriber's copy does not wait behind the journal's
    // wake-up. The journal then gets the burst as one command.
    let mut entries = Vec::new();
    let mut delivered = false;
    let mut routed: Vec<(Answer, bool, Result<Routed, Refusal>)> = Vec::with_capacity(burst.len());
    for (message, answer) in burst {
        let uplinked = core.is_uplink(&message.topic);
        if uplinked {
            entries.push(Core::journal_entry(&message));
        }
        let expires_ms = expiry_deadline(&message);
        let r = core.route(publisher, message, expires_ms, uplinked).await;
        delivered |= r.as_ref().is_ok_and(|r| r.delivered);
        routed.push((answer, uplinked, r));
    }
    if delivered {
        // The subscribers' connections (woken by the deliveries, next in this worker's
        // queue) write their copies before the journal thread is woken and before the
        // publisher's acks: measured at 1k msg/s, waking the journal first made its
        // transaction compete with those writes for the 2 cores (pub->sub p50 290 µs
        // against 180 µs on a local-only topic; with this yield 150-170 µs), and on a
        // local-only topic the PUBACK's write went first (p50 about 30 µs more). The
        // commit starts some µs later; the PUBACK still waits for it.
        tokio::task::yield_now().await;
    }
    let journal = if entries.is_empty() {
        None
    } else {
        Some(
            core.journal
                .submit_many(entries)
                .await
                .map_err(|e| refusal(&e)),
        )
    };
    Box::pin(async move {
        let mut outcome = match journal {
            None => Journaled::Each(Vec::new().into_iter()),
            Some(Err(r)) => Journaled::All(r),
            Some(Ok(pending)) => match pending.committed().await {
                Ok(v) => Journaled::Each(
                    v.into_iter()
                        .map(|r| r.map_err(|e| refusal(&e)))
                        .collect::<Vec<_>>()
                        .into_iter(),
                ),
                Err(e) => Journaled::All(refusal(&e)),
            },
        };
        let mut answers = Vec::with_capacity(routed.len());
        for (answer, uplinked, r) in routed {
            let journaled = match &mut outcome {
                _ if !uplinked => Ok(0),
                Journaled::All(r) => Err(r.clone()),
                Journaled::Each(each) => each.next().unwrap_or_else(|| Err(gone())),
            };
            let result = match (journaled, r) {
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                (Ok(_), Ok(routed)) => routed.finish().await,
            };
            answers.push((answer, result));
        }
        answers
    })
}

/// The journal's answer for a burst.
enum Journaled {
    /// Each uplinked message's own outcome, in order.
    Each(std::vec::IntoIter<Result<u64, Refusal>>),
    /// The whole burst failed.
    All(Refusal),
}

impl Session for LocalSession {
    fn publish(&self, message: Message) -> BoxFuture<'static, Result<Reason, Refusal>> {
        if !self.grants.allows(Access::Publish, &message.topic) {
            // MQTT 5: PUBACK/PUBREC 0x87. QoS 0 (no ack to carry it) and 3.1.1 (no
            // reason codes): dropped, acknowledged as if delivered (3.3.5).
            tracing::debug!(client = %self.client.id, topic = %message.topic, "publish refused by [[acl]]");
            let refused = self.version == Version::V5 && message.qos != QoS::AtMostOnce;
            return Box::pin(async move {
                if refused {
                    Err(Refusal::new(
                        Reason::NotAuthorized,
                        "not allowed by [[acl]]",
                    ))
                } else {
                    Ok(Reason::Success)
                }
            });
        }
        let (answer, result) = oneshot::channel();
        let Some(tx) = self.pipeline.clone() else {
            return Box::pin(async { Err(gone()) });
        };
        let queued = tx.try_send((message, answer));
        Box::pin(async move {
            match queued {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => {
                    tx.send(item).await.map_err(|_| gone())?;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(gone()),
            }
            result.await.unwrap_or_else(|_| Err(gone()))
        })
    }

    fn subscribe(
        &mut self,
        requests: Vec<SubscriptionRequest>,
    ) -> BoxFuture<'static, Vec<SubscribeOutcome>> {
        let core = self.core.clone();
        let client = self.client.clone();
        let grants = self.grants.clone();
        Box::pin(async move {
            let persistent = client.state.lock().await.persistent;
            let mut outcomes = Vec::with_capacity(requests.len());
            let mut retained = Vec::new();
            for r in requests {
                // `$share/{group}/{filter}`: the ACL and the bounds judge `{filter}`.
                let shared = r.filter.starts_with("$share/");
                let filter = match shared_parts(&r.filter) {
                    Some((_, f)) => f,
                    None if shared => {
                        outcomes.push(SubscribeOutcome::Refused(Reason::TopicFilterInvalid));
                        continue;
                    }
                    None => r.filter.as_str(),
                };
                if mqtt::topic::validate_filter(filter).is_err() {
                    outcomes.push(SubscribeOutcome::Refused(Reason::TopicFilterInvalid));
                    continue;
                }
                if !grants.allows(Access::Subscribe, filter) {
                    // 0x87; the 3.1.1 encoder sends it as 0x80.
                    outcomes.push(SubscribeOutcome::Refused(Reason::NotAuthorized));
                    continue;
                }
                let limits = core.subscriptions;
                let refused = if r.filter.len() > limits.filter_length
                    || r.filter.split('/').count() > limits.filter_depth
                {
                    Some(Reason::TopicFilterInvalid)
                } else if client.subscription_count(&r.filter) >= limits.per_client {
                    Some(Reason::QuotaExceeded)
                } else {
                    None
                };
                if let Some(reason) = refused {
                    core.router
                        .counters
                        .subscriptions_refused
                        .fetch_add(1, Ordering::Relaxed);
                    outcomes.push(SubscribeOutcome::Refused(reason));
                    continue;
                }
                let opts = SubOptions {
                    qos: r.qos,
                    no_local: r.no_local,
                    retain_as_published: r.retain_as_published,
                    id: r.subscription_id,
                };
                if persistent
                    && let Err(e) = core.router.db.subscribe(&client.id, &r.filter, opts).await
                {
                    tracing::warn!(client = %client.id, error = %e, "cannot store a subscription");
                    outcomes.push(SubscribeOutcome::Refused(Reason::UnspecifiedError));
                    continue;
                }
                let existed = client.subscribe(&r.filter, opts);
                outcomes.push(SubscribeOutcome::Granted(r.qos));
                // Not on a shared subscription (3.8.4: "retained messages are not sent
                // to the Session when it establishes a new Shared Subscription").
                if !shared && (r.retain_handling == 0 || (r.retain_handling == 1 && !existed)) {
                    for (mut m, expires_ms) in core.router.retained_matching(&r.filter, now_ms()) {
                        if !grants.receives(&m.topic) {
                            continue; // an `[[acl]] deny` topic
                        }
                        m.qos = m.qos.min(r.qos);
                        m.retain = true;
                        retained.push((m, expires_ms, r.subscription_id));
                    }
                }
            }
            if !retained.is_empty() {
                // Not awaited here: the connection reads deliveries only after SUBACK.
                let c = client.clone();
                let core2 = core.clone();
                core.tracker.spawn(async move {
                    for (m, expires_ms, id) in retained {
                        // Its row's commit is not awaited: no publisher waits for it.
                        let ids = id.into_iter().collect();
                        let _ = core2.router.deliver(&c, m, expires_ms, ids, None).await;
                    }
                });
            }
            outcomes
        })
    }

    fn unsubscribe(&mut self, filters: Vec<String>) -> BoxFuture<'static, Vec<Reason>> {
        let core = self.core.clone();
        let client = self.client.clone();
        Box::pin(async move {
            let persistent = client.state.lock().await.persistent;
            let mut reasons = Vec::with_capacity(filters.len());
            for f in filters {
                if !client.unsubscribe(&f) {
                    reasons.push(Reason::NoSubscriptionExisted);
                    continue;
                }
                if persistent && let Err(e) = core.router.db.unsubscribe(&client.id, &f).await {
                    tracing::warn!(client = %client.id, error = %e, "cannot delete a subscription");
                }
                reasons.push(Reason::Success);
            }
            reasons
        })
    }

    fn acked(&mut self, tag: u64) {
        // Tag 0: a delivery without a row (QoS 0, or not a persistent session).
        if tag != 0 {
            if self.client.inflight().remove(&tag).is_some() {
                return; // a shared copy without a row
            }
            self.core.router.db.acked(tag);
            self.client.unqueued(tag);
        }
    }

    fn closed(mut self, how: Close) -> BoxFuture<'static, ()> {
        // An MQTT 5 DISCONNECT may set a new session expiry (capped as at CONNECT).
        let update = match how {
            Close::Normal {
                session_expiry: Some(e),
            } => Some(e.min(self.core.max_expiry)),
            _ => None,
        };
        // Ends the pipeline task once it has answered everything queued.
        self.pipeline = None;
        Box::pin(async move {
            let core = &self.core;
            let client = &self.client;
            let mut st = client.state.lock().await;
            if st.online.as_ref().map(|o| o.generation) != Some(self.generation) {
                return; // taken over: the new connection owns the session now
            }
            st.online = None;
            client.connected.store(false, Ordering::Relaxed);
            let expiry = update.unwrap_or(st.expiry_secs);
            if st.persistent && expiry == 0 {
                // Expiry 0 (the CONNECT's, or set by DISCONNECT): the session ends now.
                st.persistent = false;
                client.resync(0, 0);
                if let Err(e) = core.router.db.delete_session(&client.id).await {
                    tracing::warn!(client = %client.id, error = %e, "cannot delete the session");
                }
            }
            if !st.persistent {
                client.clear_subscriptions();
                core.router.remove(client);
                let unacked: Vec<SharedCopy> = client.inflight().drain().map(|(_, c)| c).collect();
                drop(st);
                // Its unacknowledged shared copies go to other members (4.8.2).
                for copy in unacked {
                    core.reshare(copy, &client.id).await;
                }
                return;
            }
            let now = now_ms();
            st.expiry_secs = expiry;
            st.expires_at_ms = Some(now.saturating_add(i64::from(expiry).saturating_mul(1000)));
            if update.is_some()
                && let Err(e) = core.router.db.save_session(&client.id, expiry).await
            {
                tracing::warn!(client = %client.id, error = %e, "cannot update the session expiry");
            }
            if let Err(e) = core.router.db.disconnected(&client.id, now).await {
                tracing::warn!(client = %client.id, error = %e, "cannot record the disconnect");
            }
        })
    }
}
