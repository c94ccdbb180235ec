//! One connection's view of the local broker: its ordered publish pipeline, its
//! subscriptions, acknowledgements, and what happens when it ends.
//!
//! # The publish pipeline
//! `publish` is called by the connection in packet order; it queues the message to the
//! session's pipeline task at once (a channel with room for more than the connection's
//! `publish_pipeline`, so the queueing itself never waits or reorders). The task submits
//! uplink messages to the journal in that order, keeps the commits in flight in a
//! `FuturesOrdered`, and once each commit is known (in order) retains and delivers the
//! message, then answers the publish's future. The task ends when the session is closed
//! and everything queued is answered.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use mqtt::broker::{Close, Refusal, Session};
use mqtt::packet::{Message, Reason, SubscribeOutcome, SubscriptionRequest};
use tokio::sync::{mpsc, oneshot};

use super::router::Client;
use super::store::SubOptions;
use super::{Core, now_ms, refusal};

type Answer = oneshot::Sender<Result<Reason, Refusal>>;

/// One connected client's session on the local broker.
#[derive(Debug)]
pub struct LocalSession {
    core: Arc<Core>,
    client: Arc<Client>,
    generation: u64,
    pipeline: Option<mpsc::Sender<(Message, Answer)>>,
}

fn gone() -> Refusal {
    Refusal::new(Reason::ServerUnavailable, "the broker is shutting down")
}

impl LocalSession {
    pub(crate) fn start(core: Arc<Core>, client: Arc<Client>, generation: u64) -> Self {
        // +2: the connection keeps at most `pipeline` stores in flight, plus its will.
        let (tx, rx) = mpsc::channel(core.pipeline + 2);
        core.tracker
            .spawn(run_pipeline(core.clone(), client.id.clone(), rx));
        Self {
            core,
            client,
            generation,
            pipeline: Some(tx),
        }
    }
}

type Committed = BoxFuture<'static, (Message, Answer, Result<bool, Refusal>)>;

async fn run_pipeline(
    core: Arc<Core>,
    publisher: Arc<str>,
    mut rx: mpsc::Receiver<(Message, Answer)>,
) {
    let mut commits: FuturesOrdered<Committed> = FuturesOrdered::new();
    let mut open = true;
    while open || !commits.is_empty() {
        tokio::select! {
            biased;
            Some((message, answer, committed)) = commits.next(), if !commits.is_empty() => {
                let result = match committed {
                    Ok(uplinked) => core.route(&publisher, message, uplinked).await,
                    Err(r) => Err(r),
                };
                let _ = answer.send(result);
            }
            item = rx.recv(), if open => {
                let Some((message, answer)) = item else {
                    open = false;
                    continue;
                };
                if !core.is_uplink(&message.topic) {
                    commits.push_back(Box::pin(async move { (message, answer, Ok(false)) }));
                    continue;
                }
                match core.journal.submit(Core::journal_entry(&message)).await {
                    Ok(pending) => commits.push_back(Box::pin(async move {
                        let r = pending.committed().await.map(|_| true).map_err(|e| refusal(&e));
                        (message, answer, r)
                    })),
                    Err(e) => {
                        let _ = answer.send(Err(refusal(&e)));
                    }
                }
            }
        }
    }
}

impl Session for LocalSession {
    fn publish(&self, message: Message) -> BoxFuture<'static, Result<Reason, Refusal>> {
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
        Box::pin(async move {
            let persistent = client.state.lock().await.persistent;
            let mut outcomes = Vec::with_capacity(requests.len());
            let mut retained = Vec::new();
            for r in requests {
                if r.filter.starts_with("$share/") {
                    outcomes.push(SubscribeOutcome::Refused(
                        Reason::SharedSubscriptionsNotSupported,
                    ));
                    continue;
                }
                if mqtt::topic::validate_filter(&r.filter).is_err() {
                    outcomes.push(SubscribeOutcome::Refused(Reason::TopicFilterInvalid));
                    continue;
                }
                let opts = SubOptions {
                    qos: r.qos,
                    no_local: r.no_local,
                    retain_as_published: r.retain_as_published,
                };
                if persistent
                    && let Err(e) = core
                        .router
                        .store
                        .subscribe(&client.id, &r.filter, opts)
                        .await
                {
                    tracing::warn!(client = %client.id, error = %e, "cannot store a subscription");
                    outcomes.push(SubscribeOutcome::Refused(Reason::UnspecifiedError));
                    continue;
                }
                let existed = client.subscribe(&r.filter, opts);
                outcomes.push(SubscribeOutcome::Granted(r.qos));
                if r.retain_handling == 0 || (r.retain_handling == 1 && !existed) {
                    for mut m in core.router.retained_matching(&r.filter) {
                        m.qos = m.qos.min(r.qos);
                        m.retain = true;
                        retained.push(m);
                    }
                }
            }
            if !retained.is_empty() {
                // Not awaited here: the connection reads deliveries only after SUBACK.
                let c = client.clone();
                let core2 = core.clone();
                core.tracker.spawn(async move {
                    for m in retained {
                        core2.router.deliver(&c, m).await;
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
                if persistent && let Err(e) = core.router.store.unsubscribe(&client.id, &f).await {
                    tracing::warn!(client = %client.id, error = %e, "cannot delete a subscription");
                }
                reasons.push(Reason::Success);
            }
            reasons
        })
    }

    fn acked(&mut self, tag: u64) {
        self.client.acked(tag);
    }

    fn closed(mut self, _how: Close) -> BoxFuture<'static, ()> {
        // Ends the pipeline task once it has answered everything queued.
        self.pipeline = None;
        Box::pin(async move {
            let core = &self.core;
            let client = &self.client;
            let mut st = client.state.lock().await;
            if st.online.as_ref().map(|(g, _)| *g) != Some(self.generation) {
                return; // taken over: the new connection owns the session now
            }
            st.online = None;
            if !st.persistent {
                client.clear_subscriptions();
                core.router.remove(client);
                return;
            }
            let pending: Vec<Message> =
                client.take_inflight().into_iter().map(|(_, m)| m).collect();
            let n = pending.len();
            if n > 0 {
                match core.router.store.enqueue(&client.id, pending).await {
                    Ok(()) => st.queued += n,
                    Err(e) => {
                        tracing::warn!(client = %client.id, error = %e, "unacknowledged messages lost")
                    }
                }
            }
            if let Err(e) = core.router.store.disconnected(&client.id, now_ms()).await {
                tracing::warn!(client = %client.id, error = %e, "cannot record the disconnect");
            }
        })
    }
}
