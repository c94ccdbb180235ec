//! Order per topic for one connection's pipelined stores.
//!
//! A connection may have `limits.publish_pipeline` stores to RocketMQ in flight. Stores
//! to different MQTT topics run concurrently. Stores to one topic go out in publish order,
//! each one once the previous one was either queued on a broker connection that keeps
//! arrival order (a broker with one send thread: `Producer::send_queued`), or answered.
//! When the route changed between the two and the next one goes to another broker than
//! the one the previous one was queued on, it waits for the previous one's answer: two
//! broker connections keep no order between them.
//! Two concurrent sends to a broker with several send threads may be appended in either
//! order (a 5.x broker has min(cores, 4) by default), and an LMQ's offsets are assigned
//! at append time, so this is what keeps a topic's LMQ in the order its publisher sent.
//!
//! When a store fails (RocketMQ did not take the message), the stores queued behind it
//! on the same topic fail too: those not sent yet are refused without being sent, and
//! those already sent behind it are reported as failed even when the broker stored them.
//! A client that resends from the failed one then keeps the order; a subscriber can see
//! the ones stored behind it twice, the second time in order. A message refused for what
//! it is (topic, authorization, size) is not resent, so it does not hold the others back.
//!
//! Written by hand: it is a keyed chain of oneshot channels, a few lines that no crate
//! offers (tokio's fair `Mutex` queues waiters in the order they are first polled, not
//! in the order the stores were created).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::Shared;
use mqtt::broker::Refusal;
use mqtt::packet::Reason;
use tokio::sync::oneshot;

use crate::rocketmq::OnQueued;

type Done = Shared<oneshot::Receiver<bool>>;
/// Completes with the address of the broker the store was queued on.
type Queued = Shared<oneshot::Receiver<Arc<str>>>;

/// What a store waits for from the one before it.
#[derive(Debug, Clone)]
struct Previous {
    queued: Queued,
    done: Done,
}

/// The stores in flight on one connection, by topic.
#[derive(Debug, Default)]
pub struct TopicOrder {
    inner: Arc<Mutex<Tails>>,
}

#[derive(Debug, Default)]
struct Tails {
    next_id: u64,
    /// The last store queued per topic: its id and its signals.
    by_topic: HashMap<String, (u64, Previous)>,
}

impl TopicOrder {
    /// Queues a store to `topic` behind the ones already in flight to it. Call in publish
    /// order; the returned turn says when the store may start.
    pub fn turn(&self, topic: &str) -> Turn {
        let (tx, rx) = oneshot::channel();
        let (queued_tx, queued_rx) = oneshot::channel();
        let mine = Previous {
            queued: queued_rx.shared(),
            done: rx.shared(),
        };
        let mut tails = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        tails.next_id = tails.next_id.wrapping_add(1);
        let id = tails.next_id;
        let previous = match tails.by_topic.get_mut(topic) {
            Some(tail) => Some(std::mem::replace(tail, (id, mine)).1),
            None => {
                tails.by_topic.insert(topic.to_owned(), (id, mine));
                None
            }
        };
        Turn {
            tails: self.inner.clone(),
            topic: topic.to_owned(),
            id,
            previous,
            queued_on: None,
            queued: Some(queued_tx),
            done: Some(tx),
            passed: false,
        }
    }

    /// Topics with stores in flight (the map holds no others).
    #[cfg(test)]
    fn topics_in_flight(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_topic
            .len()
    }
}

/// One store's place in its topic's queue. Dropping it (finished or not, or cancelled)
/// lets the next store to the topic go on, or refuses it.
#[derive(Debug)]
pub struct Turn {
    tails: Arc<Mutex<Tails>>,
    topic: String,
    id: u64,
    previous: Option<Previous>,
    /// The broker the previous store was queued on, once [`Turn::ready`] saw it.
    queued_on: Option<Arc<str>>,
    queued: Option<oneshot::Sender<Arc<str>>>,
    done: Option<oneshot::Sender<bool>>,
    passed: bool,
}

