//! Order per topic for one connection's pipelined stores.
//!
//! A connection may have `limits.publish_pipeline` stores to RocketMQ in flight. Stores
//! to different MQTT topics run concurrently; stores to the same topic run one after
//! another, in publish order. Two concurrent sends to one broker may be appended in
//! either order (a 5.x broker has min(cores, 4) send threads by default), and an LMQ's
//! offsets are assigned at append time, so this is what keeps a topic's LMQ in the
//! order its publisher sent.
//!
//! When a store fails (RocketMQ did not take the message), the stores already queued
//! behind it on the same topic are refused without being sent: a client that resends
//! from the failed one then keeps the order. A message refused for what it is (topic,
//! authorization, size) is not resent, so it does not hold the others back.
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

type Done = Shared<oneshot::Receiver<bool>>;

/// The stores in flight on one connection, by topic.
#[derive(Debug, Default)]
pub struct TopicOrder {
    inner: Arc<Mutex<Tails>>,
}

#[derive(Debug, Default)]
struct Tails {
    next_id: u64,
    /// The last store queued per topic: its id and its end.
    by_topic: HashMap<String, (u64, Done)>,
}

impl TopicOrder {
    /// Queues a store to `topic` behind the ones already in flight to it. Call in publish
    /// order; the returned turn says when the store may start.
    pub fn turn(&self, topic: &str) -> Turn {
        let (tx, rx) = oneshot::channel();
        let mut tails = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        tails.next_id = tails.next_id.wrapping_add(1);
        let id = tails.next_id;
        let previous = match tails.by_topic.get_mut(topic) {
            Some(tail) => Some(std::mem::replace(tail, (id, rx.shared())).1),
            None => {
                tails.by_topic.insert(topic.to_owned(), (id, rx.shared()));
                None
            }
        };
        Turn {
            tails: self.inner.clone(),
            topic: topic.to_owned(),
            id,
            previous,
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

/// One store's place in its topic's queue. Dropping it (passed or not, or cancelled)
/// lets the next store to the topic go on, or refuses it.
#[derive(Debug)]
pub struct Turn {
    tails: Arc<Mutex<Tails>>,
    topic: String,
    id: u64,
    previous: Option<Done>,
    done: Option<oneshot::Sender<bool>>,
    passed: bool,
}

impl Turn {
    /// Waits for the previous store to this topic to end; `false` when it did not pass
    /// (then this one must not be sent either).
    pub async fn ready(&mut self) -> bool {
        match self.previous.take() {
            None => true,
            // A dropped sender cannot happen (Drop sends); count it as not stored.
            Some(previous) => previous.await.unwrap_or(false),
        }
    }

    /// Ends this store with its outcome. The stores queued behind it go on unless
    /// RocketMQ did not take the message (`ImplementationSpecificError`: its client
    /// resends it). A message refused for what it is (topic, authorization, size) is not
    /// resent, so it cannot come back out of order.
    pub fn finish(mut self, outcome: &Result<Reason, Refusal>) {
        self.passed = !matches!(outcome, Err(r) if r.reason == Reason::ImplementationSpecificError);
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
        first.finish(&Ok(Reason::Success));
        assert!(waiting.await.unwrap());
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
        first.finish(&Err(too_big));
        assert!(
            second.ready().await,
            "the next publish to the topic goes on"
        );
        let third = order.turn("t");
        let mut fourth = order.turn("t");
        second.finish(&Ok(Reason::Success));
        let not_stored = Refusal::new(Reason::ImplementationSpecificError, "broker down");
        third.finish(&Err(not_stored));
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