impl Turn {
    /// Waits until this store may be sent: the previous store to this topic was queued
    /// on an order-keeping broker connection, or ended. `false` when it ended without
    /// passing (then this one must not be sent either).
    pub async fn ready(&mut self) -> bool {
        let Some(previous) = &self.previous else {
            return true;
        };
        if let Ok(broker) = previous.queued.clone().await {
            // Sent ahead of this one: `finish` waits for its outcome.
            self.queued_on = Some(broker);
            return true;
        }
        // Ended without being queued in order: its outcome decides. A dropped sender
        // cannot happen (Drop sends); count it as not stored.
        let passed = previous.done.clone().await.unwrap_or(false);
        self.previous = None;
        passed
    }

    /// The notifier to hand to `Producer::send_queued`: it lets the next store to this
    /// topic go as soon as this one is queued in order, and holds this one back until
    /// the previous one was answered if this one goes to another broker than the one the
    /// previous one was queued on (the route changed between them).
    pub fn on_queued(&mut self) -> OnQueued {
        let notifier = self.queued.take().map(OnQueued::new).unwrap_or_default();
        match (&self.queued_on, &self.previous) {
            (Some(broker), Some(previous)) => {
                let done = previous.done.clone();
                notifier.after(
                    broker.clone(),
                    Box::pin(async move {
                        let _ = done.await;
                    }),
                )
            }
            _ => notifier,
        }
    }

    /// Ends this store with its outcome, which stands only if the store sent before it
    /// passed too (waited for here). The stores queued behind it go on unless RocketMQ
    /// did not take the message (`ImplementationSpecificError`: its client resends it).
    /// A message refused for what it is (topic, authorization, size) is not resent, so it
    /// cannot come back out of order.
    pub async fn finish(mut self, outcome: Result<Reason, Refusal>) -> Result<Reason, Refusal> {
        let before_passed = match self.previous.take() {
            None => true,
            Some(previous) => previous.done.await.unwrap_or(false),
        };
        let outcome = match outcome {
            Ok(_) if !before_passed => Err(Refusal::new(
                Reason::ImplementationSpecificError,
                "stored, but an earlier publish to this topic on this connection was not: resend from that one",
            )),
            other => other,
        };
        self.passed =
            !matches!(&outcome, Err(r) if r.reason == Reason::ImplementationSpecificError);
        outcome
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            // The next store may be gone already (its connection closed): nothing to tell.
            let _ = done.send(self.passed);
        }
        let mut tails = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
        if tails
            .by_topic
            .get(&self.topic)
            .is_some_and(|(id, _)| *id == self.id)
        {
            tails.by_topic.remove(&self.topic);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn same_topic_waits_for_the_previous_store() {
        let order = TopicOrder::default();
        let mut first = order.turn("a/b");
        let mut second = order.turn("a/b");
        assert!(first.ready().await);
        let waiting = tokio::spawn(async move { second.ready().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "second store started before the first ended"
        );
        first.finish(Ok(Reason::Success)).await.unwrap();
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_store_queued_in_order_lets_the_next_one_go_before_its_answer() {
        let order = TopicOrder::default();
        let mut first = order.turn("t");
        let mut second = order.turn("t");
        assert!(first.ready().await);
        first.on_queued().fire("broker-a:10911");
        let ready = tokio::time::timeout(Duration::from_secs(1), second.ready()).await;
        assert_eq!(
            ready.ok(),
            Some(true),
            "second goes while first awaits its answer"
        );
        // The second's answer waits for the first's.
        let second = tokio::spawn(second.finish(Ok(Reason::Success)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !second.is_finished(),
            "answered before the store sent ahead of it"
        );
        first.finish(Ok(Reason::Success)).await.unwrap();
        assert_eq!(second.await.unwrap().unwrap(), Reason::Success);
    }

    #[tokio::test]
    async fn a_store_for_another_broker_waits_for_the_answer_of_the_one_before() {
        let order = TopicOrder::default();
        let mut first = order.turn("t");
        let mut second = order.turn("t");
        let mut third = order.turn("t");
        assert!(first.ready().await);
        first.on_queued().fire("broker-a:10911");
        assert!(second.ready().await);
        // Same broker as the one before: no wait (one connection keeps the order).
        let mut same = second.on_queued();
        tokio::time::timeout(
            Duration::from_secs(1),
            same.wait_unless_on("broker-a:10911"),
        )
        .await
        .expect("no wait on the same broker");
        same.fire("broker-a:10911");
        assert!(third.ready().await);
        // The route changed: the third goes to broker-b while the second is unanswered.
        let mut other = third.on_queued();
        let waiting = tokio::spawn(async move { other.wait_unless_on("broker-b:10911").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "sent to another broker before the one ahead of it was answered"
        );
        first.finish(Ok(Reason::Success)).await.unwrap();
        second.finish(Ok(Reason::Success)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("goes once the one before was answered")
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_store_fails_the_ones_sent_behind_it() {
        let order = TopicOrder::default();
        let mut first = order.turn("t");
        let mut second = order.turn("t");
        let mut third = order.turn("t");
        assert!(first.ready().await);
        first.on_queued().fire("broker-a:10911");
        assert!(second.ready().await);
        // The third waits for the second, which is never queued in order.
        let not_stored = Refusal::new(Reason::ImplementationSpecificError, "broker busy");
        assert!(first.finish(Err(not_stored)).await.is_err());
        let second = second.finish(Ok(Reason::Success)).await;
        assert_eq!(
            second.unwrap_err().reason,
            Reason::ImplementationSpecificError,
            "stored behind a failed one: reported failed, so the client resends both in order"
        );
        assert!(!third.ready().await, "not sent at all");
    }

    #[tokio::test]
    async fn other_topics_do_not_wait() {
        let order = TopicOrder::default();
        let _first = order.turn("a/b");
        let mut other = order.turn("a/c");
        let ready = tokio::time::timeout(Duration::from_secs(1), other.ready()).await;
        assert_eq!(ready.ok(), Some(true));
        assert_eq!(order.topics_in_flight(), 2);
    }

    #[tokio::test]
    async fn a_failed_store_refuses_the_ones_queued_behind_it() {
        let order = TopicOrder::default();
        let mut first = order.turn("t");
        let mut second = order.turn("t");
        let mut third = order.turn("t");
        assert!(first.ready().await);
        drop(first); // not passed
        assert!(!second.ready().await);
        drop(second); // refused, so not passed either
        assert!(!third.ready().await);
        drop(third);
        // The chain is empty again: a new store starts at once.
        assert_eq!(order.topics_in_flight(), 0);
        assert!(order.turn("t").ready().await);
    }

    #[tokio::test]
    async fn a_message_refused_for_what_it_is_does_not_hold_the_next_back() {
        let order = TopicOrder::default();
        let first = order.turn("t");
        let mut second = order.turn("t");
        let too_big = Refusal::new(Reason::QuotaExceeded, "retained message too large");
        assert!(first.finish(Err(too_big)).await.is_err());
        assert!(
            second.ready().await,
            "the next publish to the topic goes on"
        );
        let third = order.turn("t");
        let mut fourth = order.turn("t");
        second.finish(Ok(Reason::Success)).await.unwrap();
        let not_stored = Refusal::new(Reason::ImplementationSpecificError, "broker down");
        assert!(third.finish(Err(not_stored)).await.is_err());
        assert!(
            !fourth.ready().await,
            "a failed write holds the topic's queue back"
        );
    }

    #[tokio::test]
    async fn map_holds_only_topics_in_flight() {
        let order = TopicOrder::default();
        let first = order.turn("t");
        let mut second = order.turn("t");
        drop(first);
        assert_eq!(
            order.topics_in_flight(),
            1,
            "the second store is still queued"
        );
        assert!(!second.ready().await);
        drop(second);
        assert_eq!(order.topics_in_flight(), 0);
    }
}
